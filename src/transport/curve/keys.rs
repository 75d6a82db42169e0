//! CURVE keys: long-term X25519 key pairs in ZeroMQ's Z85 text form
//! (40 characters for 32 bytes, as `zmq_curve_keypair` prints them).
//!
//! # Guarantees
//! - Keys are generated from the operating system's randomness
//!   (`getrandom` through `crypto_box`); nothing here is a primitive of its
//!   own.
//! - A secret key never appears in `Debug` output or logs.
//! - A secret key file is written with mode `0600`, and one that others
//!   can read is refused on load (on unix), as is one its group can read
//!   unless root owns it (a Kubernetes Secret volume with an `fsGroup`:
//!   `root:fsGroup`, `0440`).
//!
//! # Not guaranteed
//! Secret bytes are zeroed on drop by `crypto_box`, but copies the
//! operating system or the allocator made (a file read buffer) are not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crypto_box::aead::OsRng;

/// Length of a key in bytes.
pub(crate) const KEY_BYTES: usize = 32;
/// Length of a key in Z85 text.
pub(crate) const KEY_Z85_CHARS: usize = 40;

/// Why a key (or a key file) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not 40 characters of Z85.
    #[error("not a Z85 CURVE key (want {KEY_Z85_CHARS} characters of Z85): {0}")]
    BadZ85(String),
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file holds no key line (or not exactly one where one is needed).
    #[error("key file {path}: {why}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its contents).
        why: String,
    },
    /// A secret key file that group or others may read.
    #[error("secret key file {path} has mode {mode:o}: readable by others; chmod 600 it (a file root owns may also be 0440/0640: read by its group)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

fn decode_z85(text: &str) -> Result<[u8; KEY_BYTES], KeyError> {
    let t = text.trim();
    if t.len() != KEY_Z85_CHARS {
        return Err(KeyError::BadZ85(format!("{} characters", t.len())));
    }
    let bytes = z85::decode(t).map_err(|e| KeyError::BadZ85(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| KeyError::BadZ85("wrong decoded length".into()))
}

/// A CURVE public key (a server's `S` or a client's `C`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CurvePublicKey([u8; KEY_BYTES]);

impl CurvePublicKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        CurvePublicKey(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// The key as 40 characters of Z85.
    pub fn to_z85(&self) -> String {
        z85::encode(self.0)
    }

    /// Reads a public key file: one Z85 line (`#` comments and blank
    /// lines ignored).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let keys = read_key_lines(path)?;
        match keys.as_slice() {
            [k] => Ok(*k),
            _ => Err(KeyError::BadFile {
                path: path.to_path_buf(),
                why: format!("want exactly one key line, found {}", keys.len()),
            }),
        }
    }

    pub(crate) fn crypto(&self) -> crypto_box::PublicKey {
        crypto_box::PublicKey::from(self.0)
    }
}

impl FromStr for CurvePublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_z85(s).map(CurvePublicKey)
    }
}

impl fmt::Display for CurvePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for CurvePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurvePublicKey({})", self.to_z85())
    }
}

/// A CURVE secret key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct CurveSecretKey(crypto_box::SecretKey);

impl CurveSecretKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        CurveSecretKey(crypto_box::SecretKey::from(bytes))
    }

    /// The 32 raw bytes (handle with care).
    pub fn to_bytes(&self) -> [u8; KEY_BYTES] {
        self.0.to_bytes()
    }

    /// The key as 40 characters of Z85 (handle with care).
    pub fn to_z85(&self) -> String {
        z85::encode(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> CurvePublicKey {
        CurvePublicKey(*self.0.public_key().as_bytes())
    }

    pub(crate) fn crypto(&self) -> &crypto_box::SecretKey {
        &self.0
    }
}

impl FromStr for CurveSecretKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_z85(s).map(CurveSecretKey::from_bytes)
    }
}

impl fmt::Debug for CurveSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurveSecretKey(..)")
    }
}

/// A long-term CURVE key pair: what a socket proves it is.
#[derive(Clone)]
pub struct CurveKeyPair {
    public: CurvePublicKey,
    secret: CurveSecretKey,
}

impl CurveKeyPair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Self {
        Self::from_secret(CurveSecretKey(crypto_box::SecretKey::generate(&mut OsRng)))
    }

    /// The pair of a secret key (the public key is derived).
    pub fn from_secret(secret: CurveSecretKey) -> Self {
        CurveKeyPair {
            public: secret.public_key(),
            secret,
        }
    }

    /// The public half.
    pub fn public(&self) -> &CurvePublicKey {
        &self.public
    }

    /// The secret half.
    pub fn secret(&self) -> &CurveSecretKey {
        &self.secret
    }

    /// Loads a secret key file (one Z85 line; `#` comments allowed) and
    /// derives the public key. On unix the file must not be readable by
    /// others, nor by its group unless root owns it
    /// ([`KeyError::Permissions`]).
    pub fn from_secret_file(path: &Path) -> Result<Self, KeyError> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let lines: Vec<&str> = key_lines(&text).collect();
        match lines.as_slice() {
            [line] => Ok(Self::from_secret(line.parse().map_err(|_| {
                KeyError::BadFile {
                    path: path.to_path_buf(),
                    why: "the key line is not 40 characters of Z85".into(),
                }
            })?)),
            _ => Err(KeyError::BadFile {
                path: path.to_path_buf(),
                why: format!("want exactly one key line, found {}", lines.len()),
            }),
        }
    }

    /// Writes the secret key to `path` (mode `0600`, created or replaced)
    /// and the public key to `path` + `.pub`, each one Z85 line. Returns
    /// the public key file's path.
    pub fn write_files(&self, path: &Path) -> Result<PathBuf, KeyError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| KeyError::Io { path: p, source }
        };
        write_private(path, format!("{}\n", self.secret.to_z85()).as_bytes()).map_err(io(path))?;
        let mut public = path.as_os_str().to_owned();
        public.push(".pub");
        let public = PathBuf::from(public);
        std::fs::write(&public, format!("{}\n", self.public.to_z85())).map_err(io(&public))?;
        Ok(public)
    }
}

impl fmt::Debug for CurveKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The key lines of a key file: the first word of each line, skipping
/// blank lines and comments. Z85 has `#` in its alphabet, so a line is a
/// comment when its first word starts with `#` and is not a 40-character
/// key; anything after a key's first word is ignored (a trailing comment).
pub(crate) fn key_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|l| {
        let word = l.split_whitespace().next()?;
        let is_key = word.len() == KEY_Z85_CHARS && z85::decode(word).is_ok();
        (is_key || !word.starts_with('#')).then_some(word)
    })
}

/// Reads a file of public keys, one Z85 key per line, `#` comments.
pub(crate) fn read_key_lines(path: &Path) -> Result<Vec<CurvePublicKey>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_key_lines(path, &text)
}

/// Parses a file of public keys; a bad line names its number, never its text.
pub(crate) fn parse_key_lines(path: &Path, text: &str) -> Result<Vec<CurvePublicKey>, KeyError> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for word in key_lines(line) {
            keys.push(word.parse().map_err(|_| KeyError::BadFile {
                path: path.to_path_buf(),
                why: format!("line {} is not a 40-character Z85 key", n + 1),
            })?);
        }
    }
    Ok(keys)
}

/// A secret key file is private when only its owner may read it, or when
/// root owns it and lets its group read it, no more (`root:G`, `0440` or
/// `0640`): what a Kubernetes Secret volume gives a pod with an `fsGroup`,
/// the only way a non-root pod reads a Secret file not open to all.
/// Only root can make a file root's, so that group is root's choice.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    let owner_only = mode & 0o077 == 0;
    let root_and_group_read = meta.uid() == 0 && mode & 0o037 == 0;
    if !owner_only && !root_and_group_read {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let mut f = opts.open(path)?;
        // An existing file keeps its old mode on open: set it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut f = opts.open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_libzmq_test_vectors() {
        // zmq_curve(7)'s test key pairs, in hex and in Z85.
        let secret_hex = "8E0BDD697628B91D8F245587EE95C5B04D48963F79259877B49CD9063AEAD3B7";
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&secret_hex[2 * i..2 * i + 2], 16).unwrap();
        }
        let secret = CurveSecretKey::from_bytes(bytes);
        assert_eq!(secret.to_z85(), "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6");
        let pair =
            CurveKeyPair::from_secret("JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6".parse().unwrap());
        assert_eq!(
            pair.public().to_z85(),
            "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
        );
        let client: CurveSecretKey = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs".parse().unwrap();
        assert_eq!(
            client.public_key().to_z85(),
            "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
        );
        let k = *pair.public();
        assert_eq!(k.to_z85().parse::<CurvePublicKey>().unwrap(), k);
        assert!("short".parse::<CurvePublicKey>().is_err());
        assert!("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\u{7f}"
            .parse::<CurvePublicKey>()
            .is_err());
    }

    #[test]
    fn a_generated_pair_is_written_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let kp = CurveKeyPair::generate();
        let public = kp.write_files(&path).unwrap();
        let back = CurveKeyPair::from_secret_file(&path).unwrap();
        assert_eq!(back.public(), kp.public());
        assert_eq!(CurvePublicKey::from_file(&public).unwrap(), *kp.public());
        assert!(!format!("{kp:?}").contains(&kp.secret().to_z85()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                CurveKeyPair::from_secret_file(&path),
                Err(KeyError::Permissions { .. })
            ));
        }
    }

    #[cfg(unix)]
    #[test]
    fn group_read_is_private_only_for_a_file_root_owns() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        CurveKeyPair::generate().write_files(&path).unwrap();
        let root = std::fs::metadata(&path).unwrap().uid() == 0;
        let loads = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match CurveKeyPair::from_secret_file(&path) {
                Ok(_) => true,
                Err(KeyError::Permissions { .. }) => false,
                Err(e) => panic!("{e}"),
            }
        };
        assert!(loads(0o400) && loads(0o600));
        // The kubelet's root:fsGroup 0440: private when root owns it.
        assert_eq!(loads(0o440), root);
        assert_eq!(loads(0o640), root);
        for open in [0o444, 0o604, 0o460, 0o450, 0o644] {
            assert!(!loads(open), "{open:o} loaded");
        }
    }

    #[test]
    fn key_lists_skip_comments_and_name_the_bad_line() {
        let a = CurveKeyPair::generate();
        let text = format!("# clients\n{}  # a\n\n   #indented comment\n", a.public());
        let keys = parse_key_lines(Path::new("x"), &text).unwrap();
        assert_eq!(keys, vec![*a.public()]);
        let err = parse_key_lines(Path::new("x"), "# ok\nnot-a-key\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}

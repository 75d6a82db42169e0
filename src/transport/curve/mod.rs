//! CurveZMQ (RFC 26 over ZMTP 3.1), as libzmq 4.3 speaks it: keys, the
//! handshake state machines, the MESSAGE codec, and who may connect.
//!
//! The guard relay runs it: on ipc/tcp, a socket whose [`SocketConfig`]
//! carries a [`CurveConfig`] speaks CURVE to the network, and NULL to its
//! private `zeromq` socket, which never sees a key or a box.
//!
//! Layout: [`keys`] (key pairs, Z85, key files), `handshake` (client and
//! server state machines, [`CurveError`]), `codec` (MESSAGE boxes and the
//! stream transforms the relay runs), [`auth`] ([`Authorizer`],
//! [`AllowList`], re-read key files). All of it is plain code without I/O;
//! the relay (`transport::guard`) does the reading and writing.
//!
//! # Guarantees
//! - Every primitive is RustCrypto's: `crypto_box`'s `SalsaBox` (X25519 +
//!   XSalsa20-Poly1305, precomputed per session) and `crypto_secretbox`
//!   for the cookie. Z85 is the `z85` crate.
//! - Confidentiality, integrity and mutual authentication per connection;
//!   replayed or reordered boxes are refused.
//! - Server key rotation: a client accepts any of a set of server keys
//!   (tried in order), and every key file is re-read when it changes.
//!
//! # Not guaranteed
//! Inproc is never encrypted (it never leaves the process). Traffic
//! analysis (sizes, timing) is not hidden. An authorized peer can still
//! flood a socket.
//!
//! [`SocketConfig`]: crate::SocketConfig

pub(crate) mod auth;
mod codec;
mod handshake;
pub(crate) mod keys;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use auth::{AllowAnyClient, AllowList, AuthRequest, Authorizer};
pub(crate) use codec::{OpenStream, SealStream, MESSAGE_OVERHEAD};
pub(crate) use handshake::{
    client_hello, error_command, CurveError, Initiated, ServerHello, Session,
};
pub use keys::{CurveKeyPair, CurvePublicKey, CurveSecretKey, KeyError};

use auth::WatchedFile;

/// CURVE settings of one socket: our key pair, the server keys we accept
/// when we connect, and who may connect when we bind.
///
/// Key files given by path are re-read when they change (checked at every
/// new handshake), so keys rotate without a restart.
///
/// ```no_run
/// # fn main() -> Result<(), zfabric::KeyError> {
/// use zfabric::{CurveConfig, SocketConfig};
/// use std::path::Path;
/// // A server: its key pair, and the clients it lets in.
/// let server = CurveConfig::from_files(
///     Path::new("/etc/zfabric/server.key"),
///     None,
///     Some(Path::new("/etc/zfabric/authorized")),
/// )?;
/// // A client: its key pair and the server's public key (or a file of keys).
/// let client = CurveConfig::from_files(
///     Path::new("/etc/zfabric/client.key"),
///     Some("/etc/zfabric/server.key.pub"),
///     None,
/// )?;
/// let cfg = SocketConfig::default().curve(client);
/// # let _ = (server, cfg); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CurveConfig {
    keys: KeySource,
    server_keys: Vec<ServerKeySource>,
    authorizer: Option<Arc<dyn Authorizer>>,
}

#[derive(Debug, Clone)]
enum KeySource {
    Fixed(CurveKeyPair),
    File(Arc<WatchedFile<CurveKeyPair>>),
}

#[derive(Debug, Clone)]
enum ServerKeySource {
    Fixed(CurvePublicKey),
    File(Arc<WatchedFile<Vec<CurvePublicKey>>>),
}

impl CurveConfig {
    /// CURVE with this key pair. A socket that binds also needs an
    /// [`authorizer`](Self::authorizer) (without one every client is
    /// refused); one that connects needs a [`server_key`](Self::server_key).
    pub fn new(keys: CurveKeyPair) -> Self {
        CurveConfig {
            keys: KeySource::Fixed(keys),
            server_keys: Vec::new(),
            authorizer: None,
        }
    }

    /// CURVE with the key pair whose secret key is in `path` (one Z85
    /// line, mode `0600`), re-read when the file changes.
    pub fn from_secret_file(path: impl Into<PathBuf>) -> Result<Self, KeyError> {
        let w = WatchedFile::new(path.into(), CurveKeyPair::from_secret_file)?;
        Ok(CurveConfig {
            keys: KeySource::File(Arc::new(w)),
            server_keys: Vec::new(),
            authorizer: None,
        })
    }

    /// The three settings as the CLI and node config name them: our secret
    /// key file, the server's public key (Z85 text, or a file of keys) for
    /// connecting, and the allow-list file for binding.
    pub fn from_files(
        secret: &Path,
        server: Option<&str>,
        authorized: Option<&Path>,
    ) -> Result<Self, KeyError> {
        let mut cfg = Self::from_secret_file(secret)?;
        if let Some(s) = server {
            cfg = cfg.server_key_or_file(s)?;
        }
        if let Some(a) = authorized {
            cfg = cfg.authorizer(AllowList::from_file(a)?);
        }
        Ok(cfg)
    }

    /// Adds a server public key accepted on connect. With several (during
    /// a rotation: the old and the new), each is tried in order on every
    /// connection attempt until one completes the handshake.
    pub fn server_key(mut self, key: CurvePublicKey) -> Self {
        self.server_keys.push(ServerKeySource::Fixed(key));
        self
    }

    /// Adds the server public keys in `path` (one Z85 key per line, `#`
    /// comments), re-read when the file changes.
    pub fn server_keys_file(mut self, path: impl Into<PathBuf>) -> Result<Self, KeyError> {
        let w = WatchedFile::new(path.into(), keys::read_key_lines)?;
        self.server_keys.push(ServerKeySource::File(Arc::new(w)));
        Ok(self)
    }

    /// [`server_key`](Self::server_key) if `key_or_file` is 40 characters
    /// of Z85, else [`server_keys_file`](Self::server_keys_file).
    pub fn server_key_or_file(self, key_or_file: &str) -> Result<Self, KeyError> {
        match key_or_file.parse::<CurvePublicKey>() {
            Ok(k) => Ok(self.server_key(k)),
            Err(_) => self.server_keys_file(key_or_file),
        }
    }

    /// Decides which clients may connect when the socket binds (replacing
    /// any earlier one). Default: none, every client is refused.
    pub fn authorizer(mut self, a: impl Authorizer + 'static) -> Self {
        self.authorizer = Some(Arc::new(a));
        self
    }

    /// The same settings with `key` tried first among the server keys
    /// (a link to a member whose key gossip carried).
    pub(crate) fn with_first_server_key(mut self, key: CurvePublicKey) -> Self {
        self.server_keys.insert(0, ServerKeySource::Fixed(key));
        self
    }

    /// Our public key now.
    pub fn public_key(&self) -> CurvePublicKey {
        *self.key_pair().public()
    }

    /// Our key pair now (re-read if its file changed).
    pub(crate) fn key_pair(&self) -> CurveKeyPair {
        match &self.keys {
            KeySource::Fixed(k) => k.clone(),
            KeySource::File(w) => (*w.current()).clone(),
        }
    }

    /// The server keys accepted now, in order, without repeats.
    pub(crate) fn server_keys(&self) -> Vec<CurvePublicKey> {
        let mut out: Vec<CurvePublicKey> = Vec::new();
        for s in &self.server_keys {
            let keys = match s {
                ServerKeySource::Fixed(k) => vec![*k],
                ServerKeySource::File(w) => (*w.current()).clone(),
            };
            for k in keys {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        out
    }

    /// Asks the authorizer (none configured: refused).
    pub(crate) fn authorize(&self, req: &AuthRequest<'_>) -> bool {
        match &self.authorizer {
            Some(a) => a.authorize(req),
            None => {
                tracing::warn!("CURVE socket binds with no authorizer configured: client refused");
                false
            }
        }
    }
}

/// A HELLO then an INITIATE (split by the first two bytes, the HELLO's
/// length) into a server handshake with a fixed key pair: the fuzz
/// target's way in (see `crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_server(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let n = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
    let (hello, initiate) = data[2..].split_at(n);
    let ours = CurveKeyPair::from_secret(CurveSecretKey::from_bytes([7; keys::KEY_BYTES]));
    if let Ok((next, _welcome)) = handshake::ServerHello::new(ours).hello(hello) {
        let _ = next.initiate(initiate);
    }
}

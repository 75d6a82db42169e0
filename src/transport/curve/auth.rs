//! Who may connect: the [`Authorizer`] trait (the role ZAP plays for
//! libzmq) and its implementations, and key files that are re-read when
//! they change.
//!
//! # Guarantees
//! - A key file is checked for change (modification time, size, inode) at
//!   every use, that is on every new handshake, and re-read when it
//!   changed: a Kubernetes Secret updated in place, or a file replaced by
//!   `mv`, takes effect on the next connection without a restart.
//! - A file that fails to read or parse after a change keeps the last good
//!   contents in force (logged as a warning, never with key material), so
//!   a half-written file never locks everyone out or lets everyone in.
//!
//! # Not guaranteed
//! Connections already authorized stay up when a key is removed from an
//! allow-list: the decision is made once per connection, at its handshake.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use super::keys::{read_key_lines, CurvePublicKey, KeyError};
use crate::endpoint::Endpoint;

/// What an [`Authorizer`] is asked about one client.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AuthRequest<'a> {
    /// The client's long-term public key, proven by its handshake.
    pub client_key: &'a CurvePublicKey,
    /// The `Socket-Type` the client announced.
    pub socket_type: Option<&'a str>,
    /// The endpoint the client connected to.
    pub endpoint: &'a Endpoint,
}

/// Decides whether an authenticated CURVE client may use a bound socket:
/// the role ZAP (RFC 27) plays for libzmq. Called once per connection,
/// after the client has proven its key and before anything reaches the
/// socket; a refused client gets an ERROR command and is counted as
/// `unauthorized`. Runs on the connection's task: keep it fast and never
/// block for long.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    /// `true` to accept the client.
    fn authorize(&self, request: &AuthRequest<'_>) -> bool;
}

/// The default authorizer: an allow-list of client public keys, fixed or
/// read from a file (one Z85 key per line, `#` comments) that is re-read
/// when it changes.
#[derive(Debug, Clone)]
pub struct AllowList(AllowSource);

#[derive(Debug, Clone)]
enum AllowSource {
    Fixed(Arc<HashSet<CurvePublicKey>>),
    File(Arc<WatchedFile<HashSet<CurvePublicKey>>>),
}

impl AllowList {
    /// A fixed set of keys.
    pub fn from_keys(keys: impl IntoIterator<Item = CurvePublicKey>) -> Self {
        AllowList(AllowSource::Fixed(Arc::new(keys.into_iter().collect())))
    }

    /// The keys in `path` (one Z85 key per line, `#` comments), re-read
    /// whenever the file changes. Fails if the file cannot be read now.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, KeyError> {
        let w = WatchedFile::new(path.into(), |p| {
            read_key_lines(p).map(|k| k.into_iter().collect())
        })?;
        Ok(AllowList(AllowSource::File(Arc::new(w))))
    }

    /// Whether `key` is on the list now.
    pub fn contains(&self, key: &CurvePublicKey) -> bool {
        match &self.0 {
            AllowSource::Fixed(s) => s.contains(key),
            AllowSource::File(w) => w.current().contains(key),
        }
    }
}

impl Authorizer for AllowList {
    fn authorize(&self, request: &AuthRequest<'_>) -> bool {
        self.contains(request.client_key)
    }
}

/// Accepts every client that completes the handshake: encryption and
/// server authentication without client authorization (libzmq's
/// "Stonehouse" without ZAP). Anyone who knows the server's public key
/// gets in; use it only where that is the intent.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAnyClient;

impl Authorizer for AllowAnyClient {
    fn authorize(&self, _request: &AuthRequest<'_>) -> bool {
        true
    }
}

/// The identity of a file's current contents, as cheap to get as a `stat`.
type Stamp = (Option<SystemTime>, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok(), m.len(), ino))
}

/// A value loaded from a file and re-loaded when the file changes.
pub(crate) struct WatchedFile<T> {
    path: PathBuf,
    load: fn(&Path) -> Result<T, KeyError>,
    state: Mutex<(Option<Stamp>, Arc<T>)>,
}

impl<T> std::fmt::Debug for WatchedFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<T> WatchedFile<T> {
    /// Loads `path` now (an error if it cannot be).
    pub(crate) fn new(
        path: PathBuf,
        load: fn(&Path) -> Result<T, KeyError>,
    ) -> Result<Self, KeyError> {
        let s = stamp(&path);
        let v = load(&path)?;
        Ok(WatchedFile {
            path,
            load,
            state: Mutex::new((s, Arc::new(v))),
        })
    }

    /// The contents now: re-read first if the file changed since.
    pub(crate) fn current(&self) -> Arc<T> {
        let now = stamp(&self.path);
        let mut st = self.state.lock();
        if now != st.0 {
            match (self.load)(&self.path) {
                Ok(v) => {
                    tracing::info!(path = %self.path.display(), "key file changed; reloaded");
                    *st = (now, Arc::new(v));
                }
                Err(e) => {
                    // Keep the last good contents; try again next time.
                    tracing::warn!(error = %e, "key file changed but cannot be used; keeping the previous keys");
                }
            }
        }
        st.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::curve::CurveKeyPair;

    fn write(path: &Path, text: &str) {
        // Replace atomically, as a careful operator (or Kubernetes) would.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn an_allow_list_file_is_reread_when_it_changes_and_survives_a_bad_edit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized");
        let (a, b) = (CurveKeyPair::generate(), CurveKeyPair::generate());
        write(&path, &format!("# team\n{}\n", a.public()));
        let list = AllowList::from_file(&path).unwrap();
        assert!(list.contains(a.public()));
        assert!(!list.contains(b.public()));
        write(&path, &format!("{}\n", b.public()));
        assert!(list.contains(b.public()));
        assert!(!list.contains(a.public()));
        write(&path, "garbage that is not a key\n");
        assert!(
            list.contains(b.public()),
            "a broken edit keeps the last good list"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(
            list.contains(b.public()),
            "a vanished file keeps the last good list"
        );
    }

    #[test]
    fn a_missing_allow_list_file_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            AllowList::from_file(dir.path().join("none")),
            Err(KeyError::Io { .. })
        ));
    }
}

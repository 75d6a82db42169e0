//! The guard: a ZMTP-aware relay that zfabric puts between every `zeromq`
//! socket and the network.
//!
//! - **Listening** (bind): zfabric owns the tcp/ipc listener. Each accepted
//!   connection is relayed to the `zeromq` socket, which is bound on a
//!   private ipc path. Bytes from the peer pass through a [`FrameScanner`](super::scan::FrameScanner):
//!   a frame or message declared over the limit disconnects that peer
//!   before its body is read, so the `zeromq` socket never allocates more
//!   than the limit. Other peers are not affected.
//! - **Connecting**: the `zeromq` socket connects to a private ipc listener
//!   owned by a link task. The link answers the ZMTP handshake itself (so
//!   `connect` never waits for the network), then connects to the remote in
//!   the background, replays the socket's handshake, and reconnects with
//!   jittered exponential backoff whenever the remote goes away. Only whole
//!   messages from the remote are passed on, so the local socket never sees
//!   a torn message across reconnects. A SUB socket's subscriptions are
//!   remembered and replayed on every new connection.
//!
//!
//! # The private hop
//! A `zeromq` socket never touches the network itself. Every socket that
//! binds binds a [`PrivateIpc`] endpoint (a unix socket in a per-process
//! directory only this user can enter), and every connect goes to a
//! [`PrivateIpc`] endpoint that a link task listens on:
//!
//! ```text
//! bind:    peer --tcp/ipc--> listener.rs relay --PrivateIpc--> zeromq socket
//! connect: zeromq socket --PrivateIpc--> connector.rs link task --tcp/ipc--> remote
//! ```
//!
//! The directory lives while a [`PrivateIpc`] uses it: once the last one
//! is dropped it is removed (after the `zeromq` sockets, which delete
//! their own files on a runtime task, have done so; at most half a
//! second later), and the next socket makes a new one. A process about
//! to exit calls [`remove_private_dir`] so that the sockets finish while
//! the runtime still runs (a runtime stopped under them is what made them
//! log `Could not delete unix socket`). Making a directory sweeps the
//! ones processes no longer alive left (same user, the name pattern
//! `zfabric-PID-XXXXXXXX`, PID not in `/proc`).
//!
//! # Security
//! With a [`CurveConfig`](crate::CurveConfig) in the socket's config the
//! guard speaks CURVE to the network and NULL to the `zeromq` socket: the
//! listener terminates the CURVE handshake itself (authorizing the
//! client's key before anything reaches the socket), then opens the
//! private hop speaking NULL in the peer's name; a link runs the client
//! handshake against the remote. Both then seal every frame going out and
//! open every frame coming in, scanning the decrypted frames against the
//! limits before they are passed on. Without CURVE the bytes pass as they
//! are (NULL), as before.
//!
//! Layout: [`listener`] (accepting side), [`connector`] (links and
//! reconnect), [`relay`] (a link's two pumps), [`secure`] (the CURVE
//! handshakes' I/O and the sealed remote halves), [`stream`] (tcp/unix
//! streams); the ZMTP greeting and handshake are in
//! [`zmtp`](crate::transport::zmtp), the CURVE machines in
//! [`curve`](crate::transport::curve), the frame scanner in `scan`.
//!
//! What it does not do: it does not recover messages that were in flight
//! when a connection broke (they are counted as `link_down` drops), and it
//! never encrypts inproc.

mod connector;
mod listener;
mod pubq;
mod relay;
mod secure;
mod stream;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use tokio::task::JoinHandle;

pub use connector::LinkState;
pub(crate) use connector::{connect_guarded, Link};
pub(crate) use listener::{bind_guarded, GuardedListener};

use super::scan::ScanLimits;
use super::zmtp::MAX_COMMAND;
use crate::config::SocketConfig;

/// Read buffers start small and double, up to this, while reads fill them:
/// an idle connection costs little, a busy one reads in large chunks.
const CHUNK: usize = 256 * 1024;
const FIRST_CHUNK: usize = 1024;

/// Doubles a read buffer (up to [`CHUNK`]) after a read that filled it.
fn grow_after(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() && buf.len() < CHUNK {
        buf.resize(buf.len() * 2, 0);
    }
}

fn scan_limits(cfg: &SocketConfig) -> ScanLimits {
    ScanLimits {
        max_message: cfg.limits.max_message_size as u64,
        max_command: MAX_COMMAND,
    }
}

/// The private ipc endpoint between a `zeromq` socket and the guard: a
/// unix socket in a per-process directory that only this user can enter.
/// The `zeromq` socket binds it (the guard's listener relays to it) or
/// connects to it (a link task listens on it). It holds a lease on the
/// directory: the directory is removed once the last lease is gone.
#[derive(Debug, Clone)]
pub(crate) struct PrivateIpc(PathBuf, #[allow(dead_code)] Arc<Lease>);

impl PrivateIpc {
    /// The socket file.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// The endpoint as the `zeromq` crate spells it.
    pub(crate) fn zmq_endpoint(&self) -> String {
        format!("ipc://{}", self.0.display())
    }
}

/// This process's private directory and how many private endpoints use
/// it. `None` until the first socket needs one, and again once the last
/// one is gone and the directory removed.
static DIR: Mutex<Option<(PathBuf, usize)>> = Mutex::new(None);

/// How long the directory outlives its last socket at most, waiting for
/// the `zeromq` sockets to delete their files (they do, on a task of the
/// runtime, once closed).
const SETTLE: Duration = Duration::from_millis(500);

/// One private endpoint's use of the directory; dropping the last one
/// removes the directory (once the sockets have deleted their files).
#[derive(Debug)]
pub(crate) struct Lease;

impl Drop for Lease {
    fn drop(&mut self) {
        let dir = {
            let mut g = DIR.lock();
            let Some((dir, users)) = g.as_mut() else {
                return;
            };
            *users -= 1;
            if *users > 0 {
                return;
            }
            dir.clone()
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    settle(&dir, SETTLE).await;
                    remove_if_unused(&dir);
                });
            }
            Err(_) => remove_if_unused(&dir),
        }
    }
}

/// Waits until `dir` is empty (the sockets deleted their files), at most
/// `patience`.
async fn settle(dir: &Path, patience: Duration) {
    let give_up = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < give_up {
        let empty = std::fs::read_dir(dir).map_or(true, |mut e| e.next().is_none());
        if empty {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Removes `dir` (and what is left in it) if it is still this process's
/// directory and no endpoint uses it; the next socket makes a new one.
fn remove_if_unused(dir: &Path) {
    let mut g = DIR.lock();
    if matches!(g.as_ref(), Some((d, 0)) if d == dir) {
        *g = None;
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes this process's private ipc directory, for a process about to
/// exit: waits up to `patience` for the `zeromq` sockets already closed to
/// delete their files (while the runtime still runs them: removing the
/// files under them instead is what made them log `Could not delete unix
/// socket`), then removes the directory and what is left in it. Sockets
/// still open after this keep working over connections already made, but
/// cannot accept new local ones; call it last.
pub async fn remove_private_dir(patience: Duration) {
    let Some(dir) = DIR.lock().as_ref().map(|(d, _)| d.clone()) else {
        return;
    };
    let give_up = tokio::time::Instant::now() + patience;
    while DIR.lock().as_ref().is_some_and(|(_, n)| *n > 0) && tokio::time::Instant::now() < give_up
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    settle(
        &dir,
        give_up.saturating_duration_since(tokio::time::Instant::now()),
    )
    .await;
    let mut g = DIR.lock();
    if g.as_ref().is_some_and(|(d, _)| *d == dir) {
        *g = None;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh private ipc endpoint (the process's directory is made on first
/// use, and stale directories of dead processes are swept then).
pub(crate) fn private_path() -> io::Result<PrivateIpc> {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut g = DIR.lock();
    let dir = match g.as_mut() {
        Some((d, users)) => {
            *users += 1;
            d.clone()
        }
        None => {
            let d = std::env::temp_dir().join(format!(
                "zfabric-{}-{:08x}",
                std::process::id(),
                crate::wire::random_u64() as u32
            ));
            std::fs::create_dir_all(&d)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
            }
            sweep_stale(&d);
            *g = Some((d.clone(), 1));
            d
        }
    };
    drop(g);
    let file = format!("{}.sock", N.fetch_add(1, Ordering::Relaxed));
    Ok(PrivateIpc(dir.join(file), Arc::new(Lease)))
}

/// Removes the private directories that processes which are no longer
/// alive left behind (killed, or exited without closing): only
/// `zfabric-PID-XXXXXXXX` directories in the same temp dir as `mine`,
/// owned by the same user, whose PID is not a live process. Where liveness
/// cannot be checked (no `/proc`), nothing is swept.
fn sweep_stale(mine: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let proc = Path::new("/proc");
        let (Some(parent), Ok(me)) = (mine.parent(), std::fs::metadata(mine)) else {
            return;
        };
        if !proc.join("self").exists() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(parent) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = stale_pid(&name.to_string_lossy()) else {
                continue;
            };
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_dir() || meta.uid() != me.uid() || path == mine {
                continue;
            }
            if pid == std::process::id() || proc.join(pid.to_string()).exists() {
                continue;
            }
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    #[cfg(not(unix))]
    let _ = mine;
}

/// The PID in a private directory's name `zfabric-PID-XXXXXXXX` (8 hex
/// digits), or `None` for any other name.
fn stale_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("zfabric-")?;
    let (pid, tag) = rest.split_once('-')?;
    if tag.len() != 8 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_private_directories_are_taken_for_stale_ones() {
        assert_eq!(stale_pid("zfabric-1234-0a1b2c3d"), Some(1234));
        for other in [
            "zfabric-1234-0a1b2c3",
            "zfabric-12x4-0a1b2c3d",
            "zfabric--0a1b2c3d",
            "zfabric-req-1234-5.sock",
            "zfabric-1234-0a1b2c3g",
            "other-1234-0a1b2c3d",
        ] {
            assert_eq!(stale_pid(other), None, "{other}");
        }
    }
}

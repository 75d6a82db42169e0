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
use std::sync::OnceLock;

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
/// connects to it (a link task listens on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrivateIpc(PathBuf);

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

/// A fresh private ipc endpoint.
pub(crate) fn private_path() -> io::Result<PrivateIpc> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = match DIR.get() {
        Some(d) => d.clone(),
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
            DIR.get_or_init(|| d).clone()
        }
    };
    let file = format!("{}.sock", N.fetch_add(1, Ordering::Relaxed));
    Ok(PrivateIpc(dir.join(file)))
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

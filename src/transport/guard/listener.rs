//! The guard's listening side: zfabric owns the tcp/ipc listener in front
//! of a `zeromq` socket and relays each accepted connection to the
//! socket's private ipc endpoint ([`PrivateIpc`]).
//!
//! # Guarantees
//! - Bytes from a peer pass through a [`FrameScanner`] before they reach
//!   the `zeromq` socket: a frame or message declared over the limit
//!   disconnects that peer before its body is read; other peers are not
//!   affected.
//! - Reply bytes the socket sends are counted once written to the peer
//!   (the socket's own handshake excluded), so a linger knows when they
//!   have left.
//! - With CURVE: the peer's greeting and handshake must finish within
//!   `SocketConfig::handshake_timeout`; the client's key is authorized
//!   before the private hop to the socket is even opened; decrypted frames
//!   pass the same scanner before they are written on. Every refusal is
//!   counted by reason.
//!
//! # Not guaranteed
//! Nothing is buffered beyond one read: a peer that stops reading holds up
//! only its own relay.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::task::JoinSet;

use super::connector::curve_wire_limit;
use super::pubq::PubQueue;
use super::secure::{server_handshake, Refusal, RemoteWriter};
use super::stream::{tune_tcp, Stream};
use super::{grow_after, scan_limits, AbortOnDrop, PrivateIpc, FIRST_CHUNK};
use crate::config::SocketConfig;
use crate::endpoint::Endpoint;
use crate::error::BindError;
use crate::telemetry;
use crate::transport::batch::Progress;
use crate::transport::curve::{CurveConfig, OpenStream, SealStream};
use crate::transport::fanout::Splitter;
use crate::transport::scan::{frame_header, FrameScanner, ScanLimits};
use crate::transport::zmtp::{read_handshake, ready_command, Mechanism, SocketKind};

/// A listener zfabric owns in front of a `zeromq` socket.
#[derive(Debug)]
pub(crate) struct GuardedListener {
    /// The endpoint as bound (port resolved).
    pub(crate) endpoint: Endpoint,
    _task: AbortOnDrop,
    ipc_path: Option<PathBuf>,
}

impl Drop for GuardedListener {
    fn drop(&mut self) {
        if let Some(p) = &self.ipc_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AnyListener {
    async fn accept(&self) -> io::Result<Stream> {
        match self {
            AnyListener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                tune_tcp(&s)?;
                Ok(Stream::Tcp(s))
            }
            AnyListener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }
}

/// Binds `ep` and relays every accepted connection to the `zeromq` socket
/// listening on its private endpoint `target`, enforcing the size limits.
pub(crate) async fn bind_guarded(
    ep: &Endpoint,
    target: &PrivateIpc,
    kind: SocketKind,
    cfg: &SocketConfig,
    progress: Arc<Progress>,
) -> Result<GuardedListener, BindError> {
    let io_err = |source| BindError::Io {
        endpoint: ep.clone(),
        source,
    };
    let (listener, endpoint, ipc_path) = match ep {
        Endpoint::Tcp { host, port } => {
            // A listener of this process that was just dropped closes when
            // its task is cancelled, a moment later: retry briefly before
            // calling the address taken.
            let mut tries = 0;
            let l = loop {
                match TcpListener::bind((host.as_str(), *port)).await {
                    Ok(l) => break l,
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse && *port != 0 && tries < 10 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        return Err(BindError::AddrInUse(ep.clone()))
                    }
                    Err(e) => return Err(io_err(e)),
                }
            };
            let port = l.local_addr().map_err(io_err)?.port();
            let resolved = Endpoint::Tcp {
                host: host.clone(),
                port,
            };
            (AnyListener::Tcp(l), resolved, None)
        }
        Endpoint::Ipc(path) => {
            clear_stale_socket(ep, path).await?;
            let l = UnixListener::bind(path).map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    BindError::AddrInUse(ep.clone())
                } else {
                    io_err(e)
                }
            })?;
            (AnyListener::Unix(l), ep.clone(), Some(path.clone()))
        }
        Endpoint::Inproc(_) => {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "inproc endpoints are not served by the guard",
            )))
        }
    };
    let limits = scan_limits(cfg);
    let target = target.path().to_path_buf();
    let side = Arc::new(Side {
        kind,
        endpoint: endpoint.clone(),
        deadline: cfg.handshake_timeout,
        idle: cfg.idle_timeout,
        max_connections: cfg.max_connections.max(1),
        curve: cfg.curve.clone(),
        queue: (cfg.queue_capacity, cfg.publisher_queue_bytes),
    });
    let task = tokio::spawn(accept_loop(listener, target, limits, progress, side));
    Ok(GuardedListener {
        endpoint,
        _task: AbortOnDrop(task),
        ipc_path,
    })
}

/// A leftover socket file with nobody listening is removed; a live one is
/// `AddrInUse`; anything that is not a socket is left alone.
async fn clear_stale_socket(ep: &Endpoint, path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(ep.clone()));
        }
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(BindError::AddrInUse(ep.clone())),
        Err(_) => {
            tracing::info!(path = %path.display(), "removing stale ipc socket file");
            std::fs::remove_file(path).map_err(|source| BindError::Io {
                endpoint: ep.clone(),
                source,
            })
        }
    }
}

/// What every connection of one listener needs.
#[derive(Debug)]
struct Side {
    kind: SocketKind,
    endpoint: Endpoint,
    /// Greeting + handshake deadline (NULL and CURVE).
    deadline: Duration,
    /// Closes connections silent both ways this long.
    idle: Option<Duration>,
    /// Most connections at once.
    max_connections: usize,
    /// CURVE settings; `None`: NULL.
    curve: Option<CurveConfig>,
    /// A PUB socket's send queue per subscriber: publications, bytes.
    queue: (usize, usize),
}

async fn accept_loop(
    listener: AnyListener,
    target: PathBuf,
    limits: ScanLimits,
    progress: Arc<Progress>,
    side: Arc<Side>,
) {
    let mut conns = JoinSet::new();
    // Refusals are logged at most once a second (a flood would fill logs).
    let mut last_warned: Option<tokio::time::Instant> = None;
    let mut refused_since_warned = 0u64;
    loop {
        while conns.try_join_next().is_some() {}
        match listener.accept().await {
            Ok(stream) => {
                if conns.len() >= side.max_connections {
                    // Closed before any byte is read: a stranger's flood
                    // costs a descriptor only for this instant.
                    drop(stream);
                    telemetry::disconnected(telemetry::DisconnectReason::TooManyConnections);
                    refused_since_warned += 1;
                    let now = tokio::time::Instant::now();
                    if last_warned.is_none_or(|t| now - t >= Duration::from_secs(1)) {
                        tracing::warn!(
                            endpoint = %side.endpoint,
                            max_connections = side.max_connections,
                            refused = refused_since_warned,
                            "listener full: refusing connections"
                        );
                        last_warned = Some(now);
                        refused_since_warned = 0;
                    }
                    continue;
                }
                if side.curve.is_some() {
                    conns.spawn(relay_curve(
                        stream,
                        target.clone(),
                        limits,
                        progress.clone(),
                        side.clone(),
                    ));
                } else {
                    conns.spawn(relay_accepted(
                        stream,
                        target.clone(),
                        limits,
                        progress.clone(),
                        side.clone(),
                    ));
                }
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Checks a NULL peer's greeting and first command (held back until
/// checked): the NULL mechanism, a `READY` that parses, a `Socket-Type`
/// the bound socket can talk to.
fn check_null_handshake(hs: &[u8], greeting_end: usize, kind: SocketKind) -> Result<(), Refusal> {
    let bad = |why: String| Refusal {
        reason: telemetry::DisconnectReason::BadHandshake,
        why,
    };
    Mechanism::Null.check_greeting(&hs[..greeting_end])?;
    let cmd = &hs[greeting_end..];
    let (&flags, rest) = cmd
        .split_first()
        .ok_or_else(|| bad("no handshake command".into()))?;
    let body = if flags & 0b010 != 0 {
        rest.get(8..)
    } else {
        rest.get(1..)
    }
    .ok_or_else(|| bad("a truncated handshake command".into()))?;
    match Mechanism::Null.parse_command(body) {
        None => Err(bad("the first command is not a well-formed READY".into())),
        Some(None) => Err(bad("READY announces no Socket-Type".into())),
        Some(Some(t)) if !kind.accepts(&t) => Err(bad(format!(
            "a {t} peer cannot talk to a {} socket",
            kind.zmtp_name()
        ))),
        Some(Some(_)) => Ok(()),
    }
}

/// Resolves (with the reason) once a connection has seen no byte either
/// way for a whole `idle` period; never without an idle timeout.
async fn idle_watch(idle: Option<Duration>, activity: &AtomicU64) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    let mut last = activity.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(idle).await;
        let now = activity.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

fn idle_cut(side: &Side) {
    telemetry::disconnected(telemetry::DisconnectReason::IdleTimeout);
    tracing::debug!(endpoint = %side.endpoint, "closing an idle connection");
}

async fn relay_accepted(
    peer: Stream,
    target: PathBuf,
    limits: ScanLimits,
    progress: Arc<Progress>,
    side: Arc<Side>,
) {
    let inner = match UnixStream::connect(&target).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "guard cannot reach its socket");
            return;
        }
    };
    let _peer = progress.peer();
    let (mut pr, mut pw) = peer.split();
    let (mut ir, mut iw) = inner.into_split();
    let activity = AtomicU64::new(0);
    // Set once the peer's greeting and READY have been checked.
    let shaken = AtomicBool::new(false);
    // A PUB socket's subscriber: its own bounded send queue.
    let pubq = (side.kind == SocketKind::Pub)
        .then(|| PubQueue::new(progress.clone(), side.queue.0, side.queue.1));
    let inbound = async {
        let mut scanner = FrameScanner::new(limits);
        if pubq.is_some() {
            scanner = scanner.capture_small();
        }
        let mut buf = vec![0u8; FIRST_CHUNK];
        let mut ends = Vec::new();
        // The peer's handshake, held back until checked.
        let mut held: Vec<u8> = Vec::new();
        let mut greeting_end = None;
        loop {
            let n = match pr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            activity.fetch_add(1, Ordering::Relaxed);
            ends.clear();
            if let Err(e) = scanner.feed(&buf[..n], &mut ends) {
                let reason = e.reason();
                tracing::warn!(error = ?e, "disconnecting peer that broke the frame limits");
                telemetry::disconnected(reason);
                return;
            }
            if let Some(q) = &pubq {
                for m in scanner.take_captured() {
                    q.subscription(&m);
                }
            }
            let mut chunk = &buf[..n];
            if !shaken.load(Ordering::Relaxed) {
                let start = held.len();
                held.extend_from_slice(chunk);
                let mut done = None;
                for e in &ends {
                    match greeting_end {
                        None => greeting_end = Some(start + e),
                        Some(_) => {
                            done = Some(start + e);
                            break;
                        }
                    }
                }
                let Some(end) = done else { continue };
                let g = greeting_end.unwrap_or(64);
                if let Err(r) = check_null_handshake(&held[..end], g, side.kind) {
                    return r.record("bind", &side.endpoint);
                }
                shaken.store(true, Ordering::Relaxed);
                if iw.write_all(&held).await.is_err() {
                    return;
                }
                held = Vec::new();
                chunk = &[];
            }
            if !chunk.is_empty() && iw.write_all(chunk).await.is_err() {
                return;
            }
            grow_after(&mut buf, n);
        }
    };
    let outbound = async {
        if let Some(q) = &pubq {
            let to = RemoteWriter::new(pw, None);
            return q
                .serve(&mut ir, Splitter::new(limits, true), to, &activity)
                .await;
        }
        let mut buf = vec![0u8; FIRST_CHUNK];
        // The socket's own handshake (greeting, READY) is not counted: only
        // messages, which is what senders count as handed over.
        let mut handshake = Some((FrameScanner::new(limits), 0usize));
        let mut ends = Vec::new();
        loop {
            let n = match ir.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            activity.fetch_add(1, Ordering::Relaxed);
            let counted = match &mut handshake {
                None => n,
                Some((scanner, units)) => {
                    ends.clear();
                    let _ = scanner.feed(&buf[..n], &mut ends);
                    let mut from = None;
                    for e in &ends {
                        *units += 1;
                        if *units == 2 {
                            from = Some(*e);
                        }
                    }
                    match from {
                        Some(at) => {
                            handshake = None;
                            n - at
                        }
                        None => 0,
                    }
                }
            };
            if pw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            // Counted once written on: a linger that sees it knows the
            // bytes have left.
            progress.relayed(counted);
            grow_after(&mut buf, n);
        }
    };
    // The handshake deadline: a partial or trickled greeting is cut off.
    let deadline = async {
        tokio::time::sleep(side.deadline).await;
        if shaken.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
        _ = deadline => Refusal {
            reason: telemetry::DisconnectReason::HandshakeTimeout,
            why: format!("no NULL greeting and READY within {:?}", side.deadline),
        }
        .record("bind", &side.endpoint),
        _ = idle_watch(side.idle, &activity) => idle_cut(&side),
    }
}

/// A CURVE connection: the relay terminates the handshake itself, then
/// opens the private hop to the `zeromq` socket speaking NULL in the
/// peer's name, and seals and opens every frame in between.
async fn relay_curve(
    peer: Stream,
    target: PathBuf,
    limits: ScanLimits,
    progress: Arc<Progress>,
    side: Arc<Side>,
) {
    let Some(curve) = side.curve.as_ref() else {
        return;
    };
    let (mut pr, mut pw) = peer.split();
    let activity = AtomicU64::new(0);
    let handshake = async {
        let accepted = server_handshake(&mut pr, &mut pw, curve, side.kind, &side.endpoint).await?;
        // The private hop, in the peer's name: the socket sees the peer's
        // Socket-Type and Identity, as it would over NULL.
        let inner = UnixStream::connect(&target).await.map_err(|e| Refusal {
            reason: telemetry::DisconnectReason::Io,
            why: format!("guard cannot reach its socket: {e}"),
        })?;
        let (mut ir, mut iw) = inner.into_split();
        let peer_type = accepted.peer.socket_type.clone().unwrap_or_default();
        let body = ready_command(&peer_type, accepted.peer.identity.as_deref());
        let mut hs = Mechanism::Null.greeting().to_vec();
        frame_header(body.len(), false, true, &mut hs);
        hs.extend_from_slice(&body);
        iw.write_all(&hs).await?;
        read_handshake(&mut ir).await?;
        let session = accepted.finish(&mut pw, side.kind).await?;
        Ok::<_, Refusal>((session, ir, iw))
    };
    let (session, mut ir, mut iw) = match tokio::time::timeout(side.deadline, handshake).await {
        Ok(Ok(x)) => x,
        Ok(Err(refusal)) => return refusal.record("bind", &side.endpoint),
        Err(_) => {
            return Refusal {
                reason: telemetry::DisconnectReason::HandshakeTimeout,
                why: format!("no CURVE handshake within {:?}", side.deadline),
            }
            .record("bind", &side.endpoint)
        }
    };
    let mut open = OpenStream::new(session.opener, curve_wire_limit(limits));
    let mut seal = SealStream::new(
        session.sealer,
        limits.max_message,
        side.kind == SocketKind::Sub,
    );
    let pubq = (side.kind == SocketKind::Pub)
        .then(|| PubQueue::new(progress.clone(), side.queue.0, side.queue.1));
    let inbound = async {
        // The scanner checks the decrypted frames against the message
        // limits before they are written on.
        let mut scanner = FrameScanner::after_handshake(limits);
        if pubq.is_some() {
            scanner = scanner.capture_small();
        }
        let mut buf = vec![0u8; FIRST_CHUNK];
        let mut plain = Vec::new();
        let mut ends = Vec::new();
        loop {
            let n = match pr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            activity.fetch_add(1, Ordering::Relaxed);
            plain.clear();
            if let Err(e) = open.feed(&buf[..n], &mut plain) {
                tracing::warn!(error = %e, "disconnecting a CURVE peer whose box we refuse");
                telemetry::disconnected(e.reason());
                return;
            }
            ends.clear();
            if let Err(e) = scanner.feed(&plain, &mut ends) {
                tracing::warn!(error = ?e, "disconnecting peer that broke the frame limits");
                telemetry::disconnected(e.reason());
                return;
            }
            if let Some(q) = &pubq {
                for m in scanner.take_captured() {
                    q.subscription(&m);
                }
            }
            if !plain.is_empty() && iw.write_all(&plain).await.is_err() {
                return;
            }
            grow_after(&mut buf, n);
        }
    };
    let outbound = async {
        let mut sealed = Vec::new();
        if let Some(q) = &pubq {
            // The socket's handshake was swallowed above.
            let to = RemoteWriter::new(pw, Some(seal));
            return q
                .serve(&mut ir, Splitter::new(limits, false), to, &activity)
                .await;
        }
        let mut buf = vec![0u8; FIRST_CHUNK];
        loop {
            let n = match ir.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            activity.fetch_add(1, Ordering::Relaxed);
            sealed.clear();
            if let Err(e) = seal.feed(&buf[..n], &mut sealed) {
                tracing::error!(error = %e, "socket wrote a frame CURVE cannot carry");
                return;
            }
            if !sealed.is_empty() && pw.write_all(&sealed).await.is_err() {
                return;
            }
            // The socket's handshake was swallowed above: all of this is
            // messages, counted once written on.
            progress.relayed(n);
            grow_after(&mut buf, n);
        }
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
        _ = idle_watch(side.idle, &activity) => idle_cut(&side),
    }
}

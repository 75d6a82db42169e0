//! The guard's connecting side: a [`Link`] to one remote endpoint that
//! the local `zeromq` socket reaches through a private ipc endpoint.
//!
//! The hop, in order: `zeromq` socket -> [`PrivateIpc`] (a unix socket in a
//! per-process directory only this user can enter) -> this link's task ->
//! the network. The link answers the socket's ZMTP handshake itself (so
//! `connect` never waits for the network), then connects to the remote in
//! the background, replays the socket's handshake there, and reconnects
//! with jittered exponential backoff whenever the remote goes away. The
//! pumps that move the bytes are in `relay.rs`.
//!
//! # Guarantees
//! - [`Link::state`] tells whether the remote is connected and past the
//!   handshake; a peer whose socket type is not compatible is refused
//!   (counted as `bad_handshake`) and retried.
//! - With CURVE the link runs the client handshake against the remote
//!   (the local socket's NULL handshake is still answered locally), trying
//!   each accepted server key in order, and its pumps seal and open every
//!   frame. Refusals are counted by reason and retried with backoff.
//!
//! # Not guaranteed
//! Messages in flight when a connection breaks are not recovered (the
//! relay counts them as `link_down` drops).

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};

use super::pubq::PubQueue;
use super::relay::{inbound, outbound, outbound_pub};
use super::secure::{client_handshake, Refusal, RemoteReader, RemoteWriter};
use super::stream::Stream;
use super::{private_path, scan_limits, AbortOnDrop, PrivateIpc};
use crate::config::SocketConfig;
use crate::endpoint::Endpoint;
use crate::telemetry;
use crate::transport::batch::Progress;
use crate::transport::curve::{CurveConfig, OpenStream, SealStream, Session, MESSAGE_OVERHEAD};
use crate::transport::scan::ScanLimits;
use crate::transport::zmtp::{
    handshake_bytes, handshake_identity, read_handshake, GreetingError, SocketKind,
};

/// State of an outgoing link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet (first attempts).
    Connecting,
    /// Connected and past the handshake.
    Connected,
    /// Was connected and lost it; retrying with backoff.
    Reconnecting,
}

/// An outgoing, self-reconnecting link to one remote endpoint.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) remote: Endpoint,
    pub(crate) state: watch::Receiver<LinkState>,
    _task: AbortOnDrop,
    /// Keeps the private directory while the link lives (dropped after
    /// the task, which may still hold the listener).
    _private: PrivateIpc,
}

/// Starts a link to `remote` for a local socket of `kind`. Returns the link
/// and the private endpoint the local `zeromq` socket must connect to.
pub(crate) async fn connect_guarded(
    remote: Endpoint,
    kind: SocketKind,
    cfg: &SocketConfig,
    progress: Arc<Progress>,
) -> io::Result<(Link, PrivateIpc)> {
    let private = private_path()?;
    let path = private.path().to_path_buf();
    let listener = UnixListener::bind(&path)?;
    let (tx, rx) = watch::channel(LinkState::Connecting);
    let task = tokio::spawn(link_task(
        listener,
        path.clone(),
        remote.clone(),
        kind,
        cfg.clone(),
        tx,
        progress,
    ));
    Ok((
        Link {
            remote,
            state: rx,
            _task: AbortOnDrop(task),
            _private: private.clone(),
        },
        private,
    ))
}

async fn link_task(
    listener: UnixListener,
    path: std::path::PathBuf,
    remote: Endpoint,
    kind: SocketKind,
    cfg: SocketConfig,
    state: watch::Sender<LinkState>,
    progress: Arc<Progress>,
) {
    let local = match listener.accept().await {
        Ok((s, _)) => s,
        Err(e) => {
            tracing::warn!(error = %e, "link: local socket did not connect");
            return;
        }
    };
    drop(listener);
    let _ = std::fs::remove_file(&path);
    let (mut lr, mut lw) = local.into_split();
    if lw.write_all(&handshake_bytes(kind.peer())).await.is_err() {
        return;
    }
    let hello = match read_handshake(&mut lr).await {
        Ok((raw, _)) => raw,
        Err(e) => {
            tracing::warn!(error = %e, "link: bad handshake from local socket");
            return;
        }
    };
    let limits = scan_limits(&cfg);
    let (to_out, out_rx) = mpsc::channel(1);
    let (to_in, in_rx) = mpsc::channel(1);
    let (fail_tx, mut fail_rx) = mpsc::channel(4);
    // The latest generation known dead: both pumps let go of its halves.
    let (dead_tx, dead_rx) = watch::channel(0u64);
    // A PUB socket's link is one subscriber connection, with its own
    // bounded send queue for the life of the link.
    let pubq = (kind == SocketKind::Pub).then(|| {
        Arc::new(PubQueue::new(
            progress.clone(),
            cfg.queue_capacity,
            cfg.publisher_queue_bytes,
        ))
    });
    let mut out_task = AbortOnDrop(match &pubq {
        Some(q) => tokio::spawn(outbound_pub(
            lr,
            out_rx,
            fail_tx.clone(),
            dead_rx.clone(),
            limits,
            q.clone(),
        )),
        None => tokio::spawn(outbound(
            lr,
            out_rx,
            fail_tx.clone(),
            dead_rx.clone(),
            kind == SocketKind::Sub,
            limits,
            progress,
        )),
    });
    let _in_task = AbortOnDrop(tokio::spawn(inbound(
        lw, in_rx, fail_tx, dead_rx, limits, pubq,
    )));

    let mut generation = 0u64;
    let mut delay = cfg.reconnect_initial;
    loop {
        let attempt = tokio::time::timeout(
            cfg.handshake_timeout,
            connect_and_handshake(&remote, &hello, kind, cfg.curve.as_ref()),
        );
        let result = tokio::select! {
            r = attempt => r,
            _ = &mut out_task.0 => return,
        };
        match result {
            Ok(Ok((stream, session))) => {
                generation += 1;
                if generation > 1 {
                    telemetry::reconnected(remote.transport());
                }
                let (r, w) = remote_halves(stream, session, kind, limits);
                if to_out.send((generation, w)).await.is_err()
                    || to_in.send((generation, r)).await.is_err()
                {
                    return;
                }
                let _ = state.send(LinkState::Connected);
                delay = cfg.reconnect_initial;
                loop {
                    tokio::select! {
                        f = fail_rx.recv() => match f {
                            Some(g) if g == generation => break,
                            Some(_) => continue,
                            None => return,
                        },
                        _ = &mut out_task.0 => return,
                    }
                }
                let _ = dead_tx.send(generation);
                let _ = state.send(LinkState::Reconnecting);
                telemetry::disconnected(telemetry::DisconnectReason::Io);
                tracing::info!(%remote, "link lost; reconnecting");
            }
            Ok(Err(e)) => tracing::debug!(%remote, error = %e, "link: connect failed"),
            Err(_) => Refusal {
                reason: telemetry::DisconnectReason::HandshakeTimeout,
                why: format!(
                    "no {} handshake within {:?}",
                    if cfg.curve.is_some() { "CURVE" } else { "NULL" },
                    cfg.handshake_timeout
                ),
            }
            .record("connect", &remote),
        }
        let jittered = delay.mul_f64(0.5 + (crate::wire::random_u64() % 1000) as f64 / 1000.0);
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = &mut out_task.0 => return,
        }
        delay = (delay * 2).min(cfg.reconnect_max);
    }
}

/// The remote's halves for the pumps: sealed and opened under CURVE.
fn remote_halves(
    stream: Stream,
    session: Option<Session>,
    kind: SocketKind,
    limits: ScanLimits,
) -> (RemoteReader, RemoteWriter) {
    let (r, w) = stream.split();
    match session {
        None => (RemoteReader::new(r, None), RemoteWriter::new(w, None)),
        Some(s) => (
            RemoteReader::new(r, Some(OpenStream::new(s.opener, curve_wire_limit(limits)))),
            RemoteWriter::new(
                w,
                Some(SealStream::new(
                    s.sealer,
                    limits.max_message,
                    kind == SocketKind::Sub,
                )),
            ),
        ),
    }
}

/// Largest CURVE command frame accepted from a peer: one boxed frame of
/// the largest message, its box overhead, and room for a command name.
pub(super) fn curve_wire_limit(limits: ScanLimits) -> u64 {
    limits.max_message.max(limits.max_command) + MESSAGE_OVERHEAD as u64 + 16
}

async fn connect_and_handshake(
    remote: &Endpoint,
    hello: &[u8],
    kind: SocketKind,
    curve: Option<&CurveConfig>,
) -> io::Result<(Stream, Option<Session>)> {
    let Some(curve) = curve else {
        let mut s = Stream::connect(remote).await?;
        match &mut s {
            Stream::Tcp(t) => {
                let (r, w) = t.split();
                handshake_on(r, w, hello, kind).await?
            }
            Stream::Unix(u) => {
                let (r, w) = u.split();
                handshake_on(r, w, hello, kind).await?
            }
        }
        return Ok((s, None));
    };
    // Every server key accepted now, in order: during a rotation the old
    // and the new one both work.
    let keys = curve.server_keys();
    if keys.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "CURVE connect with no server key configured (CurveConfig::server_key)",
        ));
    }
    let identity = handshake_identity(hello);
    let mut last = None;
    for key in &keys {
        let mut s = Stream::connect(remote).await?;
        let result = match &mut s {
            Stream::Tcp(t) => {
                let (mut r, mut w) = t.split();
                client_handshake(&mut r, &mut w, curve, key, kind, identity.clone()).await
            }
            Stream::Unix(u) => {
                let (mut r, mut w) = u.split();
                client_handshake(&mut r, &mut w, curve, key, kind, identity.clone()).await
            }
        };
        match result {
            Ok(session) => return Ok((s, Some(session))),
            Err(refusal) => {
                refusal.record("connect", remote);
                last = Some(refusal.why);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        last.unwrap_or_default(),
    ))
}

async fn handshake_on<R, W>(mut r: R, mut w: W, hello: &[u8], kind: SocketKind) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    w.write_all(hello).await?;
    let (_, peer_type) = match read_handshake(&mut r).await {
        Ok(hs) => hs,
        Err(e) => {
            if let Some(g) = e.get_ref().and_then(|i| i.downcast_ref::<GreetingError>()) {
                telemetry::disconnected(g.reason());
                tracing::warn!(error = %g, "link: remote refused (its greeting)");
            } else if e.kind() == io::ErrorKind::InvalidData {
                // A first command that is not READY, or too large.
                telemetry::disconnected(telemetry::DisconnectReason::BadHandshake);
                tracing::warn!(error = %e, "link: remote's handshake is broken");
            }
            return Err(e);
        }
    };
    match peer_type {
        Some(t) if !kind.accepts(&t) => {
            telemetry::disconnected(telemetry::DisconnectReason::BadHandshake);
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "peer is a {t} socket, not compatible with {}",
                    kind.zmtp_name()
                ),
            ))
        }
        _ => Ok(()),
    }
}

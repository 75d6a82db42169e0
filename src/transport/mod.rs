//! Transports: zfabric's own inproc path, and ipc/tcp over the `zeromq`
//! crate behind zfabric's guard relay.
//!
//! A socket's endpoints are either all inproc or all ipc/tcp (any mix of
//! those two). Patterns see one seam, written once per transport:
//! - [`Outbound`]: send an envelope to one peer (round-robin) or to every
//!   peer under a routing prefix (fan-out), wait until connected, link
//!   states, link loss;
//! - [`Inbound`]: the next envelope with its prefix and where its reply
//!   goes ([`ReplyTo`]); [`ReplySender`] is the way back.
//!
//! Layout: `outbound`/`inbound` (the seam); [`inproc`] (the in-process
//! engine: queues, registry, batching backlog); [`guard`] (the relay in
//! front of every `zeromq` socket: listener, connector, relay pumps, and
//! the private ipc hop between socket and guard); [`zmtp`] (greeting,
//! handshake, security mechanism); `scan` (frame limits before bytes are
//! read); [`batch`] (adaptive batching in front of a `zeromq` send socket).
//!
//! Guarantees: those each module states. Not here: any pattern's rules
//! (sequence numbers, correlation, deadlines), which live in `messaging`.

pub(crate) mod batch;
pub(crate) mod curve;
pub(crate) mod fanout;
pub(crate) mod guard;
mod inbound;
pub(crate) mod inproc;
mod outbound;
pub(crate) mod scan;
pub(crate) mod zmtp;

pub(crate) use inbound::{Arrival, Inbound, ReplySender, ReplyTo};
pub(crate) use outbound::Outbound;

use std::sync::Arc;

pub use guard::{remove_private_dir, LinkState};

use crate::config::SocketConfig;
use crate::endpoint::Endpoint;
use crate::error::{BindError, ConnectError, OpenError};
use guard::{GuardedListener, Link, PrivateIpc};
use inproc::{Family, RecvLink, Registration, SenderCore};
use zmtp::SocketKind;

/// A `zeromq` socket (which has no `Debug`) inside zfabric's types.
pub(crate) struct Zmq<T>(pub(crate) T);

impl<T> std::fmt::Debug for Zmq<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::any::type_name::<T>())
    }
}

impl<T> std::ops::Deref for Zmq<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Zmq<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Receives the next message from a `zeromq` socket. The crate reports a
/// single peer's failure (a broken connection, a codec error) as an error
/// of `recv` while the socket stays usable: those are counted and skipped.
/// `None` means the socket itself is finished.
pub(crate) async fn zmq_recv<S: zeromq::SocketRecv>(sock: &mut S) -> Option<zeromq::ZmqMessage> {
    loop {
        match sock.recv().await {
            Ok(m) => return Some(m),
            Err(zeromq::ZmqError::NoMessage) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "a peer of a zeromq socket failed");
                crate::telemetry::disconnected(crate::telemetry::DisconnectReason::PeerError);
            }
        }
    }
}

/// Decodes a message received on a `zeromq` socket: a one-frame routing
/// prefix (a topic or a peer identity) when `prefixed`, then envelope pairs.
/// A malformed message is dropped, counted by reason and logged; `None`
/// then. The prefix is empty when not `prefixed`. A prefixed message
/// without even its prefix frame is `malformed`; one whose frames after
/// the prefix are not header/body pairs (none, or an odd number: a topic
/// alone, a topic and a header) is `bad_frame_count`, as it is without a
/// prefix.
pub(crate) fn decode_received(
    msg: zeromq::ZmqMessage,
    prefixed: bool,
    limits: &crate::wire::Limits,
    socket: &'static str,
) -> Option<(bytes::Bytes, Vec<crate::wire::Envelope>)> {
    let mut frames = msg.into_vec();
    let prefix = if prefixed {
        if frames.is_empty() {
            crate::telemetry::dropped(crate::telemetry::DropReason::Malformed, 1);
            return None;
        }
        let rest = frames.split_off(1);
        std::mem::replace(&mut frames, rest)
            .pop()
            .unwrap_or_default()
    } else {
        bytes::Bytes::new()
    };
    match crate::wire::decode_pairs(&frames, limits) {
        Ok(envs) => Some((prefix, envs)),
        Err(e) => {
            tracing::debug!(error = %e, socket, "dropped a malformed message");
            crate::telemetry::dropped(e.reason(), 1);
            None
        }
    }
}

/// The parsed endpoints of one socket.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) binds: Vec<Endpoint>,
    pub(crate) connects: Vec<Endpoint>,
    pub(crate) inproc: bool,
}

impl Plan {
    /// The `transport` label of the socket's traffic counters: `inproc`,
    /// else the transport of its first endpoint (connected, else bound).
    pub(crate) fn transport(&self) -> &'static str {
        if self.inproc {
            return "inproc";
        }
        self.connects
            .first()
            .or(self.binds.first())
            .map_or("tcp", Endpoint::transport)
    }

    /// The socket's name in its trace spans: the first endpoint it
    /// connects to, else the first it binds.
    pub(crate) fn name(&self) -> std::sync::Arc<str> {
        self.connects
            .first()
            .or(self.binds.first())
            .map(|e| std::sync::Arc::from(e.to_string()))
            .unwrap_or_else(|| std::sync::Arc::from(""))
    }
}

pub(crate) fn plan(binds: &[String], connects: &[String]) -> Result<Plan, OpenError> {
    let binds = binds
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<Endpoint>, _>>()?;
    let connects = connects
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<Endpoint>, _>>()?;
    let mut all = binds.iter().chain(connects.iter());
    let first = all.next().ok_or(OpenError::NoEndpoint)?;
    let inproc = first.is_inproc();
    if let Some(other) = all.find(|e| e.is_inproc() != inproc) {
        return Err(OpenError::MixedTransports(other.clone()));
    }
    Ok(Plan {
        binds,
        connects,
        inproc,
    })
}

/// The ipc/tcp machinery of one `zeromq` socket: the private path it binds,
/// the guarded listeners in front of it and its outgoing links.
#[derive(Debug, Default)]
pub(crate) struct ZmqSide {
    /// The private ipc endpoint the `zeromq` socket binds, if it binds
    /// (the socket removes the file itself when it closes).
    private: Option<PrivateIpc>,
    /// Bytes the relays have taken off the socket (drives batching).
    pub(crate) progress: Arc<batch::Progress>,
    _listeners: Vec<GuardedListener>,
    links: Vec<Link>,
}

impl ZmqSide {
    /// Waits until every outgoing link has completed its handshake.
    pub(crate) async fn wait_connected(&self) {
        for l in &self.links {
            let mut rx = l.state.clone();
            let _ = rx.wait_for(|s| *s == LinkState::Connected).await;
        }
    }

    /// For a socket with exactly one outgoing link: resolves when that link
    /// is lost, once it is (or has come) up. A message queued while the link
    /// is down goes out when it comes back, so only a loss after that counts.
    /// Never resolves for sockets with several links (one going down says
    /// nothing about a given message).
    pub(crate) async fn link_lost(&self) {
        let [link] = self.links.as_slice() else {
            return std::future::pending().await;
        };
        let mut rx = link.state.clone();
        if rx.wait_for(|s| *s == LinkState::Connected).await.is_err()
            || rx.wait_for(|s| *s != LinkState::Connected).await.is_err()
        {
            std::future::pending::<()>().await;
        }
    }

    /// Current state of each outgoing link.
    pub(crate) fn link_states(&self) -> Vec<(Endpoint, LinkState)> {
        self.links
            .iter()
            .map(|l| (l.remote.clone(), *l.state.borrow()))
            .collect()
    }
}

/// Creates a `zeromq` socket of type `S` and binds and connects it through
/// guards. Returns the socket, the machinery to keep alive and the resolved
/// bind endpoints.
pub(crate) async fn open_socket<S: zeromq::Socket>(
    plan: &Plan,
    kind: SocketKind,
    cfg: &SocketConfig,
) -> Result<(S, ZmqSide, Vec<Endpoint>), OpenError> {
    let mut sock = S::new();
    let (side, eps) = open_zmq(&mut sock, plan, kind, cfg).await?;
    Ok((sock, side, eps))
}

/// Binds and connects a `zeromq` socket through guards. Returns the
/// machinery to keep alive and the resolved bind endpoints.
pub(crate) async fn open_zmq<S: zeromq::Socket>(
    sock: &mut S,
    plan: &Plan,
    kind: SocketKind,
    cfg: &SocketConfig,
) -> Result<(ZmqSide, Vec<Endpoint>), OpenError> {
    let mut side = ZmqSide::default();
    let mut resolved = Vec::new();
    if !plan.binds.is_empty() {
        let private = guard::private_path().map_err(|source| BindError::Io {
            endpoint: plan.binds[0].clone(),
            source,
        })?;
        sock.bind(&private.zmq_endpoint())
            .await
            .map_err(|e| BindError::Zmq(e.to_string()))?;
        side.private = Some(private.clone());
        for ep in &plan.binds {
            let l = guard::bind_guarded(ep, &private, kind, cfg, side.progress.clone()).await?;
            resolved.push(l.endpoint.clone());
            side._listeners.push(l);
        }
    }
    // Each outgoing link relays the socket's bytes to one peer.
    side.progress.add_peers(plan.connects.len());
    for ep in &plan.connects {
        let (link, path) = guard::connect_guarded(ep.clone(), kind, cfg, side.progress.clone())
            .await
            .map_err(|source| ConnectError::Io {
                endpoint: ep.clone(),
                source,
            })?;
        sock.connect(&path.zmq_endpoint())
            .await
            .map_err(|e| ConnectError::Zmq(e.to_string()))?;
        side.links.push(link);
    }
    Ok((side, resolved))
}

/// Which side of the pattern an inproc socket is.
pub(crate) enum InprocRole<'a> {
    Sender(&'a Arc<SenderCore>),
    Receiver(&'a Arc<RecvLink>),
}

/// Registers an inproc socket under its names. Returns the registrations
/// to keep alive and the bound endpoints.
pub(crate) fn open_inproc(
    plan: &Plan,
    family: Family,
    role: InprocRole<'_>,
) -> Result<(Vec<Registration>, Vec<Endpoint>), OpenError> {
    let mut regs = Vec::new();
    let mut resolved = Vec::new();
    for ep in &plan.binds {
        let Endpoint::Inproc(name) = ep else {
            return Err(OpenError::MixedTransports(ep.clone()));
        };
        let b = match &role {
            InprocRole::Sender(c) => inproc::bind_sender(family, name, c),
            InprocRole::Receiver(l) => inproc::bind_receiver(family, name, l),
        }
        .map_err(|_| BindError::AddrInUse(ep.clone()))?;
        regs.push(Registration::Bound(b));
        resolved.push(ep.clone());
    }
    for ep in &plan.connects {
        let Endpoint::Inproc(name) = ep else {
            return Err(OpenError::MixedTransports(ep.clone()));
        };
        regs.push(Registration::Connected(match &role {
            InprocRole::Sender(c) => inproc::connect_sender(family, name, c),
            InprocRole::Receiver(l) => inproc::connect_receiver(family, name, l),
        }));
    }
    Ok((regs, resolved))
}

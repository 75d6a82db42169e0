//! The inbound side of a socket, written once per transport: receive the
//! next envelope with its routing prefix (topic or peer identity) and
//! where its reply goes; and [`ReplySender`], the way back.
//!
//! # Guarantees
//! - [`Inbound::recv`] is cancel-safe: an envelope is handed out only when
//!   the future resolves; a batch of envelopes in one `zeromq` message is
//!   kept and handed out one by one, in order, without copying.
//! - A malformed `zeromq` message is dropped, counted by reason and logged
//!   (see [`decode_received`]); a failing peer is
//!   counted and skipped while the socket stays usable.
//!
//! # Not guaranteed
//! Which kinds of message a socket accepts, gap detection and correlation
//! are the patterns' rules, not this module's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::oneshot;
use zeromq::{SocketRecv, SocketSend, ZmqMessage};

use super::batch::{wire_len, Progress};
use super::inproc::{self, Family, InprocRx, Registration};
use super::{decode_received, open_inproc, zmq_recv, InprocRole, Plan, Zmq, ZmqSide};
use crate::endpoint::Endpoint;
use crate::error::OpenError;
use crate::telemetry;
use crate::wire::{self, Envelope, Limits};

/// Where the reply to a received envelope goes.
#[derive(Debug)]
pub(crate) enum ReplyTo {
    /// Nowhere: the envelope came without a reply path.
    Nowhere,
    /// Straight to the waiting caller (inproc).
    Caller(oneshot::Sender<Envelope>),
    /// Back over the connection to the peer with this identity (ipc/tcp,
    /// at a ROUTER).
    Peer(Bytes),
}

/// One received envelope.
#[derive(Debug)]
pub(crate) struct Arrival {
    /// The routing prefix: a topic (pub/sub), a peer identity (router) or
    /// empty.
    pub(crate) prefix: Bytes,
    /// The envelope.
    pub(crate) env: Envelope,
    /// Where its reply goes.
    pub(crate) reply: ReplyTo,
}

/// A socket's receiving side over one transport.
pub(crate) struct Inbound<S> {
    path: Path<S>,
}

impl<S> std::fmt::Debug for Inbound<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Path::Inproc { rx, .. } => f
                .debug_struct("Inbound::Inproc")
                .field("rx", rx)
                .finish_non_exhaustive(),
            Path::Zmq {
                sock, side, socket, ..
            } => f
                .debug_struct("Inbound::Zmq")
                .field("sock", sock)
                .field("side", side)
                .field("socket", socket)
                .finish_non_exhaustive(),
        }
    }
}

enum Path<S> {
    Inproc {
        rx: InprocRx,
        _regs: Vec<Registration>,
    },
    Zmq {
        sock: Zmq<S>,
        side: ZmqSide,
        /// Whether messages start with a one-frame prefix.
        prefixed: bool,
        /// Whether the prefix is a peer identity to reply to.
        routed: bool,
        limits: Limits,
        socket: &'static str,
        /// The prefix of the message being handed out.
        prefix: Bytes,
        /// Its envelopes not yet handed out.
        rest: std::vec::IntoIter<Envelope>,
    },
}

impl<S> Inbound<S> {
    /// The inproc queue behind this side, if it is inproc: a pattern's
    /// hot receive path reads the engine's messages through it without
    /// rebuilding each one as an [`Arrival`] (measured: ~140 instructions
    /// of `memcpy` per message; docs/BENCH.md).
    pub(crate) fn inproc_queue(&mut self) -> Option<&mut InprocRx> {
        match &mut self.path {
            Path::Inproc { rx, .. } => Some(rx),
            Path::Zmq { .. } => None,
        }
    }

    /// Registers an inproc receiving socket with an inbox of `capacity`
    /// messages under the plan's names. `subs` are its subscription
    /// prefixes (pub/sub only).
    pub(crate) fn inproc(
        plan: &Plan,
        family: Family,
        capacity: usize,
        subs: Option<Arc<RwLock<Vec<Bytes>>>>,
    ) -> Result<(Self, Vec<Endpoint>), OpenError> {
        let (link, rx) = inproc::inbox(capacity, subs);
        let (regs, eps) = open_inproc(plan, family, InprocRole::Receiver(&link))?;
        let path = Path::Inproc { rx, _regs: regs };
        Ok((Inbound { path }, eps))
    }

    /// A `zeromq` socket (or receive half). With `prefixed`, each message
    /// starts with a one-frame prefix, which is the peer to reply to when
    /// `routed`. `socket` names the socket in logs.
    pub(crate) fn zmq(
        sock: S,
        side: ZmqSide,
        prefixed: bool,
        routed: bool,
        limits: Limits,
        socket: &'static str,
    ) -> Self {
        Inbound {
            path: Path::Zmq {
                sock: Zmq(sock),
                side,
                prefixed,
                routed,
                limits,
                socket,
                prefix: Bytes::new(),
                rest: Vec::new().into_iter(),
            },
        }
    }

    /// The underlying `zeromq` socket (to change its subscriptions);
    /// `None` over inproc.
    pub(crate) fn zmq_socket(&mut self) -> Option<&mut S> {
        match &mut self.path {
            Path::Zmq { sock, .. } => Some(&mut sock.0),
            Path::Inproc { .. } => None,
        }
    }

    /// Waits until every outgoing link is up (at once for inproc and
    /// bind-only sockets).
    pub(crate) async fn wait_connected(&self) {
        if let Path::Zmq { side, .. } = &self.path {
            side.wait_connected().await;
        }
    }

    /// The next envelope already received with an earlier one (the rest of
    /// a batch), without waiting.
    pub(crate) fn next_buffered(&mut self) -> Option<Arrival> {
        match &mut self.path {
            Path::Zmq {
                routed,
                prefix,
                rest,
                ..
            } => rest.next().map(|env| {
                // A routed prefix is the way back, not part of the message.
                let (prefix, reply) = if *routed {
                    (Bytes::new(), ReplyTo::Peer(prefix.clone()))
                } else {
                    (prefix.clone(), ReplyTo::Nowhere)
                };
                Arrival { prefix, env, reply }
            }),
            Path::Inproc { .. } => None,
        }
    }
}

impl<S: SocketRecv + Send> Inbound<S> {
    /// The next envelope; `None` once the socket is finished. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<Arrival> {
        loop {
            if let Some(a) = self.next_buffered() {
                return Some(a);
            }
            match &mut self.path {
                Path::Inproc { rx, .. } => {
                    let m = rx.recv().await?;
                    return Some(Arrival {
                        prefix: m.topic,
                        env: m.env,
                        reply: m.reply.map_or(ReplyTo::Nowhere, ReplyTo::Caller),
                    });
                }
                Path::Zmq {
                    sock,
                    prefixed,
                    limits,
                    socket,
                    prefix,
                    rest,
                    ..
                } => {
                    let msg = zmq_recv(&mut sock.0).await?;
                    if let Some((p, envs)) = decode_received(msg, *prefixed, limits, socket) {
                        *prefix = p;
                        *rest = envs.into_iter();
                    }
                }
            }
        }
    }
}

/// The way back from a receiving socket to the peers it received from
/// (a server's replies).
pub(crate) enum ReplySender<S> {
    /// Inproc replies go through each request's own reply path.
    Inproc,
    /// The send half of a `zeromq` ROUTER: replies carry the peer identity
    /// as their routing prefix.
    Zmq {
        send: tokio::sync::Mutex<Zmq<S>>,
        /// Reply bytes handed to the socket, against what the relays took
        /// (for the linger at shutdown).
        handed: AtomicU64,
        progress: Arc<Progress>,
    },
}

impl<S> std::fmt::Debug for ReplySender<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplySender::Inproc => f.write_str("ReplySender::Inproc"),
            ReplySender::Zmq { send, handed, .. } => f
                .debug_struct("ReplySender::Zmq")
                .field("send", send)
                .field("handed", handed)
                .finish_non_exhaustive(),
        }
    }
}

impl<S> ReplySender<S> {
    /// The reply side of a `zeromq` socket whose relays report to
    /// `progress`.
    pub(crate) fn zmq(send: S, progress: Arc<Progress>) -> Self {
        ReplySender::Zmq {
            send: tokio::sync::Mutex::new(Zmq(send)),
            handed: AtomicU64::new(0),
            progress,
        }
    }

    /// Waits until every reply handed to the socket has left for the
    /// network.
    pub(crate) async fn linger(&self) {
        if let ReplySender::Zmq {
            handed, progress, ..
        } = self
        {
            progress.wait_relayed(handed.load(Ordering::Relaxed)).await;
        }
    }
}

impl<S: SocketSend + Send> ReplySender<S> {
    /// Sends `env` to `to`. A reply nobody waits for any more is counted
    /// (`late_reply`), one without a way back too (`no_peer`).
    pub(crate) async fn send(&self, to: ReplyTo, env: Envelope) {
        match (self, to) {
            (_, ReplyTo::Caller(reply)) => {
                if reply.send(env).is_err() {
                    telemetry::dropped(telemetry::DropReason::LateReply, 1);
                }
            }
            (ReplySender::Zmq { send, handed, .. }, ReplyTo::Peer(identity)) => {
                let header = wire::encode_header(&env.header);
                handed.fetch_add(
                    wire_len(header.len()) + wire_len(env.body.len()),
                    Ordering::Relaxed,
                );
                let frames = vec![identity, header, env.body];
                let Ok(msg) = ZmqMessage::try_from(frames) else {
                    return;
                };
                if send.lock().await.send(msg).await.is_err() {
                    telemetry::dropped(telemetry::DropReason::NoPeer, 1);
                }
            }
            (_, ReplyTo::Peer(_) | ReplyTo::Nowhere) => {
                telemetry::dropped(telemetry::DropReason::NoPeer, 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::transport::{plan, Outbound};
    use crate::wire::{Header, Kind, MessageId};

    type Never = zeromq::PullSocket;
    type NeverOut = zeromq::PushSocket;

    fn env(n: u64) -> Envelope {
        Envelope {
            header: Header::new(Kind::Event, MessageId(n as u128), 1, n),
            body: Bytes::from(n.to_be_bytes().to_vec()),
        }
    }

    #[tokio::test]
    async fn an_inproc_send_arrives_with_its_reply_path_and_unchanged_body() {
        let name = "inproc://seam-send-one".to_string();
        let (mut rx, _) = Inbound::<Never>::inproc(
            &plan(std::slice::from_ref(&name), &[]).unwrap(),
            Family::ReqRep,
            4,
            None,
        )
        .unwrap();
        let (out, _) =
            Outbound::<NeverOut>::inproc(&plan(&[], &[name]).unwrap(), Family::ReqRep).unwrap();
        assert!(out.carries_reply_path());
        let sent = env(7);
        let body_at = sent.body.as_ptr();
        let (tx, reply) = oneshot::channel();
        out.send_one(sent, Some(tx)).await.unwrap();
        let a = rx.recv().await.unwrap();
        assert!(a.prefix.is_empty());
        assert_eq!(a.env.body.as_ptr(), body_at, "moved, not copied");
        let ReplyTo::Caller(back) = a.reply else {
            panic!("an inproc request carries its reply path");
        };
        ReplySender::<NeverOut>::Inproc
            .send(ReplyTo::Caller(back), env(8))
            .await;
        assert_eq!(reply.await.unwrap().header.seq, 8);
    }

    #[tokio::test]
    async fn an_inproc_fan_out_reaches_only_matching_prefixes_in_stamp_order() {
        let name = "inproc://seam-fan-out".to_string();
        let subs = Arc::new(RwLock::new(vec![Bytes::from_static(b"a.")]));
        let (mut rx, _) = Inbound::<Never>::inproc(
            &plan(std::slice::from_ref(&name), &[]).unwrap(),
            Family::PubSub,
            16,
            Some(subs),
        )
        .unwrap();
        let (out, _) =
            Outbound::<NeverOut>::inproc(&plan(&[], &[name]).unwrap(), Family::PubSub).unwrap();
        let order = Mutex::new(0u64);
        for topic in ["a.x", "b.y", "a.z"] {
            let stamp = |n: &mut u64| {
                *n += 1;
                env(*n).header
            };
            out.fan_out(
                topic.as_bytes(),
                Bytes::new(),
                &order,
                stamp,
                &crate::transport::fanout::Audience::default(),
            )
            .await
            .unwrap();
        }
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        assert_eq!((&first.prefix[..], first.env.header.seq), (&b"a.x"[..], 1));
        assert_eq!(
            (&second.prefix[..], second.env.header.seq),
            (&b"a.z"[..], 3)
        );
        assert!(matches!(first.reply, ReplyTo::Nowhere));
        assert!(rx.next_buffered().is_none());
    }
}

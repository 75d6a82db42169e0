//! The outbound side of a socket, written once per transport: send
//! envelopes (to one peer round-robin, or to every peer whose subscription
//! matches a routing prefix), wait until connected, report link states and
//! link loss.
//!
//! # Guarantees
//! - One enum dispatch per send, no extra task, channel or allocation per
//!   message beyond what the transport itself needs: inproc moves the
//!   envelope into a peer's queue; ipc/tcp hands `header, body` frames to
//!   the `zeromq` socket (through the [`Batcher`] for round-robin sends).
//! - [`Outbound::fan_out`] (inproc) stamps each message's header while
//!   holding the fan-out lock, so a pattern's per-topic sequence numbers
//!   leave in order. An ipc/tcp publisher fans out through
//!   [`FanBatcher`](super::batch::FanBatcher) instead, which keeps the
//!   same order.
//!
//! # Not guaranteed
//! Nothing about delivery: the full-queue policy is the transport's
//! (round-robin waits, fan-out drops for a full inproc subscriber and is
//! counted). Which header a message carries
//! and what a reply means are the patterns' business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use zeromq::SocketSend;

use super::batch::{Batcher, Flushed};
use super::inproc::{self, Family, InMsg, Item, Registration, RoundRobin, SenderCore};
use super::{open_inproc, InprocRole, LinkState, Plan, ZmqSide};
use crate::endpoint::Endpoint;
use crate::error::{OpenError, SendError};
use crate::telemetry;
use crate::transport::fanout::Audience;
use crate::wire::{self, Envelope, Header};

/// A socket's sending side over one transport.
pub(crate) struct Outbound<S> {
    path: Path<S>,
}

impl<S> std::fmt::Debug for Outbound<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Path::Inproc { family, .. } => f
                .debug_struct("Outbound::Inproc")
                .field("family", family)
                .finish_non_exhaustive(),
            Path::Batched { send, side } => f
                .debug_struct("Outbound::Batched")
                .field("send", send)
                .field("side", side)
                .finish(),
        }
    }
}

enum Path<S> {
    /// zfabric's in-process engine: envelopes move as values.
    Inproc {
        core: Arc<SenderCore>,
        _regs: Vec<Registration>,
        family: Family,
        /// Names whose link state is reported (request clients only, as
        /// before the seam existed: other patterns report none).
        reported: Vec<Endpoint>,
        /// Fan-out sends so far (a turn is given to others every 64).
        sent: AtomicU64,
    },
    /// A `zeromq` send socket behind the adaptive batcher (round-robin
    /// sends, no prefix).
    Batched {
        send: Arc<Batcher<S>>,
        side: ZmqSide,
    },
}

impl<S> Outbound<S> {
    /// The inproc engine behind this side, if it is inproc. A pattern's
    /// hot send path awaits the engine's own future through it, so the
    /// inproc send carries no future of the `zeromq` paths (measured:
    /// one `async` level more costs ~60 instructions of `memcpy` per
    /// message; docs/BENCH.md).
    pub(crate) fn inproc_engine(&self) -> Option<&SenderCore> {
        match &self.path {
            Path::Inproc { core, .. } => Some(core),
            _ => None,
        }
    }

    /// Registers an inproc sending socket under the plan's names.
    pub(crate) fn inproc(plan: &Plan, family: Family) -> Result<(Self, Vec<Endpoint>), OpenError> {
        let core = Arc::new(SenderCore::default());
        let (regs, eps) = open_inproc(plan, family, InprocRole::Sender(&core))?;
        let reported = if family == Family::ReqRep {
            plan.connects.clone()
        } else {
            Vec::new()
        };
        let path = Path::Inproc {
            core,
            _regs: regs,
            family,
            reported,
            sent: AtomicU64::new(0),
        };
        Ok((Outbound { path }, eps))
    }

    /// Inproc receivers attached now (0 for `zeromq` sockets).
    pub(crate) fn receivers(&self) -> usize {
        match &self.path {
            Path::Inproc { core, .. } => core
                .links
                .read()
                .map_or(0, |l| l.iter().filter(|x| !x.tx.is_closed()).count()),
            _ => 0,
        }
    }

    /// Waits until at least `n` inproc receivers are attached (at once
    /// for `zeromq` sockets).
    pub(crate) async fn wait_receivers(&self, n: usize) {
        let Path::Inproc { core, .. } = &self.path else {
            return;
        };
        loop {
            let attached = core.attached.notified();
            tokio::pin!(attached);
            attached.as_mut().enable();
            if self.receivers() >= n {
                return;
            }
            attached.await;
        }
    }

    /// Whether a request's reply path travels with the message (inproc)
    /// rather than back over the connection (ipc/tcp, matched by
    /// correlation id).
    pub(crate) fn carries_reply_path(&self) -> bool {
        matches!(self.path, Path::Inproc { .. })
    }

    fn side(&self) -> Option<&ZmqSide> {
        match &self.path {
            Path::Inproc { .. } => None,
            Path::Batched { side, .. } => Some(side),
        }
    }

    /// Waits until every outgoing link is up (at once for inproc and
    /// bind-only sockets).
    pub(crate) async fn wait_connected(&self) {
        if let Some(side) = self.side() {
            side.wait_connected().await;
        }
    }

    /// With exactly one outgoing `zeromq` link: resolves when it is lost
    /// after having been up. Never resolves otherwise (inproc reports a
    /// lost peer by dropping the reply path instead).
    pub(crate) async fn link_lost(&self) {
        match self.side() {
            Some(side) => side.link_lost().await,
            None => std::future::pending().await,
        }
    }

    /// The state of each outgoing link. Over inproc, a connected name whose
    /// binder is gone waits for a new one: it is reported as reconnecting.
    pub(crate) fn link_states(&self) -> Vec<(Endpoint, LinkState)> {
        match &self.path {
            Path::Inproc {
                family, reported, ..
            } => reported
                .iter()
                .map(|ep| {
                    let up = inproc::is_bound(*family, ep.inproc_name().unwrap_or_default());
                    let state = if up {
                        LinkState::Connected
                    } else {
                        LinkState::Reconnecting
                    };
                    (ep.clone(), state)
                })
                .collect(),
            Path::Batched { side, .. } => side.link_states(),
        }
    }
}

impl<S: SocketSend + Send + 'static> Outbound<S> {
    /// A `zeromq` send socket behind the adaptive batcher, with a queue of
    /// `capacity` envelopes.
    pub(crate) fn batched(send: S, side: ZmqSide, capacity: usize) -> Self {
        let send = Batcher::new(send, side.progress.clone(), capacity);
        Outbound {
            path: Path::Batched { send, side },
        }
    }

    /// Waits, at most `limit`, until what was sent has left the socket
    /// (see [`Batcher::linger`]); `None` for inproc, where a send is in the
    /// receiver's queue once it returns.
    pub(crate) async fn flush(&self, limit: std::time::Duration) -> Option<Flushed> {
        match &self.path {
            Path::Inproc { .. } => None,
            Path::Batched { send, .. } => Some(send.linger(limit).await),
        }
    }

    /// Sends one envelope to one peer (round-robin; waits for room, and
    /// over inproc for a peer to attach). `reply` is the inproc reply path
    /// of a request; it is dropped over ipc/tcp, where the reply comes back
    /// over the connection.
    pub(crate) async fn send_one(
        &self,
        env: Envelope,
        reply: Option<oneshot::Sender<Envelope>>,
    ) -> Result<(), SendError> {
        match &self.path {
            Path::Inproc { core, .. } => {
                let msg = InMsg {
                    topic: Bytes::new(),
                    env,
                    reply,
                };
                match core.send_round_robin(msg, true).await {
                    RoundRobin::Sent => Ok(()),
                    RoundRobin::NoPeer => Err(SendError::NoPeer),
                }
            }
            Path::Batched { send, .. } => {
                send.send(wire::encode_header(&env.header), env.body).await
            }
        }
    }

    /// Sends `body` under the routing prefix `topic` to every peer whose
    /// subscription matches. `stamp` makes the header; it runs under
    /// `order` while the transport's send order is held, so what it numbers
    /// leaves in that order. Never waits for a slow peer.
    pub(crate) async fn fan_out<G>(
        &self,
        topic: &[u8],
        body: Bytes,
        order: &Mutex<G>,
        stamp: impl FnOnce(&mut G) -> Header,
        audience: &Audience,
    ) -> Result<(), SendError> {
        match &self.path {
            Path::Inproc { core, sent, .. } => {
                // The guards live in this block only: the future stays Send.
                // `order` stays held across the sends: they are what it orders.
                let closed = {
                    let mut ordered = order.lock().map_err(|_| SendError::Closed)?;
                    let header = stamp(&mut ordered);
                    let topic = Bytes::copy_from_slice(topic);
                    let env = Envelope { header, body };
                    let mut closed = false;
                    let (mut matched, mut written, mut full) = (0, 0, 0);
                    let links = core.links.read().map_err(|_| SendError::Closed)?;
                    for link in links.iter() {
                        if !link.matches(&topic) {
                            continue;
                        }
                        matched += 1;
                        let msg = InMsg {
                            topic: topic.clone(),
                            env: env.clone(),
                            reply: None,
                        };
                        match link.tx.try_send(Item::One(msg)) {
                            Ok(()) => written += 1,
                            Err(mpsc::error::TrySendError::Full(_)) => full += 1,
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                matched -= 1;
                                closed = true
                            }
                        }
                    }
                    audience.owe(matched);
                    audience.written(written);
                    audience.dropped(telemetry::DropReason::SubscriberQueueFull, full);
                    closed
                };
                if closed {
                    core.prune();
                }
                // An inproc fan-out never waits; give receivers on the
                // same runtime a turn now and then so that a burst does
                // not overrun their queues before they can run.
                if sent.fetch_add(1, Ordering::Relaxed) % 64 == 63 {
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
            Path::Batched { .. } => {
                unreachable!("ipc/tcp publishers send through batch::FanBatcher, never here")
            }
        }
    }
}

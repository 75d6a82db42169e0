//! zfabric's in-process transport.
//!
//! Envelopes move between sockets as values over bounded tokio channels:
//! the header is never serialised and the body is a reference-counted
//! `Bytes`. There are no syscalls on the data path.
//!
//! Every pattern has a *sending* side (publisher, pusher, client) and a
//! *receiving* side (subscriber, puller, server). The sending side holds
//! links to the receivers' inboxes; either side may bind a name and the
//! other connect to it, in any order: a connection to a name that is not
//! bound yet waits, and is attached when the name is bound. When a bound
//! socket is dropped its connectors stay registered and are attached again
//! to the next socket that binds the name (the inproc form of reconnect).
//!
//! Each inbox is a bounded queue of `SocketConfig::queue_capacity`
//! messages; what happens when it is full is the pattern's policy.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{mpsc, Notify};

use crate::wire::Envelope;

/// One message in flight between inproc sockets.
#[derive(Debug)]
pub(crate) struct InMsg {
    /// Topic (pub/sub) or empty.
    pub(crate) topic: Bytes,
    /// The envelope.
    pub(crate) env: Envelope,
    /// Where the reply goes (requests only): the waiting caller itself.
    pub(crate) reply: Option<tokio::sync::oneshot::Sender<Envelope>>,
}

/// What travels through an inproc queue: one message, or a batch formed
/// while the receiver was backed up.
///
/// `One` is as large as an envelope on purpose: boxing it would cost an
/// allocation per message on the hot path.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Item {
    One(InMsg),
    Many(Vec<InMsg>),
}

/// Creates a receiver's inbox of `capacity` queue slots.
pub(crate) fn inbox(
    capacity: usize,
    subs: Option<Arc<RwLock<Vec<Bytes>>>>,
) -> (Arc<RecvLink>, InprocRx) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let link = Arc::new(RecvLink {
        tx,
        subs,
        backlog: Mutex::new(Backlog::default()),
        backlogged: AtomicBool::new(false),
        space: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        link,
        InprocRx {
            rx,
            buf: VecDeque::new(),
        },
    )
}

/// The receiving end of an inbox; unpacks batches.
#[derive(Debug)]
pub(crate) struct InprocRx {
    rx: mpsc::Receiver<Item>,
    buf: VecDeque<InMsg>,
}

impl InprocRx {
    /// The next message, or `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<InMsg> {
        loop {
            if let Some(m) = self.buf.pop_front() {
                return Some(m);
            }
            match self.rx.recv().await? {
                Item::One(m) => return Some(m),
                Item::Many(v) => self.buf.extend(v),
            }
        }
    }
}

/// A receiver's inbox as seen by a sender.
///
/// When the queue is full, round-robin senders park messages in a bounded
/// backlog (up to the queue's capacity) that a flusher task delivers as one
/// batch as soon as a slot frees: the receiver then pays one queue
/// operation for many messages. No sender bypasses a non-empty backlog, so
/// order per sender is kept.
#[derive(Debug)]
pub(crate) struct RecvLink {
    pub(crate) tx: mpsc::Sender<Item>,
    /// Subscription prefixes (pub/sub only; empty list = nothing matches).
    pub(crate) subs: Option<Arc<RwLock<Vec<Bytes>>>>,
    backlog: Mutex<Backlog>,
    backlogged: AtomicBool,
    space: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Backlog {
    msgs: Vec<InMsg>,
    flushing: bool,
}

/// Outcome of parking a message in a backlog.
enum Park {
    Parked,
    Full(InMsg),
    Closed(InMsg),
}

impl RecvLink {
    pub(crate) fn matches(&self, topic: &[u8]) -> bool {
        match &self.subs {
            None => true,
            Some(s) => s
                .read()
                .map(|s| s.iter().any(|p| topic.starts_with(p)))
                .unwrap_or(false),
        }
    }

    fn park(self: &Arc<Self>, msg: InMsg) -> Park {
        if self.tx.is_closed() {
            return Park::Closed(msg);
        }
        let Ok(mut b) = self.backlog.lock() else {
            return Park::Closed(msg);
        };
        if b.msgs.len() >= self.capacity {
            return Park::Full(msg);
        }
        b.msgs.push(msg);
        self.backlogged.store(true, Ordering::Release);
        if !b.flushing {
            b.flushing = true;
            tokio::spawn(self.clone().flush());
        }
        Park::Parked
    }

    async fn flush(self: Arc<Self>) {
        loop {
            let permit = self.tx.reserve().await;
            let batch = {
                let Ok(mut b) = self.backlog.lock() else {
                    return;
                };
                if permit.is_err() {
                    crate::telemetry::dropped(
                        crate::telemetry::DropReason::NoPeer,
                        b.msgs.len() as u64,
                    );
                    b.msgs.clear();
                }
                if b.msgs.is_empty() {
                    b.flushing = false;
                    self.backlogged.store(false, Ordering::Release);
                    self.space.notify_waiters();
                    return;
                }
                std::mem::take(&mut b.msgs)
            };
            self.space.notify_waiters();
            if let Ok(p) = permit {
                p.send(Item::Many(batch));
            }
        }
    }
}

/// A sender's set of attached receivers.
#[derive(Debug, Default)]
pub(crate) struct SenderCore {
    pub(crate) links: RwLock<Vec<Arc<RecvLink>>>,
    pub(crate) next: AtomicUsize,
    pub(crate) attached: Notify,
}

impl SenderCore {
    fn attach(&self, link: Arc<RecvLink>) {
        if let Ok(mut l) = self.links.write() {
            l.retain(|x| !x.tx.is_closed());
            if !l.iter().any(|x| Arc::ptr_eq(x, &link)) {
                l.push(link);
            }
        }
        self.attached.notify_waiters();
    }

    /// Removes links whose receiver is gone.
    pub(crate) fn prune(&self) {
        if let Ok(mut l) = self.links.write() {
            l.retain(|x| !x.tx.is_closed());
        }
    }
}

/// One side of an inproc connection, as kept in the registry.
#[derive(Debug, Clone)]
enum Side {
    Sender(Weak<SenderCore>),
    Receiver(Arc<RecvLink>),
}

impl Side {
    fn alive(&self) -> bool {
        match self {
            Side::Sender(w) => w.strong_count() > 0,
            Side::Receiver(r) => !r.tx.is_closed(),
        }
    }

    fn same(&self, other: &Side) -> bool {
        match (self, other) {
            (Side::Sender(a), Side::Sender(b)) => a.ptr_eq(b),
            (Side::Receiver(a), Side::Receiver(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

fn attach(a: &Side, b: &Side) {
    match (a, b) {
        (Side::Sender(s), Side::Receiver(r)) | (Side::Receiver(r), Side::Sender(s)) => {
            if let Some(s) = s.upgrade() {
                s.attach(r.clone());
            }
        }
        _ => {}
    }
}

#[derive(Debug, Default)]
struct Slot {
    bound: Option<Side>,
    connectors: Vec<Side>,
}

/// Which pattern a name belongs to; each has its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    PubSub,
    Pipeline,
    ReqRep,
}

static REGISTRY: LazyLock<DashMap<(Family, String), Slot>> = LazyLock::new(DashMap::new);

/// Why an inproc bind failed.
#[derive(Debug)]
pub(crate) struct NameInUse;

/// Keeps a name bound; unbinds on drop.
#[derive(Debug)]
pub(crate) struct InprocBinding {
    key: (Family, String),
    side: Side,
}

impl Drop for InprocBinding {
    fn drop(&mut self) {
        if let Some(mut slot) = REGISTRY.get_mut(&self.key) {
            if slot.bound.as_ref().is_some_and(|b| b.same(&self.side)) {
                slot.bound = None;
            }
        }
        REGISTRY.remove_if(&self.key, |_, s| {
            s.bound.is_none() && s.connectors.is_empty()
        });
    }
}

/// Keeps a connection registered; forgets it on drop.
#[derive(Debug)]
pub(crate) struct InprocConnection {
    key: (Family, String),
    side: Side,
}

impl Drop for InprocConnection {
    fn drop(&mut self) {
        if let Some(mut slot) = REGISTRY.get_mut(&self.key) {
            slot.connectors.retain(|c| !c.same(&self.side) && c.alive());
        }
        REGISTRY.remove_if(&self.key, |_, s| {
            s.bound.is_none() && s.connectors.is_empty()
        });
    }
}

fn bind(family: Family, name: &str, side: Side) -> Result<InprocBinding, NameInUse> {
    let key = (family, name.to_owned());
    let mut slot = REGISTRY.entry(key.clone()).or_default();
    if slot.bound.as_ref().is_some_and(Side::alive) {
        return Err(NameInUse);
    }
    slot.connectors.retain(Side::alive);
    for c in &slot.connectors {
        attach(&side, c);
    }
    slot.bound = Some(side.clone());
    Ok(InprocBinding { key, side })
}

fn connect(family: Family, name: &str, side: Side) -> InprocConnection {
    let key = (family, name.to_owned());
    let mut slot = REGISTRY.entry(key.clone()).or_default();
    slot.connectors.retain(Side::alive);
    if let Some(b) = &slot.bound {
        attach(b, &side);
    }
    slot.connectors.push(side.clone());
    InprocConnection { key, side }
}

/// Whether a live socket of `family` has bound `name` in this process.
pub(crate) fn is_bound(family: Family, name: &str) -> bool {
    REGISTRY
        .get(&(family, name.to_owned()))
        .is_some_and(|slot| slot.bound.as_ref().is_some_and(Side::alive))
}

/// Binds a name for a sending socket.
pub(crate) fn bind_sender(
    family: Family,
    name: &str,
    core: &Arc<SenderCore>,
) -> Result<InprocBinding, NameInUse> {
    bind(family, name, Side::Sender(Arc::downgrade(core)))
}

/// Binds a name for a receiving socket.
pub(crate) fn bind_receiver(
    family: Family,
    name: &str,
    link: &Arc<RecvLink>,
) -> Result<InprocBinding, NameInUse> {
    bind(family, name, Side::Receiver(link.clone()))
}

/// Connects a sending socket to a name.
pub(crate) fn connect_sender(
    family: Family,
    name: &str,
    core: &Arc<SenderCore>,
) -> InprocConnection {
    connect(family, name, Side::Sender(Arc::downgrade(core)))
}

/// Connects a receiving socket to a name.
pub(crate) fn connect_receiver(
    family: Family,
    name: &str,
    link: &Arc<RecvLink>,
) -> InprocConnection {
    connect(family, name, Side::Receiver(link.clone()))
}

/// Either kind of registration; dropping it detaches.
#[derive(Debug)]
pub(crate) enum Registration {
    Bound(#[allow(dead_code)] InprocBinding),
    Connected(#[allow(dead_code)] InprocConnection),
}

/// Outcome of a round-robin send.
pub(crate) enum RoundRobin {
    Sent,
    NoPeer,
}

impl SenderCore {
    /// Sends one envelope round-robin (waiting for room), with no reply
    /// path: the inproc push. Returns the round-robin future itself (no
    /// extra `async` layer: on this path each layer costs a move of the
    /// whole future, measured under callgrind).
    #[inline]
    pub(crate) fn send_one(&self, env: Envelope) -> impl Future<Output = RoundRobin> + '_ {
        self.send_round_robin(
            InMsg {
                topic: Bytes::new(),
                env,
                reply: None,
            },
            true,
        )
    }
}

impl SenderCore {
    /// Sends to one receiver, round-robin, skipping full ones; when all are
    /// full, parks the message in the chosen receiver's backlog (delivered
    /// as a batch), and waits only when that backlog is full too. With no
    /// receiver attached, waits until one is if `wait_for_peer`.
    pub(crate) async fn send_round_robin(&self, mut msg: InMsg, wait_for_peer: bool) -> RoundRobin {
        loop {
            let notified = self.attached.notified();
            // Try every link without allocating, under the read lock; only
            // when all are full is one link cloned out.
            let (chosen, saw_closed) = {
                let Ok(links) = self.links.read() else {
                    return RoundRobin::NoPeer;
                };
                if links.is_empty() {
                    (None, false)
                } else {
                    let start = self.next.fetch_add(1, Ordering::Relaxed);
                    let mut saw_closed = false;
                    let n = links.len();
                    for i in 0..n {
                        let link = &links[(start + i) % n];
                        // Past half full, join (or start) the batch
                        // instead of taking a slot per message.
                        if link.backlogged.load(Ordering::Acquire)
                            || link.tx.capacity() < link.capacity / 2
                        {
                            continue;
                        }
                        match link.tx.try_send(Item::One(msg)) {
                            Ok(()) => {
                                drop(links);
                                if saw_closed {
                                    self.prune();
                                }
                                return RoundRobin::Sent;
                            }
                            Err(mpsc::error::TrySendError::Full(Item::One(m))) => msg = m,
                            Err(mpsc::error::TrySendError::Closed(Item::One(m))) => {
                                saw_closed = true;
                                msg = m;
                            }
                            Err(_) => unreachable!("an Item::One was sent"),
                        }
                    }
                    (Some(links[start % n].clone()), saw_closed)
                }
            };
            if saw_closed {
                self.prune();
            }
            let Some(link) = chosen else {
                if !wait_for_peer {
                    return RoundRobin::NoPeer;
                }
                notified.await;
                continue;
            };
            let space = link.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match link.park(msg) {
                Park::Parked => return RoundRobin::Sent,
                Park::Full(m) => {
                    msg = m;
                    space.await;
                }
                Park::Closed(m) => {
                    msg = m;
                    self.prune();
                }
            }
        }
    }
}

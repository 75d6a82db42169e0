//! Where a PUB socket's publications go: who is subscribed to what (the
//! [`Audience`]), and the bounded send queue in front of each subscriber
//! connection ([`SendQueue`], fed by a [`Splitter`]). Plain state, no I/O:
//! the guard's relays drive it.
//!
//! # Guarantees
//! - **Bounded memory per subscriber.** The relay of a subscriber
//!   connection reads the `zeromq` PUB socket as fast as it writes, so the
//!   crate's own queues (which drop silently and hold up to 100,000
//!   messages) stay empty. What the subscriber cannot take yet waits in its
//!   [`SendQueue`], at most `queue_capacity` publications and
//!   `publisher_queue_bytes` (8 MiB) ([`SocketConfig`](crate::SocketConfig));
//!   a message that does not fit is dropped whole
//!   (never a torn frame) and counted: `slow_subscriber`, or `link_down`
//!   while a connecting publisher's link is down. The publisher never
//!   waits for a subscriber.
//! - **Every publication is accounted.** At publish time the publisher
//!   counts the subscriber connections whose prefixes match the topic (the
//!   deliveries it *owes*); each relay then reports each publication it
//!   wrote to the network or dropped. [`PublishStats`] sets the two side by
//!   side; a publication that matched no subscriber is counted
//!   `no_subscriber`.
//!
//! # Not guaranteed
//! - That a subscriber *process* got what was written to its connection:
//!   pub/sub has no acknowledgements, so bytes in the kernel's buffers when
//!   a subscriber dies are lost without a count here (its gap detection
//!   sees them if it reconnects to the same publisher).
//! - Exactness in the instant a subscription is new: the relay sees a
//!   subscription a moment before the `zeromq` socket applies it, so a
//!   publication in between is owed but never handed to the relay; it shows
//!   as *unaccounted* in [`PublishStats`], never as delivered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::scan::{FrameScanner, ScanError, ScanLimits};
use crate::telemetry::{self, DropReason};

/// The default byte bound of a subscriber connection's send queue
/// (`SocketConfig::publisher_queue_bytes`).
#[cfg(test)]
const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// Most prefixes remembered per subscriber connection (a peer that sends
/// more is not followed further: its publications are then owed by what
/// was remembered).
const MAX_PREFIXES: usize = 1024;

/// What a publisher knows of where its publications went. All counts are
/// since the publisher was opened; a *delivery* is one publication to one
/// subscriber connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Publications made.
    pub published: u64,
    /// Publications that matched no subscriber connection when they were
    /// made (dropped, counted `no_subscriber`).
    pub no_subscriber: u64,
    /// Deliveries owed: for each publication, the subscriber connections
    /// whose prefixes matched it.
    pub owed: u64,
    /// Deliveries written to a subscriber's connection (ipc/tcp) or put
    /// in its queue (inproc).
    pub written: u64,
    /// Deliveries dropped because the subscriber's send queue was full
    /// (`slow_subscriber`; inproc: `subscriber_queue_full`).
    pub dropped_slow: u64,
    /// Deliveries dropped because the connection broke or its link was
    /// down for longer than the queue lasts (`link_down`).
    pub dropped_link: u64,
    /// Subscriber connections subscribed to something now.
    pub subscribers: usize,
}

impl PublishStats {
    /// Deliveries neither written nor dropped yet: still queued, in
    /// flight inside the socket, or lost where zfabric cannot see (see
    /// the module docs).
    pub fn unaccounted(&self) -> u64 {
        self.owed
            .saturating_sub(self.written + self.dropped_slow + self.dropped_link)
    }
}

/// One subscriber connection as its publisher sees it.
#[derive(Debug)]
struct Conn {
    id: u64,
    prefixes: Vec<Bytes>,
    /// Deliveries owed to it so far.
    owed: AtomicU64,
}

/// The subscriptions and delivery counts of one PUB socket.
#[derive(Debug, Default)]
pub(crate) struct Audience {
    next_id: AtomicU64,
    /// Subscriber connections (with or without prefixes).
    subs: RwLock<Vec<Conn>>,
    published: AtomicU64,
    no_subscriber: AtomicU64,
    owed: AtomicU64,
    written: AtomicU64,
    dropped_slow: AtomicU64,
    dropped_link: AtomicU64,
    changed: Notify,
}

impl Audience {
    /// A new subscriber connection's id.
    pub(crate) fn join(&self) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut subs) = self.subs.write() {
            subs.push(Conn {
                id,
                prefixes: Vec::new(),
                owed: AtomicU64::new(0),
            });
        }
        id
    }

    /// Applies a subscription message (`1` or `0`, then the prefix) from
    /// connection `id`; anything else is ignored.
    pub(crate) fn subscription(&self, id: u64, message: &[u8]) {
        let Some((&op, prefix)) = message.split_first() else {
            return;
        };
        let Ok(mut subs) = self.subs.write() else {
            return;
        };
        let Some(conn) = subs.iter_mut().find(|c| c.id == id) else {
            return;
        };
        match op {
            1 if conn.prefixes.len() < MAX_PREFIXES => {
                conn.prefixes.push(Bytes::copy_from_slice(prefix))
            }
            0 => {
                if let Some(p) = conn.prefixes.iter().position(|p| p[..] == *prefix) {
                    conn.prefixes.remove(p);
                }
            }
            _ => return,
        }
        drop(subs);
        self.changed.notify_waiters();
    }

    /// Connection `id` is gone after `settled` of its deliveries were
    /// written or dropped: it is owed nothing more, and what it was owed
    /// beyond that is lost with it (counted `link_down`).
    pub(crate) fn leave(&self, id: u64, settled: u64) {
        let owed = self.subs.write().ok().and_then(|mut subs| {
            let at = subs.iter().position(|c| c.id == id)?;
            Some(subs.remove(at).owed.load(Ordering::Relaxed))
        });
        self.dropped(
            DropReason::LinkDown,
            owed.unwrap_or(0).saturating_sub(settled),
        );
        self.changed.notify_waiters();
    }

    /// Counts one publication on `topic`, owed to every subscriber
    /// connection whose prefixes match it.
    pub(crate) fn publish(&self, topic: &[u8]) {
        let matched = self.subs.read().map_or(0, |subs| {
            let mut n = 0;
            for c in subs.iter() {
                if c.prefixes.iter().any(|p| topic.starts_with(p)) {
                    c.owed.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            }
            n
        });
        self.owe(matched);
    }

    /// Counts one publication owed to `matched` subscriber connections
    /// (`0`: counted `no_subscriber`).
    pub(crate) fn owe(&self, matched: u64) {
        self.published.fetch_add(1, Ordering::Relaxed);
        if matched == 0 {
            self.no_subscriber.fetch_add(1, Ordering::Relaxed);
            telemetry::dropped(DropReason::NoSubscriber, 1);
        } else {
            self.owed.fetch_add(matched, Ordering::Relaxed);
        }
    }

    /// `n` deliveries written to a subscriber's connection.
    pub(crate) fn written(&self, n: u64) {
        if n > 0 {
            self.written.fetch_add(n, Ordering::Relaxed);
            self.changed.notify_waiters();
        }
    }

    /// `n` deliveries dropped for `reason` (counted in the metrics too).
    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        let counter = match reason {
            DropReason::LinkDown => &self.dropped_link,
            _ => &self.dropped_slow,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        telemetry::dropped(reason, n);
        self.changed.notify_waiters();
    }

    /// Subscriber connections subscribed to something now.
    pub(crate) fn subscribers(&self) -> usize {
        self.subs
            .read()
            .map_or(0, |s| s.iter().filter(|c| !c.prefixes.is_empty()).count())
    }

    /// What is known so far.
    pub(crate) fn stats(&self) -> PublishStats {
        PublishStats {
            published: self.published.load(Ordering::Relaxed),
            no_subscriber: self.no_subscriber.load(Ordering::Relaxed),
            owed: self.owed.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            dropped_slow: self.dropped_slow.load(Ordering::Relaxed),
            dropped_link: self.dropped_link.load(Ordering::Relaxed),
            subscribers: self.subscribers(),
        }
    }

    /// Waits until `pred` holds for the stats (re-checked on every
    /// change).
    pub(crate) async fn wait_for(&self, pred: impl Fn(&PublishStats) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if pred(&self.stats()) {
                return;
            }
            changed.await;
        }
    }
}

/// One piece of a subscriber connection's outgoing stream: whole units
/// (greeting, commands, messages) only.
#[derive(Debug)]
pub(crate) struct Piece {
    /// The bytes, ZMTP-framed.
    pub(crate) bytes: Bytes,
    /// Publications in it.
    pub(crate) publications: u64,
    /// Bytes of data messages in it (what senders count as handed over;
    /// the handshake is not counted).
    pub(crate) data_bytes: u64,
}

/// What one [`Splitter::absorb`] did besides queueing.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Absorbed {
    /// Publications that did not fit and were dropped.
    pub(crate) dropped: u64,
    /// Their bytes.
    pub(crate) dropped_bytes: u64,
}

/// A subscriber connection's bounded queue of whole units.
#[derive(Debug)]
pub(crate) struct SendQueue {
    pieces: VecDeque<Piece>,
    publications: u64,
    bytes: usize,
    cap: u64,
    cap_bytes: usize,
}

impl SendQueue {
    /// A queue of at most `cap` publications and `cap_bytes` bytes (an
    /// empty queue takes any one message, so nothing is too big to pass).
    pub(crate) fn new(cap: usize, cap_bytes: usize) -> Self {
        SendQueue {
            pieces: VecDeque::new(),
            publications: 0,
            bytes: 0,
            cap: cap.max(1) as u64,
            cap_bytes: cap_bytes.max(1),
        }
    }

    fn push(&mut self, piece: Piece) {
        self.publications += piece.publications;
        self.bytes += piece.bytes.len();
        self.pieces.push_back(piece);
    }

    /// Takes everything queued, oldest first.
    pub(crate) fn take_all(&mut self) -> VecDeque<Piece> {
        self.publications = 0;
        self.bytes = 0;
        std::mem::take(&mut self.pieces)
    }

    /// Puts pieces taken but not written back at the front, in order.
    pub(crate) fn put_back(&mut self, rest: impl DoubleEndedIterator<Item = Piece>) {
        for p in rest.rev() {
            self.publications += p.publications;
            self.bytes += p.bytes.len();
            self.pieces.push_front(p);
        }
    }

    /// Publications queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.publications
    }
}

/// Cuts the bytes a PUB socket writes for one subscriber into whole units
/// and queues them, dropping data messages that do not fit.
#[derive(Debug)]
pub(crate) struct Splitter {
    scanner: FrameScanner,
    buf: BytesMut,
    /// Bytes of `buf` already scanned.
    scanned: usize,
    /// Unit ends (offsets into `buf`) waiting to be decided.
    ends: Vec<usize>,
}

/// Read size of a [`Splitter`].
const READ: usize = 64 * 1024;

impl Splitter {
    /// For a stream that starts with the socket's greeting (`greeting`)
    /// or is already past its handshake.
    pub(crate) fn new(limits: ScanLimits, greeting: bool) -> Self {
        let scanner = if greeting {
            FrameScanner::new(limits)
        } else {
            FrameScanner::after_handshake(limits)
        };
        Splitter {
            scanner: scanner.count_units(),
            buf: BytesMut::with_capacity(READ),
            scanned: 0,
            ends: Vec::new(),
        }
    }

    /// The buffer to read into (with room reserved).
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ / 4 {
            self.buf.reserve(READ);
        }
        &mut self.buf
    }

    /// Scans what was read into [`buf`](Self::buf) since the last call and
    /// moves the whole units into `q`: each run of units that fit becomes
    /// one piece; a data message that does not fit is dropped. An
    /// incomplete unit at the end stays for the next call.
    pub(crate) fn absorb(&mut self, q: &mut SendQueue) -> Result<Absorbed, ScanError> {
        self.ends.clear();
        let base = self.scanned;
        self.scanner.feed(&self.buf[base..], &mut self.ends)?;
        let mut out = Absorbed::default();
        // The run being gathered at the front of `buf`.
        let (mut run_len, mut run_pubs, mut run_data) = (0usize, 0u64, 0u64);
        // Where the previous unit ended, from the front of `buf` as it is.
        let mut prev = 0usize;
        let mut cut = 0usize;
        for (end, unit) in self.ends.iter().zip(self.scanner.take_units()) {
            let end = base + end - cut;
            let len = end - prev;
            prev = end;
            let publications = if unit.data {
                (unit.frames.saturating_sub(1) / 2).max(1) as u64
            } else {
                0
            };
            let fits = (q.pieces.is_empty() && run_len == 0)
                || (q.publications + run_pubs + publications <= q.cap
                    && q.bytes + run_len + len <= q.cap_bytes);
            if !unit.data || fits {
                run_len += len;
                run_pubs += publications;
                if unit.data {
                    run_data += len as u64;
                }
                continue;
            }
            if run_len > 0 {
                q.push(Piece {
                    bytes: self.buf.split_to(run_len).freeze(),
                    publications: run_pubs,
                    data_bytes: run_data,
                });
            }
            let _ = self.buf.split_to(len);
            cut += run_len + len;
            prev = 0;
            (run_len, run_pubs, run_data) = (0, 0, 0);
            out.dropped += publications;
            out.dropped_bytes += len as u64;
        }
        if run_len > 0 {
            q.push(Piece {
                bytes: self.buf.split_to(run_len).freeze(),
                publications: run_pubs,
                data_bytes: run_data,
            });
        }
        self.scanned = self.buf.len();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::scan::frame_header;

    const LIMITS: ScanLimits = ScanLimits {
        max_message: 1 << 20,
        max_command: 1024,
    };

    /// A PUB message: topic, then `n` header/body pairs.
    fn batch(n: usize, fill: u8) -> Vec<u8> {
        let mut frames = vec![vec![b't']];
        frames.extend((0..2 * n).map(|_| vec![fill; 3]));
        let mut v = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            frame_header(f.len(), i + 1 < frames.len(), false, &mut v);
            v.extend_from_slice(f);
        }
        v
    }

    fn feed(sp: &mut Splitter, q: &mut SendQueue, bytes: &[u8]) -> Absorbed {
        sp.buf().extend_from_slice(bytes);
        sp.absorb(q).unwrap()
    }

    fn concat(q: &mut SendQueue) -> (Vec<u8>, u64, u64) {
        let mut all = Vec::new();
        let (mut pubs, mut data) = (0, 0);
        for p in q.take_all() {
            all.extend_from_slice(&p.bytes);
            pubs += p.publications;
            data += p.data_bytes;
        }
        (all, pubs, data)
    }

    #[test]
    fn whole_messages_queue_until_the_cap_then_the_newest_are_dropped() {
        let mut sp = Splitter::new(LIMITS, false);
        let mut q = SendQueue::new(5, MAX_QUEUED_BYTES);
        let (a, b, c) = (batch(2, 1), batch(2, 2), batch(2, 3));
        let mut stream = a.clone();
        stream.extend(&b);
        stream.extend(&c);
        let out = feed(&mut sp, &mut q, &stream);
        // 2 + 2 fit in 5; the third batch of 2 does not.
        assert_eq!(
            out,
            Absorbed {
                dropped: 2,
                dropped_bytes: c.len() as u64
            }
        );
        assert_eq!(q.len(), 4);
        let (bytes, pubs, data) = concat(&mut q);
        assert_eq!(bytes, [a.clone(), b].concat());
        assert_eq!((pubs, data), (4, bytes.len() as u64));
        // Drained, the queue takes more.
        let out = feed(&mut sp, &mut q, &c);
        assert_eq!(out, Absorbed::default());
        assert_eq!(concat(&mut q).0, c);
    }

    #[test]
    fn a_drop_in_the_middle_keeps_the_later_messages_whole() {
        let mut sp = Splitter::new(LIMITS, false);
        let mut q = SendQueue::new(3, MAX_QUEUED_BYTES);
        let (a, big, small) = (batch(2, 1), batch(2, 2), batch(1, 3));
        let stream = [a.clone(), big, small.clone()].concat();
        let out = feed(&mut sp, &mut q, &stream);
        assert_eq!(out.dropped, 2);
        assert_eq!(concat(&mut q).0, [a, small].concat());
    }

    #[test]
    fn split_reads_wait_for_the_rest_of_a_message() {
        let mut sp = Splitter::new(LIMITS, false);
        let mut q = SendQueue::new(100, MAX_QUEUED_BYTES);
        let stream = [batch(3, 1), batch(1, 2)].concat();
        let mut got = Vec::new();
        for chunk in stream.chunks(5) {
            feed(&mut sp, &mut q, chunk);
            got.extend(concat(&mut q).0);
        }
        assert_eq!(got, stream);
    }

    #[test]
    fn the_handshake_is_never_dropped_nor_counted_as_data() {
        let mut g = vec![0u8; 64];
        g[0] = 0xff;
        g[9] = 0x7f;
        g[10] = 3;
        g[12..16].copy_from_slice(b"NULL");
        let mut ready = Vec::new();
        frame_header(6, false, true, &mut ready);
        ready.extend_from_slice(b"\x05READY");
        let mut sp = Splitter::new(LIMITS, true);
        let mut q = SendQueue::new(1, MAX_QUEUED_BYTES);
        let a = batch(1, 1);
        let out = feed(
            &mut sp,
            &mut q,
            &[g.clone(), ready.clone(), a.clone(), a.clone()].concat(),
        );
        assert_eq!(out.dropped, 1);
        let (bytes, pubs, data) = concat(&mut q);
        assert_eq!(bytes, [g, ready, a.clone()].concat());
        assert_eq!((pubs, data), (1, a.len() as u64));
    }

    #[test]
    fn the_byte_bound_holds_too_but_one_message_always_passes() {
        let mut sp = Splitter::new(LIMITS, false);
        let mut q = SendQueue::new(1000, 10);
        let a = batch(1, 1);
        assert!(a.len() > 10);
        let out = feed(&mut sp, &mut q, &[a.clone(), a.clone()].concat());
        assert_eq!(out.dropped, 1);
        assert_eq!(concat(&mut q).0, a);
    }

    #[test]
    fn pieces_put_back_keep_their_order() {
        let mut sp = Splitter::new(LIMITS, false);
        let mut q = SendQueue::new(1, MAX_QUEUED_BYTES);
        feed(&mut sp, &mut q, &batch(1, 1));
        let mut taken = q.take_all();
        feed(&mut sp, &mut q, &batch(1, 2));
        let first = taken.pop_front().unwrap();
        q.put_back(taken.into_iter());
        q.put_back(std::iter::once(first));
        assert_eq!(concat(&mut q).0, [batch(1, 1), batch(1, 2)].concat());
    }

    #[test]
    fn the_audience_owes_each_publication_to_the_matching_connections() {
        let a = Audience::default();
        let (x, y) = (a.join(), a.join());
        a.publish(b"orders.new");
        a.subscription(x, b"\x01orders");
        a.subscription(y, b"\x01prices");
        a.subscription(y, b"\x01");
        a.publish(b"orders.new");
        a.publish(b"prices.eur");
        a.subscription(y, b"\x00");
        a.publish(b"orders.old");
        // x was owed 2 and settled 1: the other is lost with it.
        a.written(1);
        a.leave(x, 1);
        assert_eq!(a.stats().dropped_link, 1);
        a.publish(b"orders.new");
        let s = a.stats();
        assert_eq!((s.published, s.no_subscriber, s.owed), (5, 2, 4));
        assert_eq!(s.subscribers, 1);
        a.written(1);
        a.dropped(DropReason::SlowSubscriber, 1);
        assert_eq!(a.stats().unaccounted(), 0);
    }
}

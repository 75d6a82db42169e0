//! The two pumps of a connecting [`Link`](super::connector::Link): local
//! socket -> remote and remote -> local socket, across reconnects.
//!
//! # Guarantees
//! - Only whole messages from the remote reach the local socket: a message
//!   cut off by a broken connection is dropped and counted (`link_down`).
//! - After a broken connection, the rest of a partly sent local message is
//!   skipped, so the next connection starts on a message boundary.
//! - A SUB socket's subscriptions are remembered and replayed on every new
//!   connection.
//!
//! # Not guaranteed
//! The local socket is read only while a remote is attached: its own queue
//! is what applies backpressure while the link is down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix;
use tokio::sync::{mpsc, watch};

use super::pubq::PubQueue;
use super::secure::{RemoteReader, RemoteWriter};
use super::{grow_after, CHUNK, FIRST_CHUNK};
use crate::telemetry;
use crate::transport::batch::Progress;
use crate::transport::fanout::Splitter;
use crate::transport::scan::{frame_header, FrameScanner, ScanLimits};

/// What the local-to-remote pump does next.
enum Step {
    /// A new remote connection (or `None`: the link is finished).
    Attach(Option<(u64, RemoteWriter)>),
    /// The attached remote died.
    Dead,
    /// `n` bytes were read from the local socket.
    Read(usize),
}

/// Local socket -> remote. Reads the local socket only while a remote is
/// attached (so the local socket's own queue applies backpressure while
/// the link is down). After a broken connection, the rest of a partly sent
/// message is skipped so that the next connection starts on a boundary.
pub(super) async fn outbound(
    mut local: unix::OwnedReadHalf,
    mut remotes: mpsc::Receiver<(u64, RemoteWriter)>,
    fail: mpsc::Sender<u64>,
    mut dead: watch::Receiver<u64>,
    is_sub: bool,
    limits: ScanLimits,
    progress: Arc<Progress>,
) {
    let mut scanner = FrameScanner::after_handshake(limits);
    if is_sub {
        scanner = scanner.capture_small();
    }
    let mut subscriptions: Vec<Vec<u8>> = Vec::new();
    let mut remote: Option<(u64, RemoteWriter)> = None;
    let mut skip = false;
    let mut buf = vec![0u8; FIRST_CHUNK];
    let mut ends = Vec::new();
    loop {
        let step = if remote.is_none() {
            Step::Attach(remotes.recv().await)
        } else {
            let g = remote.as_ref().map(|r| r.0).unwrap_or(0);
            tokio::select! {
                _ = is_dead(&mut dead, g) => Step::Dead,
                r = remotes.recv() => Step::Attach(r),
                n = local.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => Step::Read(n),
                },
            }
        };
        let n = match step {
            Step::Attach(Some(r)) => {
                remote = Some(r);
                skip = !scanner.at_boundary();
                replay(&mut remote, &subscriptions, &fail).await;
                continue;
            }
            Step::Attach(None) => return,
            Step::Dead => {
                remote = None;
                continue;
            }
            Step::Read(n) => n,
        };
        grow_after(&mut buf, n);
        ends.clear();
        if let Err(e) = scanner.feed(&buf[..n], &mut ends) {
            tracing::error!(error = ?e, "link: local socket wrote a malformed stream");
            return;
        }
        if is_sub {
            for m in scanner.take_captured() {
                match m.first() {
                    Some(1) => subscriptions.push(m),
                    Some(0) => {
                        if let Some(i) = subscriptions.iter().position(|s| s[1..] == m[1..]) {
                            subscriptions.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut start = 0;
        if skip {
            match ends.first() {
                Some(&e) => {
                    start = e;
                    skip = false;
                    telemetry::dropped(telemetry::DropReason::LinkDown, 1);
                }
                None => continue,
            }
        }
        if let Some((g, w)) = &mut remote {
            let g = *g;
            let written = tokio::select! {
                r = w.write_plain(&buf[start..n]) => r.is_ok(),
                _ = is_dead(&mut dead, g) => false,
            };
            if !written {
                let _ = fail.send(g).await;
                remote = None;
                skip = !scanner.at_boundary();
                telemetry::dropped(telemetry::DropReason::LinkDown, ends.len().max(1) as u64);
                continue;
            }
            // Counted once written to the remote, not when read: a
            // sender's linger must not take bytes a broken connection
            // lost for delivered.
            progress.relayed(n);
        }
    }
}

/// Local PUB socket -> remote subscriber. The local socket is read all
/// the time, into the link's bounded send queue, so it is never held up:
/// while the remote is down what fits waits for the reconnect (as a
/// libzmq PUB's pipe does) and what does not is dropped as `link_down`;
/// while it is up, as `slow_subscriber`. Pieces are whole messages, so a
/// broken connection loses the piece being written (counted) and the next
/// connection starts on a boundary.
pub(super) async fn outbound_pub(
    local: unix::OwnedReadHalf,
    mut remotes: mpsc::Receiver<(u64, RemoteWriter)>,
    fail: mpsc::Sender<u64>,
    mut dead: watch::Receiver<u64>,
    limits: ScanLimits,
    q: Arc<PubQueue>,
) {
    let attached = AtomicBool::new(false);
    let fill = q.fill(
        local,
        Splitter::new(limits, false),
        || {
            if attached.load(Ordering::Relaxed) {
                telemetry::DropReason::SlowSubscriber
            } else {
                telemetry::DropReason::LinkDown
            }
        },
        || {},
    );
    let drain = async {
        let mut remote: Option<(u64, RemoteWriter)> = None;
        loop {
            let Some((g, w)) = &mut remote else {
                remote = remotes.recv().await;
                if remote.is_none() {
                    return;
                }
                attached.store(true, Ordering::Relaxed);
                continue;
            };
            let g = *g;
            let mut batch = tokio::select! {
                b = q.next() => b,
                _ = is_dead(&mut dead, g) => {
                    remote = None;
                    attached.store(false, Ordering::Relaxed);
                    continue;
                }
                r = remotes.recv() => {
                    if r.is_none() {
                        return;
                    }
                    remote = r;
                    continue;
                }
            };
            while let Some(p) = batch.pop_front() {
                let written = tokio::select! {
                    r = w.write_plain(&p.bytes) => r.is_ok(),
                    _ = is_dead(&mut dead, g) => false,
                };
                if !written {
                    q.lost(&p);
                    q.put_back(batch);
                    let _ = fail.send(g).await;
                    remote = None;
                    attached.store(false, Ordering::Relaxed);
                    break;
                }
                q.written(&p);
            }
        }
    };
    tokio::select! {
        r = fill => if let Err(e) = r {
            tracing::error!(error = ?e, "link: local PUB socket wrote a malformed stream");
        },
        _ = drain => {}
    }
}

/// Resolves once generation `g` is known dead (or the coordinator is gone).
async fn is_dead(dead: &mut watch::Receiver<u64>, g: u64) {
    let _ = dead.wait_for(|d| *d >= g).await;
}

/// Sends the remembered subscriptions on a fresh connection.
async fn replay(
    remote: &mut Option<(u64, RemoteWriter)>,
    subs: &[Vec<u8>],
    fail: &mpsc::Sender<u64>,
) {
    if subs.is_empty() {
        return;
    }
    let mut out = Vec::new();
    for s in subs {
        frame_header(s.len(), false, false, &mut out);
        out.extend_from_slice(s);
    }
    if let Some((g, w)) = remote {
        if w.write_plain(&out).await.is_err() {
            let _ = fail.send(*g).await;
            *remote = None;
        }
    }
}

/// Remote -> local socket. Only whole messages are passed on; a message cut
/// off by a broken connection is dropped and counted.
pub(super) async fn inbound(
    mut local: unix::OwnedWriteHalf,
    mut remotes: mpsc::Receiver<(u64, RemoteReader)>,
    fail: mpsc::Sender<u64>,
    mut dead: watch::Receiver<u64>,
    limits: ScanLimits,
    pubq: Option<Arc<PubQueue>>,
) {
    let mut ends = Vec::new();
    while let Some((g, mut r)) = remotes.recv().await {
        let mut scanner = FrameScanner::after_handshake(limits);
        if pubq.is_some() {
            // A remote subscriber's subscriptions: what it is owed.
            scanner = scanner.capture_small();
        }
        let mut buf = BytesMut::with_capacity(FIRST_CHUNK);
        let mut want = FIRST_CHUNK;
        loop {
            let before = buf.len();
            buf.reserve(want);
            tokio::select! {
                n = r.read_plain(&mut buf, want) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if n >= want {
                            want = (want * 2).min(CHUNK);
                        }
                    }
                },
                _ = is_dead(&mut dead, g) => break,
            }
            ends.clear();
            if let Err(e) = scanner.feed(&buf[before..], &mut ends) {
                tracing::warn!(error = ?e, "link: remote broke the frame limits; reconnecting");
                telemetry::disconnected(e.reason());
                break;
            }
            if let Some(q) = &pubq {
                for m in scanner.take_captured() {
                    q.subscription(&m);
                }
            }
            if let Some(&last) = ends.last() {
                let upto = before + last;
                if local.write_all(&buf[..upto]).await.is_err() {
                    return;
                }
                buf.advance(upto);
            }
        }
        if !buf.is_empty() {
            telemetry::dropped(telemetry::DropReason::LinkDown, 1);
        }
        let _ = fail.send(g).await;
    }
}

//! Baselines through libzmq itself (the `zmq` crate), with the `libzmq`
//! feature. libzmq's API blocks, so each run happens on blocking threads.
//!
//! Guarantees: every libzmq side is lossless where zfabric's is, so the
//! rates compare the same delivered work. Pub/sub raises the publisher's
//! SNDHWM and the subscriber's RCVHWM to hold the whole burst
//! ([`lossless_hwm`]): at libzmq's default of 1,000 a fast publisher
//! drops 90% and more of a burst, and a rate of what got through says
//! nothing. (`ZMQ_XPUB_NODROP` with a blocking send would bound the queue
//! instead, but the `zmq` crate has no safe setter for it and this crate
//! forbids `unsafe`.) Loss is still counted and reported. Does not: bound
//! libzmq's memory during a pub/sub burst (up to the burst's bytes).

use std::time::Instant;

use super::measure::{Budget, Stats};
use crate::app::histogram::{histogram, Unit};
use crate::app::BoxError;

fn bind_ep(tp: &str, dir: &std::path::Path, tag: &str) -> String {
    match tp {
        "ipc" => format!("ipc://{}/lz-{tag}.sock", dir.display()),
        _ => "tcp://127.0.0.1:*".into(),
    }
}

fn last_endpoint(s: &zmq::Socket) -> Result<String, BoxError> {
    s.get_last_endpoint()?
        .map_err(|_| "libzmq endpoint is not UTF-8".into())
}

/// The high-water mark that holds a burst of `n` messages (plus the
/// subscription probes) without dropping any.
pub(super) fn lossless_hwm(n: u64) -> i32 {
    i32::try_from(n.saturating_add(1024)).unwrap_or(i32::MAX)
}

/// DEALER → ROUTER echo round trips, then a window of 16 in flight.
pub(super) async fn reqrep(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    budget: Budget,
) -> Result<Stats, BoxError> {
    let bind = bind_ep(tp, dir, &super::measure::tag(&["rr"]));
    tokio::task::spawn_blocking(move || -> Result<Stats, BoxError> {
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER)?;
        router.bind(&bind)?;
        let ep = last_endpoint(&router)?;
        let echo = std::thread::spawn(move || {
            while let Ok(parts) = router.recv_multipart(0) {
                if parts.last().is_some_and(|p| p.as_slice() == b"stop") {
                    let _ = router.send_multipart(parts, 0);
                    break;
                }
                if router.send_multipart(parts, 0).is_err() {
                    break;
                }
            }
        });
        let dealer = ctx.socket(zmq::DEALER)?;
        dealer.connect(&ep)?;
        let body = vec![7u8; size];
        let mut h = histogram(Unit::Nanos);
        for _ in 0..50 {
            dealer.send(&body, 0)?;
            dealer.recv_bytes(0)?;
        }
        let start = Instant::now();
        let mut n = 0u64;
        while (start.elapsed() < budget.time || n < 50) && n < 2_000_000 {
            let t = Instant::now();
            dealer.send(&body, 0)?;
            dealer.recv_bytes(0)?;
            let _ = h.record((t.elapsed().as_nanos() as u64).max(1));
            n += 1;
        }
        let start = Instant::now();
        for _ in 0..16 {
            dealer.send(&body, 0)?;
        }
        let mut done = 0u64;
        while start.elapsed() < budget.time {
            dealer.recv_bytes(0)?;
            done += 1;
            dealer.send(&body, 0)?;
        }
        let thr = done as f64 / start.elapsed().as_secs_f64();
        for _ in 0..16 {
            dealer.recv_bytes(0)?;
        }
        dealer.send("stop", 0)?;
        let _ = dealer.recv_bytes(0);
        let _ = echo.join();
        Ok(Stats::new("libzmq", size, Some(thr), Some(&h)))
    })
    .await?
}

/// Counts up to `n` whole messages (of any number of frames) on `sock`,
/// until 500 ms of silence; (got, last). Receives into one reused
/// `zmq::Message`, as libzmq's own throughput tools do, so the baseline
/// pays no allocation per message.
fn count(sock: &zmq::Socket, n: u64) -> Result<(u64, Instant), BoxError> {
    sock.set_rcvtimeo(500)?;
    let mut msg = zmq::Message::new();
    let mut got = 0;
    let mut last = Instant::now();
    while got < n {
        match sock.recv(&mut msg, 0) {
            Ok(()) if msg.get_more() => {}
            Ok(()) => {
                got += 1;
                last = Instant::now();
            }
            Err(zmq::Error::EAGAIN) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((got, last))
}

/// PUSH → PULL stream of `n` messages.
pub(super) async fn pushpull(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    n: u64,
) -> Result<Stats, BoxError> {
    let bind = bind_ep(tp, dir, &super::measure::tag(&["pp"]));
    tokio::task::spawn_blocking(move || -> Result<Stats, BoxError> {
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL)?;
        pull.bind(&bind)?;
        let ep = last_endpoint(&pull)?;
        let push = ctx.socket(zmq::PUSH)?;
        push.connect(&ep)?;
        let body = vec![7u8; size];
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let start = Instant::now();
        let sender = std::thread::spawn(move || -> Result<(), zmq::Error> {
            for _ in 0..n {
                push.send(&body, 0)?;
            }
            // Keep the socket open until the receiver is done.
            let _ = wait.recv();
            Ok(())
        });
        let counted = count(&pull, n);
        let _ = done.send(());
        sender.join().map_err(|_| "sender panicked")??;
        let (got, last) = counted?;
        let thr = got as f64 / last.duration_since(start).as_secs_f64().max(1e-9);
        Ok(Stats::stream("libzmq", size, thr, n, n - got))
    })
    .await?
}

/// PUB → SUB stream of `n` messages (after the subscription arrived),
/// with both high-water marks at [`lossless_hwm`].
pub(super) async fn pubsub(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    n: u64,
) -> Result<Stats, BoxError> {
    let bind = bind_ep(tp, dir, &super::measure::tag(&["ps"]));
    tokio::task::spawn_blocking(move || -> Result<Stats, BoxError> {
        let ctx = zmq::Context::new();
        let publisher = ctx.socket(zmq::PUB)?;
        publisher.set_sndhwm(lossless_hwm(n))?;
        publisher.bind(&bind)?;
        let ep = last_endpoint(&publisher)?;
        let sub = ctx.socket(zmq::SUB)?;
        sub.set_rcvhwm(lossless_hwm(n))?;
        sub.connect(&ep)?;
        sub.set_subscribe(b"b.")?;
        sub.set_rcvtimeo(10)?;
        let body = vec![7u8; size];
        let mut ready = false;
        for _ in 0..500 {
            publisher.send_multipart([&b"b.probe"[..], &body[..]], 0)?;
            if sub.recv_multipart(0).is_ok() {
                ready = true;
                break;
            }
        }
        if !ready {
            return Err("libzmq pub/sub: the subscription never arrived".into());
        }
        sub.set_rcvtimeo(50)?;
        while sub.recv_multipart(0).is_ok() {}
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let start = Instant::now();
        let sender = std::thread::spawn(move || -> Result<(), zmq::Error> {
            for _ in 0..n {
                publisher.send_multipart([&b"b.x"[..], &body[..]], 0)?;
            }
            let _ = wait.recv();
            Ok(())
        });
        let counted = count(&sub, n);
        let _ = done.send(());
        sender.join().map_err(|_| "sender panicked")??;
        let (got, last) = counted?;
        let thr = got as f64 / last.duration_since(start).as_secs_f64().max(1e-9);
        Ok(Stats::stream("libzmq", size, thr, n, n - got))
    })
    .await?
}

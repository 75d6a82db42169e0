//! The baselines: the same work as zfabric's measurements, done with raw
//! sockets of the `zeromq` crate (ipc/tcp) and with tokio channels
//! (inproc).
//!
//! Guarantees: each baseline sends the same bodies, in the same numbers,
//! timed by the same loops ([`super::measure`]) as the zfabric side it is
//! compared with. Does not: add anything zfabric's patterns add (sequence
//! numbers, deadlines, guards): that difference is what the ratios show.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use super::measure::{count_until, endpoint, inflight_loop, rtt_loop, stream, tag, Budget, Stats};
use crate::app::BoxError;

// --------------------------------------------------------- raw zeromq

/// A raw zeromq ROUTER echo; returns its endpoint.
pub(crate) async fn raw_echo_server(
    bind: &str,
) -> Result<(String, tokio::task::JoinHandle<()>), BoxError> {
    let mut router = zeromq::RouterSocket::new();
    let ep = router.bind(bind).await?.to_string();
    let task = tokio::spawn(async move {
        while let Ok(m) = router.recv().await {
            if router.send(m).await.is_err() {
                break;
            }
        }
    });
    Ok((ep, task))
}

/// Raw zeromq DEALER round trips against `ep`.
pub(crate) async fn raw_reqrep(ep: &str, size: usize, budget: Budget) -> Result<Stats, BoxError> {
    let mut dealer = zeromq::DealerSocket::new();
    dealer.connect(ep).await?;
    let body = Bytes::from(vec![7u8; size]);
    let dealer = Arc::new(tokio::sync::Mutex::new(dealer));
    let (d, b) = (dealer.clone(), body.clone());
    let h = rtt_loop(budget, || {
        let (d, b) = (&d, &b);
        async move {
            let mut d = d.lock().await;
            d.send(ZmqMessage::from(b.clone())).await?;
            d.recv().await?;
            Ok(())
        }
    })
    .await?;
    // In flight: a window of 16 on one socket.
    let thr = {
        let mut d = dealer.lock().await;
        let start = Instant::now();
        for _ in 0..16 {
            d.send(ZmqMessage::from(body.clone())).await?;
        }
        let mut done = 0u64;
        while start.elapsed() < budget.time {
            d.recv().await?;
            done += 1;
            d.send(ZmqMessage::from(body.clone())).await?;
        }
        for _ in 0..16 {
            d.recv().await?;
        }
        done as f64 / start.elapsed().as_secs_f64()
    };
    Ok(Stats::new("zeromq", size, Some(thr), Some(&h)))
}

pub(crate) async fn raw_pushpull(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    n: u64,
) -> Result<Stats, BoxError> {
    let mut pull = zeromq::PullSocket::new();
    let ep = pull
        .bind(&endpoint(tp, dir, &tag(&["rpp"])))
        .await?
        .to_string();
    let mut push = zeromq::PushSocket::new();
    push.connect(&ep).await?;
    let body = Bytes::from(vec![7u8; size]);
    let (thr, lost) = stream(
        n,
        move |n, done| async move {
            for _ in 0..n {
                push.send(ZmqMessage::from(body.clone())).await?;
            }
            let _ = done.await;
            Ok(())
        },
        |n| count_until(n, &mut pull),
    )
    .await?;
    Ok(Stats::stream("zeromq", size, thr, n, lost))
}

pub(crate) async fn raw_pubsub(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    n: u64,
) -> Result<Stats, BoxError> {
    let mut publisher = zeromq::PubSocket::new();
    let ep = publisher
        .bind(&endpoint(tp, dir, &tag(&["rps"])))
        .await?
        .to_string();
    let mut sub = zeromq::SubSocket::new();
    sub.connect(&ep).await?;
    sub.subscribe("b.").await?;
    let frame = |t: &'static [u8], body: &Bytes| -> Result<ZmqMessage, BoxError> {
        Ok(
            ZmqMessage::try_from(vec![Bytes::from_static(t), body.clone()])
                .map_err(|_| "empty message")?,
        )
    };
    let body = Bytes::from(vec![7u8; size]);
    let mut ready = false;
    for _ in 0..500 {
        publisher.send(frame(b"b.probe", &body)?).await?;
        if tokio::time::timeout(Duration::from_millis(10), sub.recv())
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
    }
    if !ready {
        return Err("raw pub/sub: the subscription never arrived".into());
    }
    while tokio::time::timeout(Duration::from_millis(50), sub.recv())
        .await
        .is_ok()
    {}
    let (thr, lost) = stream(
        n,
        move |n, done| async move {
            for i in 0..n {
                publisher.send(frame(b"b.x", &body)?).await?;
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            let _ = done.await;
            Ok(())
        },
        |n| count_until(n, &mut sub),
    )
    .await?;
    Ok(Stats::stream("zeromq", size, thr, n, lost))
}

/// Three raw DEALER/ROUTER round trips at once: what a scatter-gather
/// over three members does on the wire.
pub(crate) async fn raw_scatter(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    budget: Budget,
) -> Result<Stats, BoxError> {
    let mut dealers = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (ep, t) = raw_echo_server(&endpoint(tp, dir, &tag(&["rsc"]))).await?;
        tasks.push(t);
        let mut d = zeromq::DealerSocket::new();
        d.connect(&ep).await?;
        dealers.push(tokio::sync::Mutex::new(d));
    }
    let body = Bytes::from(vec![7u8; size]);
    let h = rtt_loop(budget, || {
        let (ds, b) = (&dealers, &body);
        async move {
            let calls = ds.iter().map(|d| async move {
                let mut d = d.lock().await;
                d.send(ZmqMessage::from(b.clone())).await?;
                d.recv().await?;
                Ok::<_, BoxError>(())
            });
            for r in futures_util::future::join_all(calls).await {
                r?;
            }
            Ok(())
        }
    })
    .await?;
    for t in tasks {
        t.abort();
    }
    Ok(Stats::new("zeromq", size, None, Some(&h)))
}

// ------------------------------------------------------------- tokio

type Echo = tokio::sync::mpsc::Sender<(Bytes, tokio::sync::oneshot::Sender<Bytes>)>;

fn tokio_echo() -> Echo {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Bytes, tokio::sync::oneshot::Sender<Bytes>)>(1024);
    tokio::spawn(async move {
        while let Some((b, reply)) = rx.recv().await {
            let _ = reply.send(b);
        }
    });
    tx
}

async fn tokio_call(tx: &Echo, b: &Bytes) -> Result<(), BoxError> {
    let (otx, orx) = tokio::sync::oneshot::channel();
    tx.send((b.clone(), otx))
        .await
        .map_err(|_| "echo task gone")?;
    orx.await?;
    Ok(())
}

/// A tokio mpsc + oneshot echo: the inproc request/reply baseline.
pub(crate) async fn tokio_reqrep(
    size: usize,
    budget: Budget,
    fanout: usize,
) -> Result<Stats, BoxError> {
    let echoes: Vec<Echo> = (0..fanout).map(|_| tokio_echo()).collect();
    let body = Bytes::from(vec![7u8; size]);
    let h = rtt_loop(budget, || {
        let (es, b) = (&echoes, &body);
        async move {
            let calls = es.iter().map(|e| tokio_call(e, b));
            for r in futures_util::future::join_all(calls).await {
                r?;
            }
            Ok(())
        }
    })
    .await?;
    let thr = if fanout == 1 {
        let e = echoes[0].clone();
        Some(
            inflight_loop(budget, 16, move || {
                let (e, b) = (e.clone(), body.clone());
                async move { tokio_call(&e, &b).await }
            })
            .await?,
        )
    } else {
        None
    };
    Ok(Stats::new("tokio", size, thr, Some(&h)))
}

/// A bounded tokio mpsc stream: the inproc push/pull baseline.
pub(crate) async fn tokio_stream(size: usize, n: u64) -> Result<Stats, BoxError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1000);
    let body = Bytes::from(vec![7u8; size]);
    let (thr, lost) = stream(
        n,
        move |n, _done| async move {
            for _ in 0..n {
                tx.send(body.clone()).await.map_err(|_| "receiver gone")?;
            }
            Ok(())
        },
        |n| count_until(n, &mut rx),
    )
    .await?;
    Ok(Stats::stream("tokio", size, thr, n, lost))
}

/// A tokio broadcast channel (1,024 slots, laggards lose): the inproc
/// pub/sub baseline.
pub(crate) async fn tokio_broadcast(size: usize, n: u64) -> Result<Stats, BoxError> {
    let (tx, mut rx) = tokio::sync::broadcast::channel::<Bytes>(1024);
    let body = Bytes::from(vec![7u8; size]);
    let (thr, lost) = stream(
        n,
        move |n, done| async move {
            for i in 0..n {
                let _ = tx.send(body.clone());
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            let _ = done.await;
            Ok(())
        },
        |n| count_until(n, &mut rx),
    )
    .await?;
    Ok(Stats::stream("tokio", size, thr, n, lost))
}

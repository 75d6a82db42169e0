//! Criterion benches: zfabric against a baseline doing the same work in the
//! same run (raw `zeromq` sockets for ipc/tcp, tokio channels for inproc).
//!
//! ```sh
//! cargo bench --bench fabric                      # everything
//! cargo bench --bench fabric -- 'reqrep_rtt'      # one group
//! ```
//! Request/reply carries 64 bytes as MessagePack `bin` (`serde_bytes`), the
//! cheapest typed encoding of a byte payload.
//!
//! Each group holds `zfabric/<transport>` and `baseline/<transport>`; the
//! ratio of the two is the number to read (absolute microseconds on a
//! shared 2-vCPU machine are mostly wake-up cost, see BASELINE.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use serde_bytes::ByteBuf;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Mutex};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};
use zfabric::{Client, Puller, Pusher, RemoteError, Server};

const TRANSPORTS: [&str; 3] = ["inproc", "ipc", "tcp"];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn endpoint(tp: &str, tag: &str) -> String {
    match tp {
        "inproc" => format!("inproc://bench-{tag}"),
        "ipc" => format!(
            "ipc://{}/zfabric-bench-{}-{tag}.sock",
            std::env::temp_dir().display(),
            std::process::id()
        ),
        _ => "tcp://127.0.0.1:0".into(),
    }
}

// ---------------------------------------------------------------- latency

fn reqrep_rtt(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("reqrep_rtt_64B");
    g.measurement_time(Duration::from_secs(4));
    let body = ByteBuf::from(vec![7u8; 64]);
    for tp in TRANSPORTS {
        // zfabric Client -> Server echo.
        let (client, _server) = rt.block_on(async {
            let server: Server<ByteBuf, ByteBuf> = Server::bind(&endpoint(tp, "rr")).await.unwrap();
            let ep = server.endpoints()[0].to_string();
            let h = server.spawn(|req| async move { Ok::<_, RemoteError>(req.body) });
            let client: Client<ByteBuf, ByteBuf> = Client::connect(&ep).await.unwrap();
            client.wait_connected().await;
            (Arc::new(client), h)
        });
        g.bench_function(BenchmarkId::new("zfabric", tp), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let client = client.clone();
                let body = body.clone();
                async move {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        client.request(&body).await.unwrap();
                    }
                    t0.elapsed()
                }
            })
        });
        drop(client);

        if tp == "inproc" {
            // Baseline: a tokio mpsc ping-pong between two tasks.
            let (req_tx, mut req_rx) = mpsc::channel::<Bytes>(1024);
            let (rep_tx, rep_rx) = mpsc::channel::<Bytes>(1024);
            rt.spawn(async move {
                while let Some(m) = req_rx.recv().await {
                    if rep_tx.send(m).await.is_err() {
                        break;
                    }
                }
            });
            let rep_rx = Arc::new(Mutex::new(rep_rx));
            let payload = Bytes::from(body.to_vec());
            g.bench_function(BenchmarkId::new("baseline", tp), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let req_tx = req_tx.clone();
                    let rep_rx = rep_rx.clone();
                    let payload = payload.clone();
                    async move {
                        let mut rx = rep_rx.lock().await;
                        let t0 = Instant::now();
                        for _ in 0..iters {
                            req_tx.send(payload.clone()).await.unwrap();
                            rx.recv().await.unwrap();
                        }
                        t0.elapsed()
                    }
                })
            });
        } else {
            // Baseline: raw zeromq DEALER -> ROUTER echo.
            let dealer = rt.block_on(async {
                let mut router = zeromq::RouterSocket::new();
                let ep = router
                    .bind(&endpoint(tp, "raw-rr"))
                    .await
                    .unwrap()
                    .to_string();
                tokio::spawn(async move {
                    while let Ok(m) = router.recv().await {
                        if router.send(m).await.is_err() {
                            break;
                        }
                    }
                });
                let mut dealer = zeromq::DealerSocket::new();
                dealer.connect(&ep).await.unwrap();
                Arc::new(Mutex::new(dealer))
            });
            let payload = Bytes::from(body.to_vec());
            g.bench_function(BenchmarkId::new("baseline", tp), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let dealer = dealer.clone();
                    let payload = payload.clone();
                    async move {
                        let mut d = dealer.lock().await;
                        let t0 = Instant::now();
                        for _ in 0..iters {
                            d.send(ZmqMessage::from(payload.clone())).await.unwrap();
                            d.recv().await.unwrap();
                        }
                        t0.elapsed()
                    }
                })
            });
        }
    }
    g.finish();
}

/// The same round trips on a single-threaded runtime: no cross-thread
/// wake-ups, which is how a latency-critical in-process service would run.
fn reqrep_rtt_current_thread(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("reqrep_rtt_64B_current_thread");
    g.measurement_time(Duration::from_secs(4));
    let body = ByteBuf::from(vec![7u8; 64]);
    for tp in ["inproc", "tcp"] {
        let (client, _server) = rt.block_on(async {
            let server: Server<ByteBuf, ByteBuf> =
                Server::bind(&endpoint(tp, "rr-ct")).await.unwrap();
            let ep = server.endpoints()[0].to_string();
            let h = server.spawn(|req| async move { Ok::<_, RemoteError>(req.body) });
            let client: Client<ByteBuf, ByteBuf> = Client::connect(&ep).await.unwrap();
            client.wait_connected().await;
            (Arc::new(client), h)
        });
        g.bench_function(BenchmarkId::new("zfabric", tp), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let client = client.clone();
                let body = body.clone();
                async move {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        client.request(&body).await.unwrap();
                    }
                    t0.elapsed()
                }
            })
        });
    }
    let (req_tx, mut req_rx) = mpsc::channel::<Bytes>(1024);
    let (rep_tx, rep_rx) = mpsc::channel::<Bytes>(1024);
    rt.spawn(async move {
        while let Some(m) = req_rx.recv().await {
            if rep_tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let rep_rx = Arc::new(Mutex::new(rep_rx));
    let payload = Bytes::from(body.to_vec());
    g.bench_function(BenchmarkId::new("baseline", "inproc"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (req_tx, rep_rx, payload) = (req_tx.clone(), rep_rx.clone(), payload.clone());
            async move {
                let mut rx = rep_rx.lock().await;
                let t0 = Instant::now();
                for _ in 0..iters {
                    req_tx.send(payload.clone()).await.unwrap();
                    rx.recv().await.unwrap();
                }
                t0.elapsed()
            }
        })
    });
    g.finish();
}

// ---------------------------------------------------------------- throughput

fn push_pull(c: &mut Criterion) {
    let rt = runtime();
    for size in [64usize, 1024] {
        let mut g = c.benchmark_group(format!("push_pull_{size}B"));
        g.throughput(Throughput::Elements(1));
        g.measurement_time(Duration::from_secs(4));
        let payload = Bytes::from(vec![7u8; size]);
        for tp in TRANSPORTS {
            let (pusher, puller) = rt.block_on(async {
                let puller: Puller<()> = Puller::bind(&endpoint(tp, &format!("pp{size}")))
                    .await
                    .unwrap();
                let ep = puller.endpoints()[0].to_string();
                let pusher: Pusher<()> = Pusher::connect(&ep).await.unwrap();
                pusher.wait_connected().await;
                (Arc::new(pusher), Arc::new(Mutex::new(puller)))
            });
            g.bench_function(BenchmarkId::new("zfabric", tp), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (pusher, puller, payload) =
                        (pusher.clone(), puller.clone(), payload.clone());
                    async move {
                        let mut rx = puller.lock().await;
                        let t0 = Instant::now();
                        let s = tokio::spawn(async move {
                            for _ in 0..iters {
                                pusher.send_bytes(payload.clone()).await.unwrap();
                            }
                        });
                        for _ in 0..iters {
                            rx.recv().await.unwrap();
                        }
                        s.await.unwrap();
                        t0.elapsed()
                    }
                })
            });
            drop((pusher, puller));

            if tp == "inproc" {
                let (tx, rx) = mpsc::channel::<Bytes>(1000);
                let rx = Arc::new(Mutex::new(rx));
                g.bench_function(BenchmarkId::new("baseline", tp), |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let (tx, rx, payload) = (tx.clone(), rx.clone(), payload.clone());
                        async move {
                            let mut rx = rx.lock().await;
                            let t0 = Instant::now();
                            let s = tokio::spawn(async move {
                                for _ in 0..iters {
                                    tx.send(payload.clone()).await.unwrap();
                                }
                            });
                            for _ in 0..iters {
                                rx.recv().await.unwrap();
                            }
                            s.await.unwrap();
                            t0.elapsed()
                        }
                    })
                });
            } else {
                let (push, pull) = rt.block_on(async {
                    let mut pull = zeromq::PullSocket::new();
                    let ep = pull
                        .bind(&endpoint(tp, &format!("raw-pp{size}")))
                        .await
                        .unwrap()
                        .to_string();
                    let mut push = zeromq::PushSocket::new();
                    push.connect(&ep).await.unwrap();
                    (Arc::new(Mutex::new(push)), Arc::new(Mutex::new(pull)))
                });
                g.bench_function(BenchmarkId::new("baseline", tp), |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let (push, pull, payload) = (push.clone(), pull.clone(), payload.clone());
                        async move {
                            let mut rx = pull.lock().await;
                            let t0 = Instant::now();
                            let s = tokio::spawn(async move {
                                let mut tx = push.lock().await;
                                for _ in 0..iters {
                                    tx.send(ZmqMessage::from(payload.clone())).await.unwrap();
                                }
                            });
                            for _ in 0..iters {
                                rx.recv().await.unwrap();
                            }
                            s.await.unwrap();
                            t0.elapsed()
                        }
                    })
                });
            }
        }
        g.finish();
    }
}

/// Pub/sub throughput counted at the subscriber. Messages the publisher
/// drops (slow subscriber) are not counted: the time is scaled to the
/// messages actually delivered, so loss can only lower the figure.
fn pub_sub(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("pub_sub_64B");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    let payload = Bytes::from(vec![7u8; 64]);
    for tp in TRANSPORTS {
        let (publisher, sub) = rt.block_on(async {
            let p: zfabric::Publisher<()> =
                zfabric::Publisher::bind(&endpoint(tp, "ps")).await.unwrap();
            let ep = p.endpoints()[0].to_string();
            let mut s: zfabric::Subscriber<()> =
                zfabric::Subscriber::connect(&ep, &["d"]).await.unwrap();
            for _ in 0..1000 {
                p.publish_bytes(b"d.sync", Bytes::new()).await.unwrap();
                if s.recv_timeout(Duration::from_millis(10)).await.is_ok() {
                    break;
                }
            }
            while s.recv_timeout(Duration::from_millis(20)).await.is_ok() {}
            (Arc::new(p), Arc::new(Mutex::new(s)))
        });
        g.bench_function(BenchmarkId::new("zfabric", tp), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (p, s, payload) = (publisher.clone(), sub.clone(), payload.clone());
                async move {
                    let mut s = s.lock().await;
                    let t0 = Instant::now();
                    let task = tokio::spawn(async move {
                        for _ in 0..iters {
                            p.publish_bytes(b"d.x", payload.clone()).await.unwrap();
                        }
                        p.publish_bytes(b"d.end", Bytes::new()).await.unwrap();
                    });
                    let mut got = 0u64;
                    while let Ok(d) = s.recv_timeout(Duration::from_secs(1)).await {
                        if d.topic.as_ref() == b"d.end" {
                            break;
                        }
                        got += 1;
                    }
                    task.await.unwrap();
                    t0.elapsed().mul_f64(iters as f64 / got.max(1) as f64)
                }
            })
        });
        drop((publisher, sub));
        if tp == "inproc" {
            continue; // no broadcast baseline: tokio's broadcast has other semantics
        }
        let (publisher, sub) = rt.block_on(async {
            let mut p = zeromq::PubSocket::new();
            let ep = p.bind(&endpoint(tp, "raw-ps")).await.unwrap().to_string();
            let mut s = zeromq::SubSocket::new();
            s.connect(&ep).await.unwrap();
            s.subscribe("d").await.unwrap();
            loop {
                p.send(ZmqMessage::from(Bytes::from_static(b"dsync")))
                    .await
                    .unwrap();
                if tokio::time::timeout(Duration::from_millis(10), s.recv())
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            while tokio::time::timeout(Duration::from_millis(20), s.recv())
                .await
                .is_ok()
            {}
            (Arc::new(Mutex::new(p)), Arc::new(Mutex::new(s)))
        });
        g.bench_function(BenchmarkId::new("baseline", tp), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (p, s, payload) = (publisher.clone(), sub.clone(), payload.clone());
                async move {
                    let mut s = s.lock().await;
                    let t0 = Instant::now();
                    let task = tokio::spawn(async move {
                        let mut p = p.lock().await;
                        for _ in 0..iters {
                            let m = ZmqMessage::try_from(vec![
                                Bytes::from_static(b"d.x"),
                                payload.clone(),
                            ])
                            .unwrap();
                            p.send(m).await.unwrap();
                        }
                        p.send(ZmqMessage::from(Bytes::from_static(b"d.end")))
                            .await
                            .unwrap();
                    });
                    let mut got = 0u64;
                    while let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_secs(1), s.recv()).await
                    {
                        if m.get(0).map(|f| f.as_ref() == b"d.end").unwrap_or(false) {
                            break;
                        }
                        got += 1;
                    }
                    task.await.unwrap();
                    t0.elapsed().mul_f64(iters as f64 / got.max(1) as f64)
                }
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------- codec

fn codec(c: &mut Criterion) {
    use zfabric::wire::{self, Header, Kind, Limits, MessageId};
    let mut g = c.benchmark_group("codec");
    let h = Header::new(Kind::Event, MessageId(u128::MAX / 3), 0xdead_beef, 12345);
    g.bench_function("header_encode", |b| {
        b.iter(|| wire::encode_header(std::hint::black_box(&h)))
    });
    let frames = vec![wire::encode_header(&h), Bytes::from(vec![0u8; 64])];
    let limits = Limits::default();
    g.bench_function("pair_decode", |b| {
        b.iter(|| wire::decode_pairs(std::hint::black_box(&frames), &limits).unwrap())
    });
    g.finish();
}

mod group {
    // criterion_group! generates an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(
        benches,
        reqrep_rtt,
        reqrep_rtt_current_thread,
        push_pull,
        pub_sub,
        codec
    );
}
criterion_main!(group::benches);

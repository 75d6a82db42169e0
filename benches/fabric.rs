//! Criterion benches: zfabric against a baseline doing the same work in the
//! same run (raw `zeromq` sockets for ipc/tcp, tokio channels for inproc).
//!
//! ```sh
//! cargo bench --bench fabric                      # everything
//! cargo bench --bench fabric -- 'reqrep_rtt'      # one group
//! ```
//! Each group holds `zfabric/<transport>` and `baseline/<transport>`; the
//! ratio of the two is the number to read (absolute microseconds on a
//! shared 2-vCPU machine are mostly wake-up cost, see BASELINE.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

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
    let body = vec![7u8; 64];
    for tp in TRANSPORTS {
        // zfabric Client -> Server echo.
        let (client, _server) = rt.block_on(async {
            let server: Server<Vec<u8>, Vec<u8>> = Server::bind(&endpoint(tp, "rr")).await.unwrap();
            let ep = server.endpoints()[0].to_string();
            let h = server.spawn(|req| async move { Ok::<_, RemoteError>(req.body) });
            let client: Client<Vec<u8>, Vec<u8>> = Client::connect(&ep).await.unwrap();
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
            let payload = Bytes::from(body.clone());
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
            let payload = Bytes::from(body.clone());
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
    criterion_group!(benches, reqrep_rtt, push_pull, codec);
}
criterion_main!(group::benches);

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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use serde_bytes::ByteBuf;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Mutex};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};
use zfabric::{Client, Publisher, Puller, Pusher, RemoteError, Server, Subscriber};

const TRANSPORTS: [&str; 3] = ["inproc", "ipc", "tcp"];

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
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

/// Times `iters` sequential round trips made by `one`.
fn bench_rtt<F, Fut>(g: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, id: BenchmarkId, one: F)
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: Future<Output = ()>,
{
    g.bench_function(id, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let one = one.clone();
            async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    one().await;
                }
                t0.elapsed()
            }
        })
    });
}

/// Times `iters` messages: `send(iters)` runs on its own task while
/// `recv(iters)` runs here and returns how many it received; the time is
/// scaled to messages actually received (loss can only lower the figure).
fn bench_thr<S, SF, R, RF>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    id: BenchmarkId,
    send: S,
    recv: R,
) where
    S: Fn(u64) -> SF + Clone + 'static,
    SF: Future<Output = ()> + Send + 'static,
    R: Fn(u64) -> RF + Clone + 'static,
    RF: Future<Output = u64>,
{
    g.bench_function(id, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (send, recv) = (send.clone(), recv.clone());
            async move {
                let t0 = Instant::now();
                let sender = tokio::spawn(send(iters));
                let got = recv(iters).await;
                sender.await.unwrap();
                t0.elapsed().mul_f64(iters as f64 / got.max(1) as f64)
            }
        })
    });
}

/// A zfabric echo server and a connected client on `tp`.
fn echo_pair(
    rt: &Runtime,
    tp: &str,
    tag: &str,
) -> (Arc<Client<ByteBuf, ByteBuf>>, zfabric::ServerHandle) {
    rt.block_on(async {
        let server: Server<ByteBuf, ByteBuf> = Server::bind(&endpoint(tp, tag)).await.unwrap();
        let ep = server.endpoints()[0].to_string();
        let h = server.spawn(|req| async move { Ok::<_, RemoteError>(req.body) });
        let client: Client<ByteBuf, ByteBuf> = Client::connect(&ep).await.unwrap();
        client.wait_connected().await;
        (Arc::new(client), h)
    })
}

/// A tokio mpsc ping-pong between two tasks: the inproc latency baseline.
fn mpsc_rtt(g: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime) {
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
    let payload = Bytes::from(vec![7u8; 64]);
    bench_rtt(g, rt, BenchmarkId::new("baseline", "inproc"), move || {
        let (req_tx, rep_rx, payload) = (req_tx.clone(), rep_rx.clone(), payload.clone());
        async move {
            req_tx.send(payload).await.unwrap();
            rep_rx.lock().await.recv().await.unwrap();
        }
    });
}

// ---------------------------------------------------------------- latency

fn reqrep_rtt(c: &mut Criterion) {
    let rt = multi_thread();
    let mut g = c.benchmark_group("reqrep_rtt_64B");
    g.measurement_time(Duration::from_secs(4));
    let body = ByteBuf::from(vec![7u8; 64]);
    for tp in TRANSPORTS {
        let (client, _server) = echo_pair(&rt, tp, "rr");
        let b = body.clone();
        bench_rtt(&mut g, &rt, BenchmarkId::new("zfabric", tp), move || {
            let (client, b) = (client.clone(), b.clone());
            async move {
                client.request(&b).await.unwrap();
            }
        });
        if tp == "inproc" {
            mpsc_rtt(&mut g, &rt);
            continue;
        }
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
        bench_rtt(&mut g, &rt, BenchmarkId::new("baseline", tp), move || {
            let (dealer, payload) = (dealer.clone(), payload.clone());
            async move {
                let mut d = dealer.lock().await;
                d.send(ZmqMessage::from(payload)).await.unwrap();
                d.recv().await.unwrap();
            }
        });
    }
    g.finish();
}

/// The same round trips on a single-threaded runtime: no cross-thread
/// wake-ups, which is how a latency-critical in-process service would run.
fn reqrep_rtt_current_thread(c: &mut Criterion) {
    let rt = current_thread();
    let mut g = c.benchmark_group("reqrep_rtt_64B_current_thread");
    g.measurement_time(Duration::from_secs(4));
    let body = ByteBuf::from(vec![7u8; 64]);
    for tp in ["inproc", "tcp"] {
        let (client, _server) = echo_pair(&rt, tp, "rr-ct");
        let b = body.clone();
        bench_rtt(&mut g, &rt, BenchmarkId::new("zfabric", tp), move || {
            let (client, b) = (client.clone(), b.clone());
            async move {
                client.request(&b).await.unwrap();
            }
        });
    }
    mpsc_rtt(&mut g, &rt);
    g.finish();
}

/// Body sizes of the anycast groups.
const ANYCAST_SIZES: [usize; 4] = [64, 1024, 16 * 1024, 64 * 1024];

/// Anycast through a node (membership lookup, node header fields, peer
/// link) against the plain router/dealer round trip of the same body, all
/// over tcp, at 64 B, 1 KiB, 16 KiB and 64 KiB (one group per size:
/// `anycast_rtt_<size>B_tcp`). `zfabric/anycast` is the typed call (body
/// MessagePack `bin`, decoded and re-encoded by the handler, as the
/// baseline's server does); `zfabric/anycast_raw` passes the encoded body
/// through `request_raw` and a `serve_raw` handler untouched.
fn node_anycast_rtt(c: &mut Criterion) {
    use zfabric::node::{CallOptions, Node, ServeOptions};
    let rt = multi_thread();
    let (caller, _member) = rt.block_on(async {
        let caller = Node::builder("caller")
            .bind("tcp://127.0.0.1:0")
            .start()
            .await
            .unwrap();
        let seed = caller.endpoints()[0].to_string();
        let member = Node::builder("member")
            .bind("tcp://127.0.0.1:0")
            .seed(seed)
            .serve("echo", |req: zfabric::Request<ByteBuf>| async move {
                Ok::<_, RemoteError>(req.body)
            })
            .serve_raw(
                "echo.raw",
                ServeOptions::new(),
                |req: zfabric::Request<Bytes>| async move { Ok::<_, RemoteError>(req.body) },
            )
            .start()
            .await
            .unwrap();
        while caller.members().is_empty() || member.members().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (Arc::new(caller), member)
    });
    for size in ANYCAST_SIZES {
        let mut g = c.benchmark_group(format!("anycast_rtt_{size}B_tcp"));
        g.measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Bytes(size as u64));
        let body = ByteBuf::from(vec![7u8; size]);
        let (c, b) = (caller.clone(), body.clone());
        bench_rtt(
            &mut g,
            &rt,
            BenchmarkId::new("zfabric", "anycast"),
            move || {
                let (c, b) = (c.clone(), b.clone());
                async move {
                    let _: ByteBuf = c.request("echo", &b, Duration::from_secs(5)).await.unwrap();
                }
            },
        );
        let raw = zfabric::wire::encode_body(&body).unwrap();
        let c = caller.clone();
        bench_rtt(
            &mut g,
            &rt,
            BenchmarkId::new("zfabric", "anycast_raw"),
            move || {
                let (c, b) = (c.clone(), raw.clone());
                async move {
                    let opts = CallOptions::default().timeout(Duration::from_secs(5));
                    c.request_raw("echo.raw", b, opts).await.unwrap();
                }
            },
        );
        let (client, _server) = echo_pair(&rt, "tcp", &format!("anycast-base-{size}"));
        bench_rtt(
            &mut g,
            &rt,
            BenchmarkId::new("baseline", "router_dealer"),
            move || {
                let (client, b) = (client.clone(), body.clone());
                async move {
                    client.request(&b).await.unwrap();
                }
            },
        );
        g.finish();
    }
}

// ---------------------------------------------------------------- throughput

fn push_pull(c: &mut Criterion) {
    let rt = multi_thread();
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
            let p = payload.clone();
            bench_thr(
                &mut g,
                &rt,
                BenchmarkId::new("zfabric", tp),
                move |n| {
                    let (pusher, p) = (pusher.clone(), p.clone());
                    async move {
                        for _ in 0..n {
                            pusher.send_bytes(p.clone()).await.unwrap();
                        }
                    }
                },
                move |n| {
                    let puller = puller.clone();
                    async move {
                        let mut rx = puller.lock().await;
                        for _ in 0..n {
                            rx.recv().await.unwrap();
                        }
                        n
                    }
                },
            );

            if tp == "inproc" {
                let (tx, rx) = mpsc::channel::<Bytes>(1000);
                let rx = Arc::new(Mutex::new(rx));
                let p = payload.clone();
                bench_thr(
                    &mut g,
                    &rt,
                    BenchmarkId::new("baseline", tp),
                    move |n| {
                        let (tx, p) = (tx.clone(), p.clone());
                        async move {
                            for _ in 0..n {
                                tx.send(p.clone()).await.unwrap();
                            }
                        }
                    },
                    move |n| {
                        let rx = rx.clone();
                        async move {
                            let mut rx = rx.lock().await;
                            for _ in 0..n {
                                rx.recv().await.unwrap();
                            }
                            n
                        }
                    },
                );
                continue;
            }
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
            let p = payload.clone();
            bench_thr(
                &mut g,
                &rt,
                BenchmarkId::new("baseline", tp),
                move |n| {
                    let (push, p) = (push.clone(), p.clone());
                    async move {
                        let mut tx = push.lock().await;
                        for _ in 0..n {
                            tx.send(ZmqMessage::from(p.clone())).await.unwrap();
                        }
                    }
                },
                move |n| {
                    let pull = pull.clone();
                    async move {
                        let mut rx = pull.lock().await;
                        for _ in 0..n {
                            rx.recv().await.unwrap();
                        }
                        n
                    }
                },
            );
        }
        g.finish();
    }
}

/// Pub/sub throughput counted at the subscriber. The publisher ends each
/// run with a `d.end` marker; messages it dropped (slow subscriber) are not
/// counted, so loss can only lower the figure.
fn pub_sub(c: &mut Criterion) {
    let rt = multi_thread();
    let mut g = c.benchmark_group("pub_sub_64B");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    let payload = Bytes::from(vec![7u8; 64]);
    for tp in TRANSPORTS {
        let (publisher, sub) = rt.block_on(async {
            let p: Publisher<()> = Publisher::bind(&endpoint(tp, "ps")).await.unwrap();
            let ep = p.endpoints()[0].to_string();
            let mut s: Subscriber<()> = Subscriber::connect(&ep, &["d"]).await.unwrap();
            for _ in 0..1000 {
                p.publish_bytes(b"d.sync", Bytes::new()).await.unwrap();
                if s.recv_timeout(Duration::from_millis(10)).await.is_ok() {
                    break;
                }
            }
            while s.recv_timeout(Duration::from_millis(20)).await.is_ok() {}
            (Arc::new(p), Arc::new(Mutex::new(s)))
        });
        let p = payload.clone();
        bench_thr(
            &mut g,
            &rt,
            BenchmarkId::new("zfabric", tp),
            move |n| {
                let (publisher, p) = (publisher.clone(), p.clone());
                async move {
                    for _ in 0..n {
                        publisher.publish_bytes(b"d.x", p.clone()).await.unwrap();
                    }
                    publisher
                        .publish_bytes(b"d.end", Bytes::new())
                        .await
                        .unwrap();
                }
            },
            move |_| {
                let sub = sub.clone();
                async move {
                    let mut s = sub.lock().await;
                    let mut got = 0;
                    while let Ok(d) = s.recv_timeout(Duration::from_secs(1)).await {
                        if d.topic.as_ref() == b"d.end" {
                            break;
                        }
                        got += 1;
                    }
                    got
                }
            },
        );
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
        let p = payload.clone();
        bench_thr(
            &mut g,
            &rt,
            BenchmarkId::new("baseline", tp),
            move |n| {
                let (publisher, p) = (publisher.clone(), p.clone());
                async move {
                    let mut pb = publisher.lock().await;
                    for _ in 0..n {
                        let m = ZmqMessage::try_from(vec![Bytes::from_static(b"d.x"), p.clone()])
                            .unwrap();
                        pb.send(m).await.unwrap();
                    }
                    pb.send(ZmqMessage::from(Bytes::from_static(b"d.end")))
                        .await
                        .unwrap();
                }
            },
            move |_| {
                let sub = sub.clone();
                async move {
                    let mut s = sub.lock().await;
                    let mut got = 0;
                    while let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_secs(1), s.recv()).await
                    {
                        if m.get(0).is_some_and(|f| f.as_ref() == b"d.end") {
                            break;
                        }
                        got += 1;
                    }
                    got
                }
            },
        );
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
        node_anycast_rtt,
        push_pull,
        pub_sub,
        codec
    );
}
criterion_main!(group::benches);

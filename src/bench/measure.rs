//! The measurements: zfabric and its baselines doing the same work.
//!
//! Request patterns are timed round trip by round trip (sequential, into an
//! HDR histogram in nanoseconds) and for throughput with 16 requests in
//! flight. Streams (push/pull, pub/sub) send a fixed number of messages
//! and time them from the first send to the last receipt.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_bytes::ByteBuf;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};
use zfabric::node::{CallOptions, Node};
use zfabric::topology::{scatter_gather, Completion, Scatter};
use zfabric::{Client, Publisher, Puller, Pusher, RemoteError, Server, Subscriber};

use crate::app::histogram::{histogram, Percentiles, Unit};
use crate::app::BoxError;

/// Latency percentiles, µs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) samples: u64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Self> {
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles::of(h).map(|p| Latency {
            samples: p.samples,
            p50_us: us(p.p50),
            p90_us: us(p.p90),
            p99_us: us(p.p99),
            p999_us: us(p.p999),
            max_us: us(p.max),
        })
    }
}

/// One implementation's figures for one cell.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stats {
    /// `zfabric`, `zeromq` (raw sockets of the zeromq crate), `libzmq`,
    /// `tokio` (channels).
    pub(crate) name: String,
    pub(crate) msgs_per_s: Option<f64>,
    pub(crate) mb_per_s: Option<f64>,
    pub(crate) latency: Option<Latency>,
    /// Messages sent and never received (streams).
    pub(crate) lost: Option<u64>,
}

impl Stats {
    fn new(
        name: &str,
        size: usize,
        thr: Option<f64>,
        h: Option<&Histogram<u64>>,
        lost: Option<u64>,
    ) -> Self {
        Stats {
            name: name.into(),
            msgs_per_s: thr,
            mb_per_s: thr.map(|t| t * size as f64 / 1e6),
            latency: h.and_then(Latency::of),
            lost,
        }
    }
}

/// How long and how much.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Time for each latency or in-flight run.
    pub(crate) time: Duration,
    /// Messages per stream run.
    pub(crate) messages: u64,
}

/// Sequential round trips for `budget.time` (at least 50, at most 2 M).
pub(crate) async fn rtt_loop<F, Fut>(budget: Budget, mut one: F) -> Result<Histogram<u64>, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    for _ in 0..50 {
        one().await?;
    }
    let mut h = histogram(Unit::Nanos);
    let start = Instant::now();
    let mut n = 0u64;
    while (start.elapsed() < budget.time || n < 50) && n < 2_000_000 {
        let t = Instant::now();
        one().await?;
        let _ = h.record((t.elapsed().as_nanos() as u64).max(1));
        n += 1;
    }
    Ok(h)
}

/// Throughput with `k` requests in flight for `budget.time`.
pub(crate) async fn inflight_loop<F, Fut>(budget: Budget, k: usize, one: F) -> Result<f64, BoxError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + budget.time;
    let tasks: Vec<_> = (0..k)
        .map(|_| {
            let (one, done) = (one.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if one().await.is_err() {
                        break;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Runs a stream: `send` sends `n` messages on its own task, `recv`
/// counts until `n` or 500 ms of silence; returns (msgs/s, lost).
pub(crate) async fn stream<S, SF, R, RF>(n: u64, send: S, recv: R) -> Result<(f64, u64), BoxError>
where
    S: FnOnce(u64) -> SF,
    SF: Future<Output = Result<(), BoxError>> + Send + 'static,
    R: FnOnce(u64) -> RF,
    RF: Future<Output = (u64, Instant)>,
{
    let start = Instant::now();
    let sender = tokio::spawn(send(n));
    let (got, last) = recv(n).await;
    // Timed to the last receipt: the sender's linger and the receiver's
    // wait for stragglers are not counted.
    let secs = last.duration_since(start).as_secs_f64().max(1e-9);
    sender.await??;
    Ok((got as f64 / secs, n.saturating_sub(got)))
}

/// Something that receives messages one at a time.
trait Recv {
    /// The next message arrived (`false`: closed or failed).
    async fn next(&mut self) -> bool;
}

impl Recv for Puller<ByteBuf> {
    async fn next(&mut self) -> bool {
        self.recv().await.is_ok()
    }
}

impl Recv for Subscriber<ByteBuf> {
    async fn next(&mut self) -> bool {
        self.recv().await.is_ok()
    }
}

impl Recv for zeromq::PullSocket {
    async fn next(&mut self) -> bool {
        self.recv().await.is_ok()
    }
}

impl Recv for zeromq::SubSocket {
    async fn next(&mut self) -> bool {
        self.recv().await.is_ok()
    }
}

impl Recv for tokio::sync::mpsc::Receiver<Bytes> {
    async fn next(&mut self) -> bool {
        self.recv().await.is_some()
    }
}

impl Recv for tokio::sync::broadcast::Receiver<Bytes> {
    async fn next(&mut self) -> bool {
        loop {
            match self.recv().await {
                Ok(_) => return true,
                // Lagged: the skipped messages are counted as lost.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Receives until `n` or a pause of 500 ms; returns the count and when
/// the last one arrived.
async fn count_until<R: Recv>(n: u64, r: &mut R) -> (u64, Instant) {
    let mut got = 0;
    let mut last = Instant::now();
    while got < n {
        match tokio::time::timeout(Duration::from_millis(500), r.next()).await {
            Ok(true) => {
                got += 1;
                last = Instant::now();
            }
            _ => break,
        }
    }
    (got, last)
}

pub(crate) fn endpoint(tp: &str, dir: &std::path::Path, tag: &str) -> String {
    match tp {
        "inproc" => format!("inproc://zf-bench-{}-{tag}", std::process::id()),
        "ipc" => format!("ipc://{}/{tag}.sock", dir.display()),
        _ => "tcp://127.0.0.1:0".into(),
    }
}

static TAGS: AtomicU64 = AtomicU64::new(0);

fn tag(parts: &[&str]) -> String {
    format!("{}-{}", parts.join("-"), random_tag())
}

/// A number unique in this process, for ipc file names.
pub(crate) fn random_tag() -> u64 {
    TAGS.fetch_add(1, Ordering::Relaxed)
}

// ------------------------------------------------------------- zfabric

/// zfabric request/reply against a server at `ep` (or a new one here).
pub(crate) async fn zf_reqrep(ep: &str, size: usize, budget: Budget) -> Result<Stats, BoxError> {
    let client: Arc<Client<ByteBuf, ByteBuf>> = Arc::new(Client::connect(ep).await?);
    client.wait_connected().await;
    let body = ByteBuf::from(vec![7u8; size]);
    let (c, b) = (client.clone(), body.clone());
    let h = rtt_loop(budget, || {
        let (c, b) = (&c, &b);
        async move {
            c.request(b).await?;
            Ok(())
        }
    })
    .await?;
    let thr = inflight_loop(budget, 16, move || {
        let (c, b) = (client.clone(), body.clone());
        async move {
            c.request(&b).await?;
            Ok(())
        }
    })
    .await?;
    Ok(Stats::new("zfabric", size, Some(thr), Some(&h), None))
}

/// A zfabric echo server; returns its endpoint and its handle.
pub(crate) async fn zf_echo_server(
    bind: &str,
) -> Result<(String, zfabric::ServerHandle), BoxError> {
    let server: Server<ByteBuf, ByteBuf> = Server::bind(bind).await?;
    let ep = server.endpoints()[0].to_string();
    Ok((
        ep,
        server.spawn(|req| async move { Ok::<_, RemoteError>(req.body) }),
    ))
}

pub(crate) async fn zf_pushpull(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    n: u64,
) -> Result<Stats, BoxError> {
    let mut pull: Puller<ByteBuf> = Puller::bind(&endpoint(tp, dir, &tag(&["pp"]))).await?;
    let push: Pusher<ByteBuf> = Pusher::connect(&pull.endpoints()[0].to_string()).await?;
    push.wait_connected().await;
    let body = Bytes::from(vec![7u8; size]);
    let (thr, lost) = stream(
        n,
        move |n| async move {
            for _ in 0..n {
                push.send_bytes(body.clone()).await?;
            }
            // Keep the pusher alive until the receiver is done.
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(())
        },
        |n| count_until(n, &mut pull),
    )
    .await?;
    Ok(Stats::new("zfabric", size, Some(thr), None, Some(lost)))
}

pub(crate) async fn zf_pubsub(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    n: u64,
) -> Result<Stats, BoxError> {
    let publisher: Publisher<ByteBuf> = Publisher::bind(&endpoint(tp, dir, &tag(&["ps"]))).await?;
    let mut sub: Subscriber<ByteBuf> =
        Subscriber::connect(&publisher.endpoints()[0].to_string(), &["b."]).await?;
    // Subscriptions travel to the publisher: send probes until one arrives.
    let body = Bytes::from(vec![7u8; size]);
    let mut ready = false;
    for _ in 0..500 {
        publisher.publish_bytes(b"b.probe", body.clone()).await?;
        if sub.recv_timeout(Duration::from_millis(10)).await.is_ok() {
            ready = true;
            break;
        }
    }
    if !ready {
        return Err("pub/sub: the subscription never arrived".into());
    }
    while sub.recv_timeout(Duration::from_millis(50)).await.is_ok() {}
    let (thr, lost) = stream(
        n,
        move |n| async move {
            for _ in 0..n {
                publisher.publish_bytes(b"b.x", body.clone()).await?;
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(())
        },
        |n| count_until(n, &mut sub),
    )
    .await?;
    Ok(Stats::new("zfabric", size, Some(thr), None, Some(lost)))
}

async fn wait_members(nodes: &[&Node], n: usize) -> Result<(), BoxError> {
    for _ in 0..1000 {
        if nodes.iter().all(|x| x.members().len() >= n) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("the bench fabric did not converge".into())
}

/// `servers` nodes serving `echo` and a caller, on `tp`.
async fn zf_fabric(
    tp: &str,
    dir: &std::path::Path,
    servers: usize,
) -> Result<(Arc<Node>, Vec<Node>), BoxError> {
    let mut nodes = Vec::new();
    for i in 0..servers {
        let mut b = Node::builder(format!("echo-{i}"))
            .bind(endpoint(tp, dir, &tag(&["node"])))
            .serve("echo", |req: zfabric::Request<ByteBuf>| async move {
                Ok::<_, RemoteError>(req.body)
            });
        if let Some(first) = nodes.first() {
            let first: &Node = first;
            b = b.seed(first.endpoints()[0].to_string());
        }
        nodes.push(b.start().await?);
    }
    let caller = Node::builder("bench-caller")
        .bind(endpoint(tp, dir, &tag(&["caller"])))
        .seed(nodes[0].endpoints()[0].to_string())
        .start()
        .await?;
    let mut all: Vec<&Node> = nodes.iter().collect();
    all.push(&caller);
    wait_members(&all, servers).await?;
    Ok((Arc::new(caller), nodes))
}

pub(crate) async fn zf_anycast(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    budget: Budget,
) -> Result<Stats, BoxError> {
    let (caller, _servers) = zf_fabric(tp, dir, 1).await?;
    let body = ByteBuf::from(vec![7u8; size]);
    let (c, b) = (caller.clone(), body.clone());
    let h = rtt_loop(budget, || {
        let (c, b) = (&c, &b);
        async move {
            c.request_with::<_, ByteBuf>("echo", b, CallOptions::default())
                .await?;
            Ok(())
        }
    })
    .await?;
    let thr = inflight_loop(budget, 16, move || {
        let (c, b) = (caller.clone(), body.clone());
        async move {
            c.request_with::<_, ByteBuf>("echo", &b, CallOptions::default())
                .await?;
            Ok(())
        }
    })
    .await?;
    Ok(Stats::new("zfabric", size, Some(thr), Some(&h), None))
}

pub(crate) async fn zf_aggregator(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    budget: Budget,
) -> Result<Stats, BoxError> {
    let (caller, _servers) = zf_fabric(tp, dir, 3).await?;
    let body = ByteBuf::from(vec![7u8; size]);
    let scatter = Scatter::Members("echo".into());
    let h = rtt_loop(budget, || {
        let (c, b, s) = (&caller, &body, &scatter);
        async move {
            let g = scatter_gather::<_, ByteBuf>(c, s, b, Completion::All, Duration::from_secs(5))
                .await?;
            if !g.satisfied() {
                return Err("a gather was incomplete".into());
            }
            Ok(())
        }
    })
    .await?;
    Ok(Stats::new("zfabric", size, None, Some(&h), None))
}

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
    Ok(Stats::new("zeromq", size, Some(thr), Some(&h), None))
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
        move |n| async move {
            for _ in 0..n {
                push.send(ZmqMessage::from(body.clone())).await?;
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(())
        },
        |n| count_until(n, &mut pull),
    )
    .await?;
    Ok(Stats::new("zeromq", size, Some(thr), None, Some(lost)))
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
        move |n| async move {
            for i in 0..n {
                publisher.send(frame(b"b.x", &body)?).await?;
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(())
        },
        |n| count_until(n, &mut sub),
    )
    .await?;
    Ok(Stats::new("zeromq", size, Some(thr), None, Some(lost)))
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
    Ok(Stats::new("zeromq", size, None, Some(&h), None))
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
    Ok(Stats::new("tokio", size, thr, Some(&h), None))
}

/// A bounded tokio mpsc stream: the inproc push/pull baseline.
pub(crate) async fn tokio_stream(size: usize, n: u64) -> Result<Stats, BoxError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1000);
    let body = Bytes::from(vec![7u8; size]);
    let (thr, lost) = stream(
        n,
        move |n| async move {
            for _ in 0..n {
                tx.send(body.clone()).await.map_err(|_| "receiver gone")?;
            }
            Ok(())
        },
        |n| count_until(n, &mut rx),
    )
    .await?;
    Ok(Stats::new("tokio", size, Some(thr), None, Some(lost)))
}

/// A tokio broadcast channel (1,024 slots, laggards lose): the inproc
/// pub/sub baseline.
pub(crate) async fn tokio_broadcast(size: usize, n: u64) -> Result<Stats, BoxError> {
    let (tx, mut rx) = tokio::sync::broadcast::channel::<Bytes>(1024);
    let body = Bytes::from(vec![7u8; size]);
    let (thr, lost) = stream(
        n,
        move |n| async move {
            for i in 0..n {
                let _ = tx.send(body.clone());
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(())
        },
        |n| count_until(n, &mut rx),
    )
    .await?;
    Ok(Stats::new("tokio", size, Some(thr), None, Some(lost)))
}

//! The measurements: the timing loops every side shares, and zfabric's
//! side of each cell (its baselines are in [`super::baseline`]).
//!
//! Request patterns are timed round trip by round trip (sequential, into an
//! HDR histogram in nanoseconds) and for throughput with 16 requests in
//! flight. Streams (push/pull, pub/sub) send a fixed number of messages
//! and time them from the first send to the last receipt.
//!
//! Guarantees: at least 50 timed round trips per latency run, at most 2 M;
//! a stream counts what did not arrive within 500 ms of silence as lost,
//! and reports sent, delivered and lost with the delivered rate.
//! Does not: run baselines or print.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_bytes::ByteBuf;
use zeromq::SocketRecv;
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
    /// Messages sent (streams).
    pub(crate) sent: Option<u64>,
    /// Messages received (streams); `msgs_per_s` counts only these.
    pub(crate) delivered: Option<u64>,
    /// Messages sent and never received (streams).
    pub(crate) lost: Option<u64>,
}

impl Stats {
    /// Round-trip figures of `name` for messages of `size` bytes.
    pub(super) fn new(
        name: &str,
        size: usize,
        thr: Option<f64>,
        h: Option<&Histogram<u64>>,
    ) -> Self {
        Stats {
            name: name.into(),
            msgs_per_s: thr,
            mb_per_s: thr.map(|t| t * size as f64 / 1e6),
            latency: h.and_then(Latency::of),
            sent: None,
            delivered: None,
            lost: None,
        }
    }

    /// Stream figures of `name`: `sent` messages of `size` bytes, `lost`
    /// of them never received, the delivered ones at `thr` per second.
    pub(super) fn stream(name: &str, size: usize, thr: f64, sent: u64, lost: u64) -> Self {
        Stats {
            sent: Some(sent),
            delivered: Some(sent.saturating_sub(lost)),
            lost: Some(lost),
            ..Stats::new(name, size, Some(thr), None)
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

/// Resolves once the receiving side of a stream is done counting: the
/// sender keeps its socket open until then, so nothing queued in it is
/// discarded by closing it early.
pub(crate) type Done = tokio::sync::oneshot::Receiver<()>;

/// Runs a stream: `send` sends `n` messages on its own task and then
/// waits for [`Done`], `recv` counts until `n` or 500 ms of silence;
/// returns (delivered msgs/s, lost).
pub(crate) async fn stream<S, SF, R, RF>(n: u64, send: S, recv: R) -> Result<(f64, u64), BoxError>
where
    S: FnOnce(u64, Done) -> SF,
    SF: Future<Output = Result<(), BoxError>> + Send + 'static,
    R: FnOnce(u64) -> RF,
    RF: Future<Output = (u64, Instant)>,
{
    let (done, wait) = tokio::sync::oneshot::channel();
    let start = Instant::now();
    let sender = tokio::spawn(send(n, wait));
    let (got, last) = recv(n).await;
    let _ = done.send(());
    // Timed to the last receipt: the receiver's wait for stragglers is
    // not counted.
    let secs = last.duration_since(start).as_secs_f64().max(1e-9);
    sender.await??;
    Ok((got as f64 / secs, n.saturating_sub(got)))
}

/// Something that receives messages one at a time.
pub(super) trait Recv {
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
pub(super) async fn count_until<R: Recv>(n: u64, r: &mut R) -> (u64, Instant) {
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

pub(super) fn tag(parts: &[&str]) -> String {
    format!("{}-{}", parts.join("-"), random_tag())
}

/// A number unique in this process, for ipc file names.
pub(crate) fn random_tag() -> u64 {
    TAGS.fetch_add(1, Ordering::Relaxed)
}

// ------------------------------------------------------------- zfabric

/// zfabric request/reply against a server at `ep` (or a new one here).
/// A CURVE key pair for each side of a `--curve` cell, each letting in
/// the other.
pub(crate) struct CurvePair {
    server: zfabric::CurveKeyPair,
    client: zfabric::CurveKeyPair,
}

impl CurvePair {
    pub(crate) fn new() -> Self {
        CurvePair {
            server: zfabric::CurveKeyPair::generate(),
            client: zfabric::CurveKeyPair::generate(),
        }
    }

    /// The bound side's settings.
    pub(crate) fn server(&self) -> zfabric::SocketConfig {
        zfabric::SocketConfig::default().curve(
            zfabric::CurveConfig::new(self.server.clone())
                .authorizer(zfabric::AllowList::from_keys([*self.client.public()])),
        )
    }

    /// The connecting side's settings.
    pub(crate) fn client(&self) -> zfabric::SocketConfig {
        zfabric::SocketConfig::default()
            .curve(zfabric::CurveConfig::new(self.client.clone()).server_key(*self.server.public()))
    }
}

pub(crate) async fn zf_reqrep(ep: &str, size: usize, budget: Budget) -> Result<Stats, BoxError> {
    zf_reqrep_with(ep, size, budget, Default::default(), "zfabric").await
}

/// Request/reply with the client configured as `cfg`, reported as `name`.
pub(crate) async fn zf_reqrep_with(
    ep: &str,
    size: usize,
    budget: Budget,
    cfg: zfabric::SocketConfig,
    name: &str,
) -> Result<Stats, BoxError> {
    let client: Arc<Client<ByteBuf, ByteBuf>> = Arc::new(
        zfabric::SocketBuilder::new()
            .config(cfg)
            .connect(ep)
            .client()
            .await?,
    );
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
    Ok(Stats::new(name, size, Some(thr), Some(&h)))
}

/// A zfabric echo server; returns its endpoint and its handle.
pub(crate) async fn zf_echo_server(
    bind: &str,
) -> Result<(String, zfabric::ServerHandle), BoxError> {
    zf_echo_server_with(bind, Default::default()).await
}

/// A zfabric echo server bound with `cfg`.
pub(crate) async fn zf_echo_server_with(
    bind: &str,
    cfg: zfabric::SocketConfig,
) -> Result<(String, zfabric::ServerHandle), BoxError> {
    let server: Server<ByteBuf, ByteBuf> = zfabric::SocketBuilder::new()
        .config(cfg)
        .bind(bind)
        .server()
        .await?;
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
    zf_pushpull_cfg(tp, dir, size, n, None).await
}

/// Push/pull under CURVE.
pub(crate) async fn zf_pushpull_with(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    n: u64,
    keys: &CurvePair,
) -> Result<Stats, BoxError> {
    zf_pushpull_cfg(tp, dir, size, n, Some(keys)).await
}

async fn zf_pushpull_cfg(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    n: u64,
    keys: Option<&CurvePair>,
) -> Result<Stats, BoxError> {
    let (bind_cfg, connect_cfg, name) = match keys {
        Some(k) => (k.server(), k.client(), "zfabric+curve"),
        None => (Default::default(), Default::default(), "zfabric"),
    };
    let mut pull: Puller<ByteBuf> = zfabric::SocketBuilder::new()
        .config(bind_cfg)
        .bind(endpoint(tp, dir, &tag(&["pp"])))
        .puller()
        .await?;
    let push: Pusher<ByteBuf> = zfabric::SocketBuilder::new()
        .config(connect_cfg)
        .connect(pull.endpoints()[0].to_string())
        .pusher()
        .await?;
    push.wait_connected().await;
    let body = Bytes::from(vec![7u8; size]);
    let (thr, lost) = stream(
        n,
        move |n, done| async move {
            for _ in 0..n {
                push.send_bytes(body.clone()).await?;
            }
            // Keep the pusher alive until the receiver is done.
            let _ = done.await;
            Ok(())
        },
        |n| count_until(n, &mut pull),
    )
    .await?;
    Ok(Stats::stream(name, size, thr, n, lost))
}

pub(crate) async fn zf_pubsub(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    n: u64,
) -> Result<Stats, BoxError> {
    // Configured as libzmq is here (its SNDHWM and RCVHWM raised to hold
    // the burst): the publisher's queue per subscriber holds the whole
    // burst, so a lossless run compares rates, not survivors.
    let burst = n as usize + 1024;
    let config = zfabric::SocketConfig::default()
        .queue_capacity(burst)
        .publisher_queue_bytes(burst * (size + 128));
    let publisher: Publisher<ByteBuf> = zfabric::SocketBuilder::new()
        .config(config.clone())
        .bind(endpoint(tp, dir, &tag(&["ps"])))
        .publisher()
        .await?;
    let mut sub: Subscriber<ByteBuf> = zfabric::SocketBuilder::new()
        .config(config)
        .connect(publisher.endpoints()[0].to_string())
        .subscriber(&["b."])
        .await?;
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
        move |n, done| async move {
            for _ in 0..n {
                publisher.publish_bytes(b"b.x", body.clone()).await?;
            }
            let _ = done.await;
            Ok(())
        },
        |n| count_until(n, &mut sub),
    )
    .await?;
    Ok(Stats::stream("zfabric", size, thr, n, lost))
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
    Ok(Stats::new("zfabric", size, Some(thr), Some(&h)))
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
    Ok(Stats::new("zfabric", size, None, Some(&h)))
}

//! The driver: starts the nodes (here or as child processes), waits for
//! the fabric, drives the loads, injects the faults, gathers the counts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_bytes::ByteBuf;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use zfabric::node::{CallError, CallOptions, Node, NodeConfig};
use zfabric::resilience::{BreakerConfig, BreakerState};
use zfabric::topology::events::{emit, EventDelivery};
use zfabric::topology::gateway::{sign_jwt, Claims, GatewayRequest};
use zfabric::topology::{scatter_gather, Scatter, Target};
use zfabric::{wire, Client, Publisher, Pusher, RequestError, SocketBuilder};

use super::report::{BreakerReport, FaultReport, Latency, LoadReport, Report};
use super::spec::{FaultKind, LoadKind, LoadSpec, NodeSpec, Spec};
use super::world::{self, Answer, DriverEps, LocalNode, NodeStats, Payload, PROBE};
use crate::app::histogram::{histogram, Unit};
use crate::app::BoxError;

/// Removes the run's ipc directory when the run ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node of the run: here, or a child process.
enum Member {
    Local {
        name: String,
        node: Option<LocalNode>,
        killed: Option<NodeStats>,
    },
    Child(ChildProc),
}

struct ChildProc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    probes: Arc<AtomicU64>,
    stats: Arc<Mutex<Option<NodeStats>>>,
    stats_seen: Arc<tokio::sync::Notify>,
    gateway: Option<String>,
    killed: bool,
}

impl Member {
    fn name(&self) -> &str {
        match self {
            Member::Local { name, .. } => name,
            Member::Child(c) => &c.name,
        }
    }

    fn probes(&self) -> u64 {
        match self {
            Member::Local { node: Some(n), .. } => n.counters.probes(),
            Member::Local { .. } => u64::MAX,
            Member::Child(c) => c.probes.load(Ordering::Relaxed),
        }
    }

    fn gateway(&self) -> Option<String> {
        match self {
            Member::Local { node: Some(n), .. } => {
                n.gateway.as_ref().map(|g| g.endpoints()[0].to_string())
            }
            Member::Local { .. } => None,
            Member::Child(c) => c.gateway.clone(),
        }
    }

    async fn apply(&mut self, kind: FaultKind, delay_ms: f64) {
        match self {
            Member::Local { name, node, killed } => match kind {
                FaultKind::Kill => {
                    if let Some(n) = node.take() {
                        *killed = Some(n.counters.snapshot(name, true));
                        drop(n);
                    }
                }
                FaultKind::Slow => node.iter().for_each(|n| n.fault.slow(delay_ms)),
                FaultKind::Fail => node.iter().for_each(|n| n.fault.fail()),
                FaultKind::Heal => node.iter().for_each(|n| n.fault.heal()),
            },
            Member::Child(c) => {
                let line = match kind {
                    FaultKind::Kill => {
                        c.killed = true;
                        let _ = c.child.start_kill();
                        return;
                    }
                    FaultKind::Slow => format!("slow {delay_ms}\n"),
                    FaultKind::Fail => "fail\n".into(),
                    FaultKind::Heal => "heal\n".into(),
                };
                if let Some(stdin) = c.stdin.as_mut() {
                    let _ = stdin.write_all(line.as_bytes()).await;
                    let _ = stdin.flush().await;
                }
            }
        }
    }

    async fn finish(self) -> NodeStats {
        match self {
            Member::Local { name, node, killed } => match (node, killed) {
                (Some(n), _) => n.counters.snapshot(&name, false),
                (None, Some(k)) => k,
                (None, None) => NodeStats {
                    name,
                    killed: true,
                    ..NodeStats::default()
                },
            },
            Member::Child(mut c) => {
                if c.killed {
                    let _ = c.child.wait().await;
                    return NodeStats {
                        name: c.name,
                        killed: true,
                        ..NodeStats::default()
                    };
                }
                drop(c.stdin.take());
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), c.stats_seen.notified()).await;
                let stats = c.stats.lock().ok().and_then(|s| s.clone());
                let _ = tokio::time::timeout(Duration::from_secs(5), c.child.wait()).await;
                let _ = c.child.start_kill();
                stats.unwrap_or(NodeStats {
                    name: c.name,
                    killed: true,
                    ..NodeStats::default()
                })
            }
        }
    }
}

async fn spawn_child(
    exe: &Path,
    file: &Path,
    transport: &str,
    node: &NodeSpec,
    seed: &str,
    eps: &DriverEps,
    expect: usize,
) -> Result<ChildProc, BoxError> {
    let mut child = tokio::process::Command::new(exe)
        .arg("run")
        .arg(file)
        .args([
            "--transport",
            transport,
            "--child",
            &node.name,
            "--seed",
            seed,
        ])
        .args(["--driver-eps", &serde_json::to_string(eps)?])
        .args(["--expect", &expect.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    let stdin = child.stdin.take();
    let probes = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new(None));
    let stats_seen = Arc::new(tokio::sync::Notify::new());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Value>();
    {
        let (probes, stats, stats_seen) = (probes.clone(), stats.clone(), stats_seen.clone());
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(j) = line.strip_prefix("READY ") {
                    if let (Some(tx), Ok(v)) = (ready.take(), serde_json::from_str(j)) {
                        let _ = tx.send(v);
                    }
                } else if let Some(n) = line.strip_prefix("PROBE ") {
                    probes.store(n.parse().unwrap_or(0), Ordering::Relaxed);
                } else if let Some(j) = line.strip_prefix("STATS ") {
                    if let (Ok(mut s), Ok(v)) = (stats.lock(), serde_json::from_str(j)) {
                        *s = Some(v);
                    }
                    stats_seen.notify_one();
                }
            }
        });
    }
    let ready = tokio::time::timeout(Duration::from_secs(20), ready_rx)
        .await
        .map_err(|_| format!("node {} did not start within 20 s", node.name))?
        .map_err(|_| format!("node {} exited before it was ready", node.name))?;
    Ok(ChildProc {
        name: node.name.clone(),
        child,
        stdin,
        probes,
        stats,
        stats_seen,
        gateway: ready["gateway"].as_str().map(str::to_owned),
        killed: false,
    })
}

/// The driver's sockets for socket-pattern loads.
struct Sockets {
    publisher: Option<Publisher<Payload>>,
    pusher: Option<Pusher<Payload>>,
    client: Option<Client<ByteBuf, ByteBuf>>,
}

/// Live counts shown while running.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    ok: AtomicU64,
    err: AtomicU64,
}

/// How one call ended.
enum Outcome {
    Ok {
        latency_us: u64,
        node: Option<String>,
        hops: u8,
        extra: Option<Value>,
    },
    Rejected,
    CircuitOpen,
    Timeout,
    Failed(String),
    /// Fire-and-forget: counted at the receivers.
    Sent,
}

fn ok(started: Instant, extra: Value) -> Outcome {
    Outcome::Ok {
        latency_us: started.elapsed().as_micros() as u64,
        node: None,
        hops: 0,
        extra: Some(extra),
    }
}

struct Tally {
    sent: u64,
    ok: u64,
    rejected: u64,
    circuit: u64,
    timeout: u64,
    failed: u64,
    hist: Histogram<u64>,
    served_by: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    max_hops: u8,
    extras: Vec<Value>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            sent: 0,
            ok: 0,
            rejected: 0,
            circuit: 0,
            timeout: 0,
            failed: 0,
            hist: histogram(Unit::Micros),
            served_by: BTreeMap::new(),
            errors: BTreeMap::new(),
            max_hops: 0,
            extras: Vec::new(),
        }
    }

    fn add(&mut self, o: Outcome) {
        self.sent += 1;
        match o {
            Outcome::Ok {
                latency_us,
                node,
                hops,
                extra,
            } => {
                self.ok += 1;
                let _ = self.hist.record(latency_us.max(1));
                if let Some(n) = node {
                    *self.served_by.entry(n).or_default() += 1;
                }
                self.max_hops = self.max_hops.max(hops);
                if let Some(e) = extra {
                    self.extras.push(e);
                }
            }
            Outcome::Rejected => self.rejected += 1,
            Outcome::CircuitOpen => self.circuit += 1,
            Outcome::Timeout => self.timeout += 1,
            Outcome::Failed(why) => {
                self.failed += 1;
                *self.errors.entry(why).or_default() += 1;
            }
            Outcome::Sent => {}
        }
    }
}

fn classify(e: &CallError) -> Outcome {
    match e {
        CallError::Rejected { .. } => Outcome::Rejected,
        CallError::CircuitOpen { .. } => Outcome::CircuitOpen,
        CallError::Request(RequestError::Timeout(_)) => Outcome::Timeout,
        CallError::Request(RequestError::Remote(r)) if r.message.contains("circuit open") => {
            Outcome::CircuitOpen
        }
        CallError::Request(RequestError::Remote(r))
            if r.known_code() == Some(zfabric::wire::RemoteCode::Rejected)
                || r.message.contains("refused the call") =>
        {
            Outcome::Rejected
        }
        CallError::Request(RequestError::Remote(r)) => Outcome::Failed(r.code.clone()),
        CallError::NoSuchService(_) => Outcome::Failed("no_such_service".into()),
        CallError::UnknownPeer(_) => Outcome::Failed("unknown_peer".into()),
        CallError::Request(RequestError::PeerGone) => Outcome::Failed("peer_gone".into()),
        other => Outcome::Failed(format!("{other}").chars().take(40).collect()),
    }
}

fn answer(raw: &[u8], started: Instant) -> Outcome {
    match wire::decode_body::<Answer>(raw) {
        Ok(a) => Outcome::Ok {
            latency_us: started.elapsed().as_micros() as u64,
            node: Some(a.node),
            hops: a.hops,
            extra: None,
        },
        Err(e) => Outcome::Failed(format!("bad answer: {e}")),
    }
}

/// A successful outcome with what its load kind reports beside it.
fn with_extra(o: Outcome, extra: Value) -> Outcome {
    match o {
        Outcome::Ok {
            latency_us,
            node,
            hops,
            ..
        } => Outcome::Ok {
            latency_us,
            node,
            hops,
            extra: Some(extra),
        },
        other => other,
    }
}

fn payload(seq: u64, size: usize, tier: &str) -> Payload {
    Payload {
        seq,
        sent_us: world::now_us(),
        tier: tier.to_owned(),
        data: ByteBuf::from(vec![0x5a; size]),
    }
}

/// Everything a load needs.
struct Ctx {
    driver: Arc<Node>,
    sockets: Arc<Sockets>,
    gateway: Option<Arc<Client<GatewayRequest, ByteBuf>>>,
    gateway_key: Option<String>,
    names: BTreeMap<zfabric::node::PeerId, String>,
}

/// One call of `load`, number `seq`.
async fn one(ctx: &Ctx, load: &LoadSpec, seq: u64) -> Outcome {
    let timeout = Duration::from_millis(load.timeout_ms);
    let started = Instant::now();
    let tier = if load.routes.is_empty() {
        String::new()
    } else {
        load.routes[seq as usize % load.routes.len()].0.clone()
    };
    let p = payload(seq, load.size, &tier);
    let body = match wire::encode_body(&p) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut opts = CallOptions::default().timeout(timeout);
    if load.idempotent {
        opts = opts.idempotent();
    }
    match load.kind {
        LoadKind::Publish => {
            let Some(publisher) = ctx.sockets.publisher.as_ref() else {
                return Outcome::Failed("no publisher".into());
            };
            let topic = if load.topics.is_empty() {
                load.target.clone()
            } else {
                load.topics[seq as usize % load.topics.len()].clone()
            };
            match publisher.publish(&topic, &p).await {
                Ok(()) => Outcome::Sent,
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        LoadKind::Push => {
            let Some(pusher) = ctx.sockets.pusher.as_ref() else {
                return Outcome::Failed("no pusher".into());
            };
            match pusher.send(&p).await {
                Ok(()) => Outcome::Sent,
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        LoadKind::Request => {
            let Some(c) = ctx.sockets.client.as_ref() else {
                return Outcome::Failed("no client".into());
            };
            match c
                .request_within(&ByteBuf::from(body.to_vec()), timeout)
                .await
            {
                Ok(raw) => answer(&raw, started),
                Err(RequestError::Timeout(_)) => Outcome::Timeout,
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        LoadKind::Anycast => match ctx.driver.request_raw(&load.target, body, opts).await {
            Ok(raw) => answer(&raw, started),
            Err(e) => classify(&e),
        },
        LoadKind::Route => {
            let service = load.routes[seq as usize % load.routes.len()].1.clone();
            match ctx.driver.request_raw(&service, body, opts).await {
                Ok(raw) => with_extra(
                    answer(&raw, started),
                    json!({ "tier": tier, "route": service }),
                ),
                Err(e) => classify(&e),
            }
        }
        LoadKind::Unicast => {
            let (node, service) = load.target.split_once('/').unwrap_or_default();
            let Some(id) = ctx
                .names
                .iter()
                .find(|(_, n)| n.as_str() == node)
                .map(|(id, _)| *id)
            else {
                return Outcome::Failed("unknown_peer".into());
            };
            match ctx.driver.request_peer_raw(id, service, body, opts).await {
                Ok(raw) => answer(&raw, started),
                Err(e) => classify(&e),
            }
        }
        LoadKind::Multicast => match ctx.driver.multicast(&load.target, &p, timeout).await {
            Ok(r) => {
                let missed: Vec<String> = r
                    .failed
                    .iter()
                    .map(|(id, _)| {
                        ctx.names
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| format!("{id:?}"))
                    })
                    .collect();
                ok(
                    started,
                    json!({ "delivered": r.delivered.len(), "missed": missed }),
                )
            }
            Err(e) => classify(&e),
        },
        LoadKind::Aggregate => {
            let policy = load
                .policy
                .as_deref()
                .map(super::spec::parse_policy)
                .transpose()
                .ok()
                .flatten()
                .unwrap_or(zfabric::topology::Completion::ByDeadline);
            let scatter = Scatter::Members(load.target.clone());
            match scatter_gather::<Payload, Answer>(&ctx.driver, &scatter, &p, policy, timeout)
                .await
            {
                Ok(g) => {
                    let name = |t: &Target| match t {
                        Target::Member(_, n) => n.clone(),
                        Target::Service(s) => s.clone(),
                    };
                    ok(
                        started,
                        json!({
                            "satisfied": g.satisfied(),
                            "replies": g.replies.len(),
                            "n": g.n,
                            "failed": g.failed.iter().map(|(t, _)| name(t)).collect::<Vec<_>>(),
                            "timed_out": g.timed_out.iter().map(name).collect::<Vec<_>>(),
                        }),
                    )
                }
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        LoadKind::Branch => {
            let services: Vec<&str> = load.services.iter().map(String::as_str).collect();
            let outcomes = zfabric::topology::branch::parallel::<Payload, Answer, _>(
                &ctx.driver,
                &services,
                &p,
                timeout,
                |v| {
                    v.into_iter()
                        .map(|(s, r)| (s, r.is_ok()))
                        .collect::<Vec<_>>()
                },
            )
            .await;
            let all = outcomes.iter().all(|(_, ok)| *ok);
            let extra = json!({ "branches": outcomes.iter().map(|(s, ok)| json!([s, ok])).collect::<Vec<_>>() });
            if all {
                ok(started, extra)
            } else {
                Outcome::Failed("a branch failed".into())
            }
        }
        LoadKind::Event => {
            let delivery = match load.delivery.as_deref() {
                Some("at_most_once") => EventDelivery::AtMostOnce { timeout },
                _ => EventDelivery::AtLeastOnce {
                    ack_timeout: timeout,
                    max_attempts: 10,
                    backoff: Duration::from_millis(20),
                },
            };
            match emit(&ctx.driver, &load.target, &p, delivery).await {
                Ok(r) => {
                    let extra = json!({
                        "acked": r.acked,
                        "lost": r.lost.iter().map(|(g, _)| g.clone()).collect::<Vec<_>>(),
                        "redeliveries": r.redeliveries,
                    });
                    if r.lost.is_empty() && !r.acked.is_empty() {
                        ok(started, extra)
                    } else if r.acked.is_empty() && r.lost.is_empty() {
                        Outcome::Failed("no_consumer".into())
                    } else {
                        Outcome::Failed("group_lost".into())
                    }
                }
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        LoadKind::Gateway => {
            let (Some(gw), Some(key)) = (ctx.gateway.as_ref(), ctx.gateway_key.as_ref()) else {
                return Outcome::Failed("no gateway".into());
            };
            let forged = world::chance(load.bad_token_rate);
            let claims = Claims {
                sub: "driver".into(),
                exp: world::now_us() / 1_000_000 + 3600,
                nbf: None,
                services: None,
            };
            let token = if forged {
                sign_jwt(b"not-the-key", &claims)
            } else {
                sign_jwt(key.as_bytes(), &claims)
            };
            let req = GatewayRequest {
                token,
                service: load.target.clone(),
                body: ByteBuf::from(body.to_vec()),
            };
            match gw.request_within(&req, timeout).await {
                Ok(raw) => with_extra(answer(&raw, started), json!({ "forged": forged })),
                Err(RequestError::Remote(r))
                    if r.known_code() == Some(zfabric::wire::RemoteCode::Unauthorized) =>
                {
                    Outcome::Failed(if forged {
                        "forged_refused".into()
                    } else {
                        "unauthorized".into()
                    })
                }
                Err(RequestError::Remote(r)) => Outcome::Failed(r.code),
                Err(RequestError::Timeout(_)) => Outcome::Timeout,
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
    }
}

fn record(t: &Mutex<Tally>, p: &Progress, o: Outcome) {
    match &o {
        Outcome::Ok { .. } | Outcome::Sent => p.ok.fetch_add(1, Ordering::Relaxed),
        _ => p.err.fetch_add(1, Ordering::Relaxed),
    };
    p.sent.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut t) = t.lock() {
        t.add(o);
    }
}

/// Drives `load` for its duration or count; returns the tally.
async fn drive_load(ctx: Arc<Ctx>, load: LoadSpec, progress: Arc<Progress>) -> (Tally, Duration) {
    let started = Instant::now();
    let duration = Duration::from_secs_f64(load.duration_s.max(0.0));
    let limit = if load.count > 0 { load.count } else { u64::MAX };
    let tally = Arc::new(Mutex::new(Tally::new()));
    if load.rate > 0.0 {
        // Open loop: calls start on schedule; at most 4096 in flight.
        let gate = Arc::new(tokio::sync::Semaphore::new(4096.max(load.concurrency)));
        let mut tasks = Vec::new();
        let mut i = 0u64;
        while i < limit {
            let at = started + Duration::from_secs_f64(i as f64 / load.rate);
            if load.count == 0 && at.duration_since(started) >= duration {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
            let Ok(permit) = gate.clone().acquire_owned().await else {
                break;
            };
            let (ctx, load2, tally, progress) =
                (ctx.clone(), load.clone(), tally.clone(), progress.clone());
            tasks.push(tokio::spawn(async move {
                let o = one(&ctx, &load2, i).await;
                record(&tally, &progress, o);
                drop(permit);
            }));
            i += 1;
        }
        for t in tasks {
            let _ = t.await;
        }
    } else {
        let next = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..load.concurrency)
            .map(|_| {
                let (ctx, load2, tally, progress, next) = (
                    ctx.clone(),
                    load.clone(),
                    tally.clone(),
                    progress.clone(),
                    next.clone(),
                );
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= limit || (load2.count == 0 && started.elapsed() >= duration) {
                            break;
                        }
                        let o = one(&ctx, &load2, i).await;
                        record(&tally, &progress, o);
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
    }
    let elapsed = started.elapsed();
    let t = std::mem::replace(
        &mut *tally.lock().unwrap_or_else(|e| e.into_inner()),
        Tally::new(),
    );
    (t, elapsed)
}

fn driver_config(spec: &Spec) -> NodeConfig {
    let mut cfg = NodeConfig::default();
    if spec.caller.no_breaker {
        cfg.breaker = None;
    } else if let Some(b) = &spec.caller.breaker {
        cfg.breaker = Some(BreakerConfig {
            window: b.window,
            minimum_calls: b.minimum_calls,
            failure_rate: b.failure_rate,
            open_for: Duration::from_millis(b.open_for_ms),
            half_open_calls: b.half_open_calls,
            ..BreakerConfig::default()
        });
    }
    cfg
}

/// How a run is made.
pub(super) struct Mode<'a> {
    pub(super) file: &'a Path,
    pub(super) exe: &'a Path,
    pub(super) transport: &'a str,
    pub(super) split: bool,
    pub(super) duration: Option<f64>,
    pub(super) show_progress: bool,
}

/// Runs the whole topology; returns the report.
pub(super) async fn drive(spec: &Spec, mode: Mode<'_>) -> Result<Report, BoxError> {
    let Mode {
        file,
        exe,
        transport,
        split,
        duration,
        show_progress,
    } = mode;
    let dir = TempDir(super::tempfile_dir()?);
    let mut loads = spec.loads.clone();
    if let Some(d) = duration {
        for l in &mut loads {
            l.duration_s = d;
            l.count = 0;
        }
    }
    let driver = Arc::new(
        Node::builder("driver")
            .config(driver_config(spec))
            .bind(world::node_endpoint(transport, &dir.0, "driver"))
            .start()
            .await?,
    );
    let seed = driver.endpoints()[0].to_string();
    // The driver's sockets, bound, for the nodes with socket roles.
    let bind = |tag: &str| world::node_endpoint(transport, &dir.0, tag);
    let publisher = if spec.nodes.iter().any(|n| !n.subscribe.is_empty()) {
        Some(
            SocketBuilder::new()
                .bind(bind("pub"))
                .publisher::<Payload>()
                .await?,
        )
    } else {
        None
    };
    let pusher = if spec.nodes.iter().any(|n| n.pull) {
        Some(
            SocketBuilder::new()
                .bind(bind("push"))
                .pusher::<Payload>()
                .await?,
        )
    } else {
        None
    };
    let client = if spec.nodes.iter().any(|n| n.reply.is_some()) {
        Some(
            SocketBuilder::new()
                .bind(bind("req"))
                .client::<ByteBuf, ByteBuf>()
                .await?,
        )
    } else {
        None
    };
    let eps = DriverEps {
        publish: publisher.as_ref().map(|p| p.endpoints()[0].to_string()),
        push: pusher.as_ref().map(|p| p.endpoints()[0].to_string()),
        request: client.as_ref().map(|c| c.endpoints()[0].to_string()),
    };
    let mut members: Vec<Member> = Vec::new();
    for n in &spec.nodes {
        let m = if split {
            Member::Child(
                spawn_child(exe, file, transport, n, &seed, &eps, spec.nodes.len()).await?,
            )
        } else {
            Member::Local {
                name: n.name.clone(),
                node: Some(world::start_node(n, transport, &dir.0, &seed, &eps).await?),
                killed: None,
            }
        };
        members.push(m);
    }
    // The fabric is up when the driver and every local node see everyone.
    let everyone = spec.nodes.len();
    for _ in 0..1000 {
        let locals_ok = members.iter().all(|m| match m {
            Member::Local { node: Some(n), .. } => n.node.members().len() >= everyone,
            _ => true,
        });
        if driver.members().len() >= everyone && locals_ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if driver.members().len() < everyone {
        return Err(format!(
            "only {} of {everyone} nodes joined within 10 s",
            driver.members().len()
        )
        .into());
    }
    let sockets = Arc::new(Sockets {
        publisher,
        pusher,
        client,
    });
    probe(spec, &members, &sockets).await?;

    let names = driver
        .members()
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    let gateway = match members.iter().find_map(Member::gateway) {
        Some(ep) => Some(Arc::new(
            Client::<GatewayRequest, ByteBuf>::connect(&ep).await?,
        )),
        None => None,
    };
    let ctx = Arc::new(Ctx {
        driver: driver.clone(),
        sockets: sockets.clone(),
        gateway,
        gateway_key: spec
            .nodes
            .iter()
            .find_map(|n| n.gateway.as_ref().map(|g| g.key.clone())),
        names,
    });
    let progress: Vec<Arc<Progress>> = loads
        .iter()
        .map(|_| Arc::new(Progress::default()))
        .collect();
    let start = Instant::now();
    let breaker_start = tokio::time::Instant::now().into_std();
    let runs: Vec<_> = loads
        .iter()
        .cloned()
        .zip(progress.iter().cloned())
        .map(|(l, p)| tokio::spawn(drive_load(ctx.clone(), l, p)))
        .collect();
    // Faults on schedule, and progress once a second, while loads run.
    let mut faults: Vec<_> = spec.faults.clone();
    faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut applied = Vec::new();
    let mut pending = faults.into_iter().peekable();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut last_progress = Instant::now();
    while !runs.iter().all(|r| r.is_finished()) {
        tick.tick().await;
        while let Some(f) = pending.next_if(|f| start.elapsed().as_secs_f64() >= f.at_s) {
            if let Some(m) = members.iter_mut().find(|m| m.name() == f.node) {
                m.apply(f.kind, f.delay_ms).await;
            }
            applied.push(FaultReport {
                at_s: start.elapsed().as_secs_f64(),
                kind: f.kind,
                node: f.node.clone(),
            });
            if show_progress {
                eprintln!(
                    "  [{:>5.1}s] fault: {:?} {}",
                    start.elapsed().as_secs_f64(),
                    f.kind,
                    f.node
                );
            }
        }
        if show_progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let parts: Vec<String> = loads
                .iter()
                .zip(&progress)
                .map(|(l, p)| {
                    format!(
                        "{} {}: sent {} ok {} err {}",
                        format!("{:?}", l.kind).to_lowercase(),
                        l.target,
                        p.sent.load(Ordering::Relaxed),
                        p.ok.load(Ordering::Relaxed),
                        p.err.load(Ordering::Relaxed)
                    )
                })
                .collect();
            eprintln!(
                "  [{:>5.1}s] {}",
                start.elapsed().as_secs_f64(),
                parts.join(" | ")
            );
        }
    }
    let mut tallies = Vec::new();
    for r in runs {
        tallies.push(r.await?);
    }
    // Let fire-and-forget messages arrive before counting them.
    settle(&members, split).await;
    let member_names: BTreeMap<_, _> = driver
        .members()
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    let mut nodes = Vec::new();
    for m in members {
        nodes.push(m.finish().await);
    }
    let state = |s: BreakerState| match s {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    };
    let breaker = driver
        .breaker_log()
        .into_iter()
        .map(|e| BreakerReport {
            at_s: e.at.saturating_duration_since(breaker_start).as_secs_f64(),
            member: member_names
                .get(&e.peer)
                .cloned()
                .unwrap_or_else(|| format!("{:016x}", e.peer.0)),
            service: e.service,
            from: state(e.transition.from).into(),
            to: state(e.transition.to).into(),
        })
        .collect();
    let loads = loads
        .iter()
        .zip(tallies)
        .map(|(l, (t, elapsed))| load_report(l, t, elapsed, &nodes, &spec.nodes))
        .collect();
    Ok(Report {
        name: spec.name.clone(),
        summary: spec.summary.clone(),
        transport: transport.to_owned(),
        split,
        loads,
        nodes,
        faults: applied,
        breaker,
    })
}

/// Sends probes until every socket role has seen one (pub/sub drops what
/// is published before a subscription arrives; a pusher deals only to the
/// pullers connected so far).
async fn probe(spec: &Spec, members: &[Member], sockets: &Sockets) -> Result<(), BoxError> {
    let with = |pred: &dyn Fn(&NodeSpec) -> bool| -> Vec<&Member> {
        members
            .iter()
            .zip(&spec.nodes)
            .filter(|(_, n)| pred(n))
            .map(|(m, _)| m)
            .collect()
    };
    let subs = with(&|n| !n.subscribe.is_empty());
    let pulls = with(&|n| n.pull);
    let repliers: Vec<String> = spec
        .nodes
        .iter()
        .filter(|n| n.reply.is_some())
        .map(|n| n.name.clone())
        .collect();
    let mut seen_repliers = std::collections::BTreeSet::new();
    for _ in 0..500 {
        let subs_ok = subs.iter().all(|m| m.probes() > 0);
        let pulls_ok = pulls.iter().all(|m| m.probes() > 0);
        let reps_ok = repliers.iter().all(|r| seen_repliers.contains(r));
        if subs_ok && pulls_ok && reps_ok {
            return Ok(());
        }
        if !subs_ok {
            if let Some(p) = &sockets.publisher {
                for n in spec.nodes.iter().filter(|n| !n.subscribe.is_empty()) {
                    for prefix in &n.subscribe {
                        let _ = p
                            .publish(&format!("{prefix}{PROBE}"), &payload(0, 0, PROBE))
                            .await;
                    }
                }
            }
        }
        if !pulls_ok {
            if let Some(p) = &sockets.pusher {
                for _ in 0..pulls.len() {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(20),
                        p.send(&payload(0, 0, PROBE)),
                    )
                    .await;
                }
            }
        }
        if !reps_ok {
            if let Some(c) = &sockets.client {
                let body = wire::encode_body(&payload(0, 0, PROBE))?;
                if let Ok(raw) = c
                    .request_within(&ByteBuf::from(body.to_vec()), Duration::from_millis(200))
                    .await
                {
                    if let Ok(a) = wire::decode_body::<Answer>(&raw) {
                        seen_repliers.insert(a.node);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("socket roles did not all connect within 10 s".into())
}

/// Waits until the receivers' counts stop moving (in-process), or a short
/// grace (child processes report at the end).
async fn settle(members: &[Member], split: bool) {
    if split {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    }
    let total = || -> u64 {
        members
            .iter()
            .map(|m| match m {
                Member::Local {
                    node: Some(n),
                    name,
                    ..
                } => n
                    .counters
                    .snapshot(name, false)
                    .received
                    .values()
                    .sum::<u64>(),
                _ => 0,
            })
            .sum()
    };
    let mut last = total();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total();
        if now == last {
            return;
        }
        last = now;
    }
}

fn merge_latency(nodes: &[NodeStats]) -> Histogram<u64> {
    let mut h = histogram(Unit::Micros);
    for n in nodes {
        for (v, c) in &n.latency_us {
            let _ = h.record_n((*v).max(1), *c);
        }
    }
    h
}

fn count_names<'a>(names: impl Iterator<Item = &'a Value>, into: &mut BTreeMap<String, u64>) {
    for m in names {
        *into
            .entry(m.as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
}

/// Messages each subscriber should have got: the publish load cycles
/// over its topics, so each topic got `sent / len` (the first ones one
/// more).
fn expected_per_subscriber(l: &LoadSpec, sent: u64, specs: &[NodeSpec]) -> BTreeMap<String, u64> {
    let topics: Vec<&str> = if l.topics.is_empty() {
        vec![l.target.as_str()]
    } else {
        l.topics.iter().map(String::as_str).collect()
    };
    let len = topics.len() as u64;
    specs
        .iter()
        .filter(|n| !n.subscribe.is_empty())
        .map(|n| {
            let expected = topics
                .iter()
                .enumerate()
                .filter(|(_, t)| n.subscribe.iter().any(|p| t.starts_with(p.as_str())))
                .map(|(i, _)| sent / len + u64::from((i as u64) < sent % len))
                .sum();
            (n.name.clone(), expected)
        })
        .collect()
}

fn load_report(
    l: &LoadSpec,
    t: Tally,
    elapsed: Duration,
    nodes: &[NodeStats],
    specs: &[NodeSpec],
) -> LoadReport {
    let mut outcome: BTreeMap<String, Value> = BTreeMap::new();
    let mut delivered = t.ok;
    let mut lost = 0;
    let mut latency = Latency::of(&t.hist);
    if !t.served_by.is_empty() {
        outcome.insert("served_by".into(), json!(t.served_by));
    }
    if t.max_hops > 0 {
        outcome.insert("max_hops".into(), json!(t.max_hops));
    }
    if !t.errors.is_empty() {
        outcome.insert("errors".into(), json!(t.errors));
    }
    let list = |e: &Value, k: &str| e[k].as_array().cloned().unwrap_or_default();
    match l.kind {
        LoadKind::Publish => {
            let per: BTreeMap<&str, u64> = nodes
                .iter()
                .filter(|n| !n.received.is_empty() || n.lost > 0)
                .map(|n| (n.name.as_str(), n.received.values().sum()))
                .collect();
            delivered = per.values().sum();
            let gaps: u64 = nodes.iter().map(|n| n.lost).sum();
            let expected = expected_per_subscriber(l, t.sent - t.failed, specs);
            // Lost: what a live subscriber should have had and did not.
            lost = expected
                .iter()
                .filter(|(name, _)| nodes.iter().any(|n| &n.name == *name && !n.killed))
                .map(|(name, e)| e.saturating_sub(per.get(name.as_str()).copied().unwrap_or(0)))
                .sum();
            outcome.insert("delivered_per_subscriber".into(), json!(per));
            outcome.insert("expected_per_subscriber".into(), json!(expected));
            outcome.insert("gaps_reported".into(), json!(gaps));
            latency = Latency::of(&merge_latency(nodes));
        }
        LoadKind::Push => {
            let per: BTreeMap<&str, u64> = nodes
                .iter()
                .filter_map(|n| n.received.get("pull").map(|c| (n.name.as_str(), *c)))
                .collect();
            delivered = per.values().sum();
            lost = t.sent.saturating_sub(t.failed).saturating_sub(delivered);
            outcome.insert("per_worker".into(), json!(per));
            latency = Latency::of(&merge_latency(nodes));
        }
        LoadKind::Multicast => {
            let mut missed = BTreeMap::new();
            let mut reached = 0u64;
            for e in &t.extras {
                reached += e["delivered"].as_u64().unwrap_or(0);
                count_names(list(e, "missed").iter(), &mut missed);
            }
            delivered = reached;
            lost = missed.values().sum();
            outcome.insert("member_deliveries".into(), json!(reached));
            outcome.insert("missed_by_member".into(), json!(missed));
        }
        LoadKind::Aggregate => {
            let (mut satisfied, mut replies, mut n) = (0u64, 0u64, 0u64);
            let mut timed_out = BTreeMap::new();
            let mut failed = BTreeMap::new();
            for e in &t.extras {
                satisfied += u64::from(e["satisfied"].as_bool().unwrap_or(false));
                replies += e["replies"].as_u64().unwrap_or(0);
                n += e["n"].as_u64().unwrap_or(0);
                count_names(list(e, "timed_out").iter(), &mut timed_out);
                count_names(list(e, "failed").iter(), &mut failed);
            }
            let gathers = t.extras.len().max(1) as f64;
            outcome.insert(
                "policy".into(),
                json!(l.policy.clone().unwrap_or_else(|| "deadline".into())),
            );
            outcome.insert("satisfied".into(), json!(satisfied));
            outcome.insert("partial".into(), json!(t.extras.len() as u64 - satisfied));
            outcome.insert("avg_replies".into(), json!(replies as f64 / gathers));
            outcome.insert("avg_n".into(), json!(n as f64 / gathers));
            outcome.insert(
                "completeness".into(),
                json!(if n > 0 {
                    replies as f64 / n as f64
                } else {
                    0.0
                }),
            );
            outcome.insert("timed_out_members".into(), json!(timed_out));
            outcome.insert("failed_members".into(), json!(failed));
        }
        LoadKind::Branch => {
            let mut per: BTreeMap<String, u64> = BTreeMap::new();
            for e in &t.extras {
                for b in list(e, "branches") {
                    if b[1].as_bool() == Some(true) {
                        *per.entry(b[0].as_str().unwrap_or("?").to_owned())
                            .or_default() += 1;
                    }
                }
            }
            outcome.insert("ok_per_branch".into(), json!(per));
        }
        LoadKind::Route => {
            let mut per: BTreeMap<String, u64> = BTreeMap::new();
            for e in &t.extras {
                let k = format!(
                    "{} -> {}",
                    e["tier"].as_str().unwrap_or("?"),
                    e["route"].as_str().unwrap_or("?")
                );
                *per.entry(k).or_default() += 1;
            }
            outcome.insert("routed".into(), json!(per));
        }
        LoadKind::Event => {
            let mut acked = BTreeMap::new();
            let mut redeliveries = 0u64;
            for e in &t.extras {
                count_names(list(e, "acked").iter(), &mut acked);
                redeliveries += e["redeliveries"].as_u64().unwrap_or(0);
            }
            let mut handled: BTreeMap<String, u64> = BTreeMap::new();
            for n in nodes {
                for (k, v) in &n.handled {
                    if let Some(g) = k.strip_prefix("consumer:") {
                        *handled.entry(g.to_owned()).or_default() += v;
                    }
                }
            }
            lost = t.failed;
            outcome.insert("acked_by_group".into(), json!(acked));
            outcome.insert("handled_by_group".into(), json!(handled));
            outcome.insert("redeliveries".into(), json!(redeliveries));
        }
        LoadKind::Gateway => {
            let forged_refused = t.errors.get("forged_refused").copied().unwrap_or(0);
            let forged_ok = t
                .extras
                .iter()
                .filter(|e| e["forged"].as_bool() == Some(true))
                .count();
            let handled: u64 = nodes
                .iter()
                .flat_map(|n| n.handled.iter())
                .filter(|(k, _)| k.as_str() == l.target)
                .map(|(_, v)| *v)
                .sum();
            outcome.insert("forged_refused".into(), json!(forged_refused));
            outcome.insert("forged_accepted".into(), json!(forged_ok));
            outcome.insert("service_handled".into(), json!(handled));
            outcome.insert("authorized_ok".into(), json!(t.ok));
        }
        LoadKind::Anycast | LoadKind::Unicast | LoadKind::Request => {}
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    LoadReport {
        kind: l.kind,
        target: match l.kind {
            LoadKind::Branch => l.services.join("+"),
            LoadKind::Route => {
                let mut s: Vec<&str> = l.routes.iter().map(|r| r.1.as_str()).collect();
                s.dedup();
                s.join("|")
            }
            LoadKind::Publish if !l.topics.is_empty() => l.topics.join(","),
            LoadKind::Push if l.target.is_empty() => "workers".into(),
            LoadKind::Request if l.target.is_empty() => "servers".into(),
            _ => l.target.clone(),
        },
        sent: t.sent,
        delivered,
        lost,
        rejected: t.rejected,
        circuit_open: t.circuit,
        timed_out: t.timeout,
        failed: t.failed,
        latency,
        throughput_per_s: delivered as f64 / secs,
        elapsed_s: secs,
        outcome,
    }
}

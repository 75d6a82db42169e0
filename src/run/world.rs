//! The nodes of a topology file, started for real: services with their
//! handlers and bulkheads, consumers, groups, socket roles and gateways;
//! with counters the report reads and switches the faults flip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zfabric::node::{Node, NodeBuilder, NodeHandle, ServeOptions};
use zfabric::resilience::{Bulkhead, BulkheadConfig, DedupConfig};
use zfabric::topology::events::{emit, Event, EventDelivery};
use zfabric::topology::gateway::{Auth, Gateway, GatewayConfig};
use zfabric::{wire, RemoteError, Request, SocketBuilder};

use super::spec::{HandlerKind, HandlerSpec, NodeSpec};
use crate::app::histogram::{histogram, Unit};
use crate::app::BoxError;

/// What the driver sends to services and sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub(crate) seq: u64,
    /// Wall-clock send time, µs since the epoch (latency at receivers).
    pub(crate) sent_us: u64,
    pub(crate) tier: String,
    pub(crate) data: ByteBuf,
}

/// What services answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub(crate) node: String,
    pub(crate) hops: u8,
    pub(crate) data: ByteBuf,
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A small, fast random source (xorshift), good enough for fault rates
/// and delays.
pub(crate) fn random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static S: Cell<u64> = Cell::new(now_us() ^ 0x9E37_79B9_7F4A_7C15 ^ (std::process::id() as u64) << 32);
    }
    S.with(|s| {
        let mut x = s.get() | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

pub(crate) fn chance(p: f64) -> bool {
    p > 0.0 && (random() % 1_000_000) as f64 / 1_000_000.0 < p
}

/// Faults a node is under (flipped by the driver).
#[derive(Debug, Default)]
pub(crate) struct Fault {
    extra_delay_us: AtomicU64,
    failing: AtomicBool,
}

impl Fault {
    pub(crate) fn slow(&self, ms: f64) {
        self.extra_delay_us
            .store((ms * 1000.0) as u64, Ordering::Relaxed);
    }
    pub(crate) fn fail(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }
    pub(crate) fn heal(&self) {
        self.extra_delay_us.store(0, Ordering::Relaxed);
        self.failing.store(false, Ordering::Relaxed);
    }
}

/// Counters of one node.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Handled successfully, by service / `consumer:<group>` / `group:<g>`
    /// / `socket`.
    handled: DashMap<String, AtomicU64>,
    /// Received by socket roles, by topic (pub/sub) or "pull"/"reply".
    received: DashMap<String, AtomicU64>,
    probes: AtomicU64,
    lost: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            handled: DashMap::new(),
            received: DashMap::new(),
            probes: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            latency: Mutex::new(histogram(Unit::Micros)),
        }
    }
}

fn bump(map: &DashMap<String, AtomicU64>, key: &str) {
    if let Some(c) = map.get(key) {
        c.fetch_add(1, Ordering::Relaxed);
        return;
    }
    map.entry(key.to_owned())
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn latency(&self, sent_us: u64) {
        let d = now_us().saturating_sub(sent_us).max(1);
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record(d);
        }
    }

    pub(crate) fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self, name: &str, killed: bool) -> NodeStats {
        let collect = |m: &DashMap<String, AtomicU64>| {
            m.iter()
                .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
                .collect::<BTreeMap<_, _>>()
        };
        let latency = self
            .latency
            .lock()
            .map(|h| {
                h.iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect()
            })
            .unwrap_or_default();
        NodeStats {
            name: name.to_owned(),
            killed,
            handled: collect(&self.handled),
            received: collect(&self.received),
            lost: self.lost.load(Ordering::Relaxed),
            latency_us: latency,
        }
    }
}

/// What a node reports at the end (also the `STATS` line of a child).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeStats {
    pub(crate) name: String,
    pub(crate) killed: bool,
    pub(crate) handled: BTreeMap<String, u64>,
    pub(crate) received: BTreeMap<String, u64>,
    /// Messages its subscriber knows it missed (sequence gaps).
    pub(crate) lost: u64,
    /// Receive latency of its socket roles: `(µs, count)`.
    pub(crate) latency_us: Vec<(u64, u64)>,
}

/// Where the driver's sockets listen, for socket roles.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DriverEps {
    pub(crate) publish: Option<String>,
    pub(crate) push: Option<String>,
    pub(crate) request: Option<String>,
}

/// A node of the topology, running in this process.
pub(crate) struct LocalNode {
    pub(crate) node: Arc<Node>,
    pub(crate) gateway: Option<Gateway>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) fault: Arc<Fault>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs one handler kind on a payload.
async fn run_handler(
    me: &str,
    spec: &HandlerSpec,
    fault: &Fault,
    node: Option<&NodeHandle>,
    raw: Bytes,
) -> Result<Bytes, RemoteError> {
    let extra = fault.extra_delay_us.load(Ordering::Relaxed);
    if extra > 0 {
        tokio::time::sleep(Duration::from_micros(extra)).await;
    }
    if fault.failing.load(Ordering::Relaxed) {
        return Err(RemoteError::new(
            zfabric::wire::RemoteCode::Injected,
            format!("{me} is failing (fault)"),
        ));
    }
    if spec.handler == HandlerKind::Forward {
        let next = spec.to.as_deref().unwrap_or_default();
        let node = node
            .and_then(|h| h.node())
            .ok_or_else(|| RemoteError::new(zfabric::wire::RemoteCode::Stopping, me.to_owned()))?;
        return node
            .request_raw(
                next,
                raw,
                zfabric::node::CallOptions::default().timeout(Duration::from_secs(30)),
            )
            .await
            .map_err(|e| zfabric::topology::chain::upstream_error(next, e));
    }
    // Bodies from the driver are `Payload`s and get an `Answer`; anything
    // else (a `zfabric req` JSON body) is answered with itself.
    let payload: Option<Payload> = wire::decode_body(&raw).ok();
    match spec.handler {
        HandlerKind::Echo => {}
        HandlerKind::Delay => {
            tokio::time::sleep(Duration::from_secs_f64(spec.delay_ms / 1000.0)).await
        }
        HandlerKind::RandomDelay => {
            let span = (spec.max_delay_ms - spec.delay_ms).max(0.0);
            let ms = spec.delay_ms + span * (random() % 10_000) as f64 / 10_000.0;
            tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
        }
        HandlerKind::Fail => {
            if chance(spec.fail_rate) {
                return Err(RemoteError::new(
                    zfabric::wire::RemoteCode::Injected,
                    format!("{me} failed (fail_rate)"),
                ));
            }
        }
        HandlerKind::Cpu => {
            let until = std::time::Instant::now() + Duration::from_micros(spec.cpu_us);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        HandlerKind::Forward => unreachable!("handled above"),
    }
    let Some(p) = payload else {
        return Ok(raw);
    };
    let data = if matches!(spec.handler, HandlerKind::Echo | HandlerKind::Fail) {
        p.data
    } else {
        ByteBuf::new()
    };
    wire::encode_body(&Answer {
        node: me.to_owned(),
        hops: zfabric::resilience::deadline::current_hops(),
        data,
    })
    .map_err(|e| RemoteError::new(zfabric::wire::RemoteCode::BadReply, e.to_string()))
}

fn endpoint(transport: &str, dir: &std::path::Path, name: &str) -> String {
    match transport {
        "inproc" => format!("inproc://zfabric-run-{}-{name}", std::process::id()),
        "ipc" => format!("ipc://{}/{name}.sock", dir.display()),
        _ => "tcp://127.0.0.1:0".into(),
    }
}

pub(crate) fn node_endpoint(transport: &str, dir: &std::path::Path, name: &str) -> String {
    endpoint(transport, dir, name)
}

/// Starts `spec` as a node seeded by `seed`.
pub(crate) async fn start_node(
    spec: &NodeSpec,
    transport: &str,
    dir: &std::path::Path,
    seed: &str,
    eps: &DriverEps,
) -> Result<LocalNode, BoxError> {
    let place = Placement {
        binds: vec![endpoint(transport, dir, &spec.name)],
        advertise: Vec::new(),
        membership: None,
        seeds: vec![seed.to_owned()],
        beacon_port: None,
        beacon_key: None,
        curve: None,
        gateway_bind: endpoint(transport, dir, &format!("{}-gw", spec.name)),
    };
    start_with(spec, &place, eps).await
}

/// Where a node listens and whom it joins.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) binds: Vec<String>,
    /// Endpoints peers are told instead of the bound ones (none: the bound).
    pub(crate) advertise: Vec<String>,
    /// Failure-detection timings (`None`: the defaults).
    pub(crate) membership: Option<zfabric::node::MembershipConfig>,
    pub(crate) seeds: Vec<String>,
    /// UDP port for LAN discovery beacons (broadcast), if any.
    pub(crate) beacon_port: Option<u16>,
    /// The fabric key beacons are authenticated with, if any.
    pub(crate) beacon_key: Option<zfabric::node::BeaconKey>,
    /// CURVE for the node's servers and links (`[security]`), if any.
    pub(crate) curve: Option<zfabric::CurveConfig>,
    pub(crate) gateway_bind: String,
}

/// How often a configuration service looks for new versions.
pub(crate) const CONFIG_SCAN: Duration = Duration::from_millis(500);

/// Starts `spec` as `place` says.
pub(crate) async fn start_with(
    spec: &NodeSpec,
    place: &Placement,
    eps: &DriverEps,
) -> Result<LocalNode, BoxError> {
    let counters = Arc::new(Counters::default());
    let fault = Arc::new(Fault::default());
    let mut b: NodeBuilder = Node::builder(spec.name.clone());
    for ep in &place.binds {
        b = b.bind(ep.clone());
    }
    for ep in &place.advertise {
        b = b.advertise(ep.clone());
    }
    if let Some(m) = place.membership {
        b = b.config(zfabric::node::NodeConfig {
            membership: m,
            ..Default::default()
        });
    }
    for s in &place.seeds {
        b = b.seed(s.clone());
    }
    if let Some(c) = &place.curve {
        b = b.curve(c.clone());
    }
    if let Some(port) = place.beacon_port {
        let listen = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        let target = std::net::SocketAddr::from(([255, 255, 255, 255], port));
        let mut cfg = zfabric::node::BeaconConfig::bind(listen, vec![target])?;
        if let Some(k) = &place.beacon_key {
            cfg = cfg.key(k.clone());
        }
        b = b.beacon(cfg);
    }
    let handle = b.handle();
    let bulkheads: BTreeMap<String, Bulkhead> = spec
        .bulkheads
        .iter()
        .map(|bh| {
            let mut cfg = BulkheadConfig::new(bh.concurrent, bh.queued);
            if bh.threads > 0 {
                cfg = cfg.threads(bh.threads);
            }
            (
                bh.name.clone(),
                Bulkhead::new(format!("{}/{}", spec.name, bh.name), cfg),
            )
        })
        .collect();
    for svc in &spec.services {
        let mut opts = ServeOptions::new();
        if let Some(bh) = svc.bulkhead.as_ref().and_then(|n| bulkheads.get(n)) {
            opts = opts.bulkhead(bh.clone());
        }
        if svc.dedup {
            opts = opts.dedup(DedupConfig::default());
        }
        let (me, hs, f, c, h, name) = (
            spec.name.clone(),
            svc.handler.clone(),
            fault.clone(),
            counters.clone(),
            handle.clone(),
            svc.name.clone(),
        );
        b = b.serve_raw(svc.name.clone(), opts, move |req: Request<Bytes>| {
            let (me, hs, f, c, h, name) = (
                me.clone(),
                hs.clone(),
                f.clone(),
                c.clone(),
                h.clone(),
                name.clone(),
            );
            async move {
                let r = run_handler(&me, &hs, &f, Some(&h), req.body).await;
                if r.is_ok() {
                    bump(&c.handled, &name);
                }
                r
            }
        });
    }
    for con in &spec.consumers {
        let (c, f, h, emit_to, fail_rate, group) = (
            counters.clone(),
            fault.clone(),
            handle.clone(),
            con.emit.clone(),
            con.fail_rate,
            format!("consumer:{}", con.group),
        );
        b = b.consume(
            &con.group,
            &con.topic,
            DedupConfig::default(),
            move |e: Event<Payload>| {
                let (c, f, h, emit_to, group) = (
                    c.clone(),
                    f.clone(),
                    h.clone(),
                    emit_to.clone(),
                    group.clone(),
                );
                async move {
                    if f.failing.load(Ordering::Relaxed) || chance(fail_rate) {
                        return Err(RemoteError::new(
                            zfabric::wire::RemoteCode::Injected,
                            "consumer failed",
                        ));
                    }
                    if let Some(topic) = emit_to {
                        let node = h.node().ok_or_else(|| {
                            RemoteError::new(zfabric::wire::RemoteCode::Stopping, "")
                        })?;
                        let r = emit(&node, &topic, &e.body, EventDelivery::at_least_once())
                            .await
                            .map_err(|e| {
                                RemoteError::new(zfabric::wire::RemoteCode::Encode, e.to_string())
                            })?;
                        if !r.lost.is_empty() {
                            return Err(RemoteError::new(
                                "downstream",
                                format!("{} groups did not take {topic}", r.lost.len()),
                            ));
                        }
                    }
                    bump(&c.handled, &group);
                    c.latency(e.body.sent_us);
                    Ok(())
                }
            },
        );
    }
    for g in &spec.groups {
        let (c, f, key) = (counters.clone(), fault.clone(), format!("group:{g}"));
        b = b.group(g.clone(), move |_: Request<Payload>| {
            let (c, f, key) = (c.clone(), f.clone(), key.clone());
            async move {
                if f.failing.load(Ordering::Relaxed) {
                    return Err(RemoteError::new(
                        zfabric::wire::RemoteCode::Injected,
                        "failing",
                    ));
                }
                bump(&c.handled, &key);
                Ok(())
            }
        });
    }
    let config_store = spec
        .config_dir
        .as_ref()
        .map(zfabric::topology::config::ConfigStore::new);
    if let Some(store) = &config_store {
        b = zfabric::topology::config::serve(b, store.clone());
    }
    let handle = b.handle();
    let node = Arc::new(b.start().await?);
    let mut tasks = Vec::new();
    if let Some(store) = config_store {
        tasks.push(tokio::spawn(zfabric::topology::config::publish_changes(
            handle,
            store,
            CONFIG_SCAN,
        )));
    }
    if !spec.subscribe.is_empty() {
        let ep = eps.publish.clone().ok_or("no publisher to subscribe to")?;
        let prefixes: Vec<&str> = spec.subscribe.iter().map(String::as_str).collect();
        let mut sub: zfabric::Subscriber<Payload> = SocketBuilder::new()
            .connect(ep)
            .subscriber(&prefixes)
            .await?;
        let c = counters.clone();
        tasks.push(tokio::spawn(async move {
            // Gaps among the probes (published before the subscription
            // arrived) are not losses of the run.
            let mut base = None;
            while let Ok(d) = sub.recv().await {
                let topic = d.topic_str().unwrap_or("").to_owned();
                if topic.ends_with(PROBE) {
                    c.probes.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let base = *base.get_or_insert(sub.lost());
                if let Ok(p) = d.decode() {
                    c.latency(p.sent_us);
                }
                bump(&c.received, &topic);
                c.lost.store(sub.lost() - base, Ordering::Relaxed);
            }
        }));
    }
    if spec.pull {
        let ep = eps.push.clone().ok_or("no pusher to pull from")?;
        let mut pull: zfabric::Puller<Payload> = SocketBuilder::new().connect(ep).puller().await?;
        let c = counters.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(d) = pull.recv().await {
                match d.decode() {
                    Ok(p) if p.tier == PROBE => {
                        c.probes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(p) => {
                        c.latency(p.sent_us);
                        bump(&c.received, "pull");
                    }
                    Err(_) => bump(&c.received, "undecodable"),
                }
            }
        }));
    }
    if let Some(hs) = &spec.reply {
        let ep = eps.request.clone().ok_or("no client to serve")?;
        let server: zfabric::Server<ByteBuf, ByteBuf> =
            SocketBuilder::new().connect(ep).server().await?;
        let (me, hs, f, c) = (
            spec.name.clone(),
            hs.clone(),
            fault.clone(),
            counters.clone(),
        );
        let running = server.spawn(move |req: Request<ByteBuf>| {
            let (me, hs, f, c) = (me.clone(), hs.clone(), f.clone(), c.clone());
            async move {
                let probe = wire::decode_body::<Payload>(&req.body).is_ok_and(|p| p.tier == PROBE);
                let out = run_handler(&me, &hs, &f, None, Bytes::from(req.body.into_vec())).await?;
                if !probe {
                    bump(&c.received, "reply");
                }
                Ok(ByteBuf::from(out.to_vec()))
            }
        });
        tasks.push(tokio::spawn(async move {
            let _keep = running;
            std::future::pending::<()>().await
        }));
    }
    let gateway = match &spec.gateway {
        Some(g) => {
            let expose: Vec<&str> = g.expose.iter().map(String::as_str).collect();
            let keys = g.key_spec()?;
            let cfg = GatewayConfig::new(Auth::load(&keys)?, &expose);
            Some(Gateway::start(&place.gateway_bind, node.clone(), cfg).await?)
        }
        None => None,
    };
    Ok(LocalNode {
        node,
        gateway,
        counters,
        fault,
        tasks,
    })
}

/// The suffix of probe topics and the tier of probe pushes: the driver
/// sends them until every socket role has one, and they are not counted.
pub(crate) const PROBE: &str = "__probe";

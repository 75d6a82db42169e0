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
use zfabric::topology::shared_data::{
    self, CacheConfig, Changed, CustomerCache, DataStore, Eviction,
};
use zfabric::{wire, RemoteError, Request, SocketBuilder};

use super::effects::{self, Applied, EffectStore};
use super::spec::{HandlerKind, HandlerSpec, NodeSpec};
use crate::app::histogram::{histogram, Unit};
use crate::app::BoxError;
use zfabric::stream::{ConsumerConfig, ConsumerHandle, ConsumerStats};

/// What the driver sends to services and sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub(crate) seq: u64,
    /// Wall-clock send time, µs since the epoch (latency at receivers).
    pub(crate) sent_us: u64,
    pub(crate) tier: String,
    pub(crate) data: ByteBuf,
}

/// An event as a node's consumers take it: the driver's [`Payload`], with
/// every field defaulted, so that a consumer of `zfabric node` also takes
/// the events of `zfabric emit` and any other map body (unknown keys are
/// ignored; a body that is not a map is refused as a bad request).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct EventBody {
    seq: u64,
    sent_us: u64,
    tier: String,
    data: ByteBuf,
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
    /// Change events still to drop (a cache node; `u64::MAX`: all).
    deaf: AtomicU64,
}

impl Fault {
    pub(crate) fn slow(&self, ms: f64) {
        self.extra_delay_us
            .store((ms * 1000.0) as u64, Ordering::Relaxed);
    }
    pub(crate) fn fail(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }
    /// Drops the next `count` change events (0: every one until heal).
    pub(crate) fn drop_invalidations(&self, count: u64) {
        let n = if count == 0 { u64::MAX } else { count };
        self.deaf.store(n, Ordering::Relaxed);
    }
    /// Whether to drop this change event (counts it off).
    fn deaf(&self) -> bool {
        self.deaf
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| match n {
                0 => None,
                u64::MAX => Some(u64::MAX),
                n => Some(n - 1),
            })
            .is_ok()
    }
    pub(crate) fn heal(&self) {
        self.extra_delay_us.store(0, Ordering::Relaxed);
        self.failing.store(false, Ordering::Relaxed);
        self.deaf.store(0, Ordering::Relaxed);
    }
}

/// Counters of one node.
pub(crate) struct Counters {
    /// Handled successfully, by service / `consumer:<group>` / `group:<g>`
    /// / `socket`.
    handled: DashMap<String, AtomicU64>,
    /// Received by socket roles, by topic (pub/sub) or "pull"/"reply".
    received: DashMap<String, AtomicU64>,
    probes: AtomicU64,
    lost: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    /// Role figures counted as they happen (shared data: invalidations
    /// published, dropped, applied).
    figures: DashMap<String, AtomicU64>,
    /// Role figures read when the snapshot is taken (rows in the store,
    /// a cache's counts); replaced when the node restarts.
    probe: Mutex<Option<FigureProbe>>,
}

/// Reads a role's figures at snapshot time.
type FigureProbe = Arc<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>;

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("probes", &self.probes)
            .finish_non_exhaustive()
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            handled: DashMap::new(),
            received: DashMap::new(),
            probes: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            latency: Mutex::new(histogram(Unit::Micros)),
            figures: DashMap::new(),
            probe: Mutex::new(None),
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
        if sent_us == 0 {
            return; // not stamped (an event from outside the run)
        }
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
        let mut figures = collect(&self.figures);
        let probe = self.probe.lock().ok().and_then(|p| p.clone());
        if let Some(p) = probe {
            figures.extend(p());
        }
        NodeStats {
            name: name.to_owned(),
            killed,
            handled: collect(&self.handled),
            received: collect(&self.received),
            lost: self.lost.load(Ordering::Relaxed),
            latency_us: latency,
            figures,
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
    /// What its roles measured (shared data: `rows`, `email_index_rows`,
    /// `rows_at_open`; a cache: `cache_hits`, `cache_misses`,
    /// `evicted_<reason>`, `invalidations_dropped`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) figures: BTreeMap<String, u64>,
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
    /// Its shared-data store, if it serves one (closed when it stops, so
    /// that a restart can open the file again).
    data: Option<Arc<DataStore>>,
    /// Its effect store, if it serves one (closed when it stops).
    effects: Option<EffectStore>,
    /// The stream it hosts (closed when it stops, so that a restart
    /// reopens the same log).
    stream: Option<zfabric::stream::Stream>,
    /// Its consumer-group member (stopped when the node stops).
    consumer: Option<Arc<parking_lot::Mutex<Option<ConsumerHandle>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(d) = &self.data {
            d.close();
        }
        if let Some(e) = &self.effects {
            e.close();
        }
        if let Some(s) = &self.stream {
            if let Err(e) = s.close() {
                eprintln!("stream did not close: {e}");
            }
        }
        // In one process a stopped member leaves the group gracefully (its
        // record in hand finishes and is committed); a SIGKILLed child
        // (--split) does not. Its figures are added to the node's.
        if let Some(h) = self.consumer.as_ref().and_then(|c| c.lock().take()) {
            let c = self.counters.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let s = h.stop().await;
                    for (k, v) in consumer_figures(&s) {
                        add(&c.figures, &format!("earlier_{k}"), v);
                    }
                });
            }
        }
    }
}

/// A consumer's figures, by the names the report gives them.
fn consumer_figures(s: &ConsumerStats) -> [(&'static str, u64); 5] {
    [
        ("stream_processed", s.processed),
        ("stream_duplicates_skipped", s.duplicates_skipped),
        ("stream_gaps_filled", s.gaps),
        ("stream_handler_failed", s.handler_failed),
        ("stream_commits", s.commits),
    ]
}

fn add(map: &DashMap<String, AtomicU64>, key: &str, n: u64) {
    map.entry(key.to_owned())
        .or_default()
        .fetch_add(n, Ordering::Relaxed);
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

/// Starts `spec` as a node seeded by `seed`; `life` counts its restarts
/// (each binds a new endpoint), `counters` carry over them.
pub(crate) async fn start_node(
    spec: &NodeSpec,
    transport: &str,
    dir: &std::path::Path,
    seed: &str,
    eps: &DriverEps,
    life: Life<'_>,
) -> Result<LocalNode, BoxError> {
    let bind_name = match life.restarts {
        0 => spec.name.clone(),
        n => format!("{}-r{n}", spec.name),
    };
    let place = Placement {
        binds: vec![endpoint(transport, dir, &bind_name)],
        advertise: Vec::new(),
        membership: None,
        seeds: vec![seed.to_owned()],
        beacon_port: None,
        beacon_key: None,
        curve: None,
        gateway_bind: endpoint(transport, dir, &format!("{bind_name}-gw")),
        data_dir: Some(life.data_dir.to_path_buf()),
    };
    start_counted(spec, &place, eps, life.counters).await
}

/// What a node keeps across a restart.
#[derive(Debug)]
pub(crate) struct Life<'a> {
    /// Restarts so far.
    pub(crate) restarts: u32,
    /// Its counters (new ones for a first start).
    pub(crate) counters: Arc<Counters>,
    /// Where its data files are.
    pub(crate) data_dir: &'a std::path::Path,
}

impl<'a> Life<'a> {
    /// A first start, with data files in `data_dir`.
    pub(crate) fn first(data_dir: &'a std::path::Path) -> Self {
        Life {
            restarts: 0,
            counters: Arc::new(Counters::default()),
            data_dir,
        }
    }
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
    /// Where a shared-data node keeps its file (`NAME.redb`); `None`: it
    /// cannot serve one.
    pub(crate) data_dir: Option<std::path::PathBuf>,
}

/// How often a configuration service looks for new versions.
pub(crate) const CONFIG_SCAN: Duration = Duration::from_millis(500);

/// Starts `spec` as `place` says.
pub(crate) async fn start_with(
    spec: &NodeSpec,
    place: &Placement,
    eps: &DriverEps,
) -> Result<LocalNode, BoxError> {
    start_counted(spec, place, eps, Arc::new(Counters::default())).await
}

/// How long a cache waits for the data service on a miss.
const CACHE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// [`start_with`], counting into `counters`.
async fn start_counted(
    spec: &NodeSpec,
    place: &Placement,
    eps: &DriverEps,
    counters: Arc<Counters>,
) -> Result<LocalNode, BoxError> {
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
            move |e: Event<EventBody>| {
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
    let data = if spec.data_service {
        let dir = place
            .data_dir
            .as_ref()
            .ok_or("a data service needs a data directory")?;
        let store = Arc::new(DataStore::open(dir.join(format!("{}.redb", spec.name)))?);
        let c = counters.clone();
        b = shared_data::serve(b, store.clone(), move |reached| {
            bump(&c.figures, "invalidations_published");
            c.figures
                .entry("invalidation_deliveries".into())
                .or_default()
                .fetch_add(reached.into(), Ordering::Relaxed);
        });
        let s = store.clone();
        set_probe(&counters, move || {
            let mut m = BTreeMap::new();
            if let Ok(r) = s.rows() {
                m.insert("rows".into(), r.customers);
                m.insert("email_index_rows".into(), r.emails);
            }
            m.insert("rows_at_open".into(), s.rows_at_open().customers);
            m
        });
        Some(store)
    } else {
        None
    };
    let cache = spec.customer_cache.as_ref().map(|c| {
        CustomerCache::new(
            c.service.clone(),
            CacheConfig {
                capacity: c.capacity,
                ttl: Duration::from_millis(c.ttl_ms),
            },
        )
    });
    if let (Some(cache), Some(cs)) = (&cache, &spec.customer_cache) {
        b = shared_data::serve_cached(b, cs.service.clone(), cache.clone(), CACHE_READ_TIMEOUT);
        let k = cache.clone();
        set_probe(&counters, move || {
            let s = k.stats();
            let mut m = BTreeMap::from([
                ("cache_hits".to_string(), s.hits),
                ("cache_misses".to_string(), s.misses),
                ("cache_len".to_string(), s.len),
            ]);
            for e in Eviction::ALL {
                m.insert(format!("evicted_{}", e.as_str()), s.evicted(e));
            }
            m
        });
    }
    let config_store = spec
        .config_dir
        .as_ref()
        .map(zfabric::topology::config::ConfigStore::new);
    if let Some(store) = &config_store {
        b = zfabric::topology::config::serve(b, store.clone());
    }
    let effect_store = if spec.effect_store {
        let dir = place
            .data_dir
            .as_ref()
            .ok_or("an effect store needs a data directory")?;
        let store = EffectStore::open(&dir.join(format!("{}-effects.redb", spec.name)))?;
        b = serve_effects(b, store.clone());
        let s = store.clone();
        set_probe(&counters, move || {
            let mut m = BTreeMap::new();
            if let Ok(c) = s.counts() {
                m.insert("effects".into(), c.effects);
                m.insert("effect_deliveries".into(), c.deliveries);
                m.insert("effect_redeliveries".into(), c.redeliveries);
                m.insert("effects_applied_twice".into(), c.applied_twice);
            }
            m
        });
        Some(store)
    } else {
        None
    };
    let stream = match &spec.stream {
        Some(st) => {
            let dir = place
                .data_dir
                .as_ref()
                .ok_or("a stream host needs a data directory")?;
            let (host, stream) = open_stream_host(dir, &spec.name, st).await?;
            b = host.serve_on(b);
            let s = stream.clone();
            set_probe(&counters, move || {
                let mut records = 0;
                for p in 0..s.partitions() {
                    if let Ok(l) = s.partition(p) {
                        let i = l.info();
                        records += i.end - i.start;
                    }
                }
                BTreeMap::from([("stream_records_in_log".to_string(), records)])
            });
            Some(stream)
        }
        None => None,
    };
    let handle = b.handle();
    let node = Arc::new(b.start().await?);
    let mut tasks = Vec::new();
    let consumer = match &spec.stream_consumer {
        Some(sc) => {
            let n = node.clone();
            let work = Duration::from_millis(sc.work_ms);
            let h = zfabric::stream::consumer(&sc.stream)
                .group(&sc.group)
                .config(ConsumerConfig {
                    batch: 32,
                    poll: Duration::from_millis(200),
                    rebalance: Duration::from_millis(200),
                    ..ConsumerConfig::default()
                })
                .run(&node, move |r| {
                    let n = n.clone();
                    async move {
                        let opts = zfabric::node::CallOptions::default()
                            .timeout(EFFECT_TIMEOUT)
                            .idempotent()
                            .wait_for_member();
                        let apply = effects::Apply {
                            partition: r.partition,
                            offset: r.offset,
                        };
                        n.request_with::<_, Applied>(effects::APPLY, &apply, opts)
                            .await
                            .map_err(|e| RemoteError::new("effect", e.to_string()))?;
                        if !work.is_zero() {
                            tokio::time::sleep(work).await;
                        }
                        Ok(())
                    }
                })?;
            let cell = Arc::new(parking_lot::Mutex::new(Some(h)));
            let (c, w) = (cell.clone(), Arc::downgrade(&counters));
            set_probe(&counters, move || {
                let mut m = BTreeMap::new();
                let now = c.lock().as_ref().map(|h| h.stats()).unwrap_or_default();
                let earlier = |k: &str| {
                    w.upgrade()
                        .and_then(|c| {
                            c.figures
                                .get(&format!("earlier_{k}"))
                                .map(|v| v.load(Ordering::Relaxed))
                        })
                        .unwrap_or(0)
                };
                for (k, v) in consumer_figures(&now) {
                    m.insert(k.to_string(), v + earlier(k));
                }
                m.insert("stream_partitions_owned".into(), now.owned.len() as u64);
                m
            });
            Some(cell)
        }
        None => None,
    };
    if let Some(cache) = cache {
        let mut sub = shared_data::subscribe(&node, 1024);
        let (c, f) = (counters.clone(), fault.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(p) = sub.recv().await {
                if f.deaf() {
                    bump(&c.figures, "invalidations_dropped");
                    continue;
                }
                match p.decode::<Changed>() {
                    Ok(ch) => {
                        cache.invalidate(ch);
                        bump(&c.figures, "invalidations_applied");
                    }
                    Err(_) => bump(&c.figures, "invalidations_undecodable"),
                }
            }
        }));
    }
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
        data,
        effects: effect_store,
        stream,
        consumer,
        tasks,
    })
}

/// How long a consumer's handler waits for the effect store.
const EFFECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `store` as [`effects::APPLY`] and [`effects::SEEN`].
fn serve_effects(b: NodeBuilder, store: EffectStore) -> NodeBuilder {
    let s = store.clone();
    let b = b.serve_with(
        effects::APPLY,
        ServeOptions::default(),
        move |req: Request<effects::Apply>| {
            let s = s.clone();
            async move {
                let a = req.body;
                tokio::task::spawn_blocking(move || s.apply(a.partition, a.offset))
                    .await
                    .map_err(|e| RemoteError::new("internal", e.to_string()))?
                    .map_err(|e| RemoteError::new("internal", e.to_string()))
            }
        },
    );
    b.serve_with(
        effects::SEEN,
        ServeOptions::default(),
        move |req: Request<effects::Seen>| {
            let s = store.clone();
            async move {
                let q = req.body;
                tokio::task::spawn_blocking(move || s.seen(q.partition, q.offset))
                    .await
                    .map_err(|e| RemoteError::new("internal", e.to_string()))?
                    .map_err(|e| RemoteError::new("internal", e.to_string()))
            }
        },
    )
}

/// Opens the stream `st` of node `node` in `dir` and makes it ready to
/// serve. A restart in this process may find the previous life's group
/// store still being released: it is tried again for up to 2 s.
async fn open_stream_host(
    dir: &std::path::Path,
    node: &str,
    st: &super::spec::StreamSpec,
) -> Result<(zfabric::stream::StreamHost, zfabric::stream::Stream), BoxError> {
    use zfabric::stream::{HostConfig, LogConfig, Stream, StreamConfig, StreamHost};
    let config = StreamConfig {
        partitions: st.partitions,
        log: LogConfig {
            fsync: st.fsync_policy()?,
            ..LogConfig::default()
        },
    };
    let host_config = HostConfig {
        lease_ttl: Duration::from_millis(st.lease_ms),
        ..HostConfig::default()
    };
    let path = dir.join(format!("{node}-stream"));
    let mut last = None;
    for _ in 0..40 {
        match Stream::open(&path, &st.name, config.clone()) {
            Ok((stream, _)) => match StreamHost::new(stream.clone(), host_config) {
                Ok(h) => return Ok((h, stream)),
                Err(e) => {
                    let _ = stream.close();
                    last = Some(e.to_string());
                }
            },
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "stream {} did not open: {}",
        st.name,
        last.unwrap_or_default()
    )
    .into())
}

fn set_probe(c: &Counters, f: impl Fn() -> BTreeMap<String, u64> + Send + Sync + 'static) {
    if let Ok(mut p) = c.probe.lock() {
        *p = Some(Arc::new(f));
    }
}

/// The suffix of probe topics and the tier of probe pushes: the driver
/// sends them until every socket role has one, and they are not counted.
pub(crate) const PROBE: &str = "__probe";

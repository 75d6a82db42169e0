//! The loads of a run: one file per [`LoadKind`], each a [`Load`] that
//! makes one call and turns the tally of its calls into a typed outcome.
//!
//! Guarantees: every call ends in exactly one [`Call`], counted once in
//! the load's [`Tally`] and its [`Progress`]; an open-loop load (a `rate`)
//! starts calls on schedule with at most 4096 in flight, a closed loop
//! runs `concurrency` callers back to back; the report's `outcome` is the
//! common call figures (`served_by`, `max_hops`, `errors`) merged with the
//! kind's own typed outcome, keys in order. Does not: start nodes, inject
//! faults or print (the driver and the timeline do).

mod aggregate;
mod anycast;
mod branch;
mod config;
mod event;
mod gateway;
mod multicast;
mod publish;
mod push;
mod request;
mod route;
mod shared_data;
mod stream_append;
mod unicast;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_bytes::ByteBuf;
use serde_json::Value;
use zfabric::node::{CallError, CallOptions, Node, PeerId};
use zfabric::topology::gateway::GatewayRequest;
use zfabric::wire::{self, RemoteCode};
use zfabric::{Client, Publisher, Pusher, RequestError, SocketBuilder};

use super::report::{Latency, LoadReport};
use super::spec::{LoadKind, LoadSpec, NodeSpec, Spec};
use super::world::{self, Answer, DriverEps, NodeStats, Payload};
use crate::app::histogram::{histogram, Unit};
use crate::app::BoxError;

/// Live counts of one load, shown while running.
#[derive(Debug, Default)]
pub(super) struct Progress {
    sent: AtomicU64,
    ok: AtomicU64,
    err: AtomicU64,
}

impl Progress {
    /// Counts one call that ended well (`ok`) or not.
    pub(super) fn count(&self, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.err.fetch_add(1, Ordering::Relaxed);
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// One load's part of the progress line.
    pub(super) fn line(&self, l: &LoadSpec) -> String {
        format!(
            "{} {}: sent {} ok {} err {}",
            l.kind.name(),
            l.target,
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.err.load(Ordering::Relaxed)
        )
    }
}

/// The driver's sockets for socket-pattern loads (publish, push,
/// request), bound only when some node has the matching role.
pub(super) struct Sockets {
    pub(super) publisher: Option<Publisher<Payload>>,
    pub(super) pusher: Option<Pusher<Payload>>,
    pub(super) client: Option<Client<ByteBuf, ByteBuf>>,
}

impl Sockets {
    /// Binds the sockets `spec`'s socket roles need, at `bind(tag)`.
    pub(super) async fn bind(spec: &Spec, bind: impl Fn(&str) -> String) -> Result<Self, BoxError> {
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
        Ok(Sockets {
            publisher,
            pusher,
            client,
        })
    }

    /// Where they listen, for the nodes' socket roles.
    pub(super) fn endpoints(&self) -> DriverEps {
        DriverEps {
            publish: self
                .publisher
                .as_ref()
                .map(|p| p.endpoints()[0].to_string()),
            push: self.pusher.as_ref().map(|p| p.endpoints()[0].to_string()),
            request: self.client.as_ref().map(|c| c.endpoints()[0].to_string()),
        }
    }
}

/// Everything a load needs.
pub(super) struct Ctx {
    pub(super) driver: Arc<Node>,
    pub(super) sockets: Arc<Sockets>,
    pub(super) gateway: Option<Arc<Client<GatewayRequest, ByteBuf>>>,
    /// The gateway's HS256 secret, if it has one (the load signs with it).
    pub(super) gateway_key: Option<Vec<u8>>,
    pub(super) names: BTreeMap<PeerId, String>,
}

/// How one call ended; `E` is what a successful call of its kind reports
/// beside its latency.
pub(super) enum Call<E> {
    Ok {
        latency_us: u64,
        node: Option<String>,
        hops: u8,
        extra: E,
    },
    Rejected,
    CircuitOpen,
    Timeout,
    Failed(String),
    /// Fire-and-forget: counted at the receivers.
    Sent,
}

/// A success timed from `started`, answered by no particular node.
fn ok<E>(started: Instant, extra: E) -> Call<E> {
    Call::Ok {
        latency_us: started.elapsed().as_micros() as u64,
        node: None,
        hops: 0,
        extra,
    }
}

impl<E> Call<E> {
    /// The same ending, a success reporting `extra`.
    fn with<F>(self, extra: F) -> Call<F> {
        match self {
            Call::Ok {
                latency_us,
                node,
                hops,
                ..
            } => Call::Ok {
                latency_us,
                node,
                hops,
                extra,
            },
            Call::Rejected => Call::Rejected,
            Call::CircuitOpen => Call::CircuitOpen,
            Call::Timeout => Call::Timeout,
            Call::Failed(why) => Call::Failed(why),
            Call::Sent => Call::Sent,
        }
    }

    fn failed(why: impl Into<String>) -> Self {
        Call::Failed(why.into())
    }

    fn is_ok(&self) -> bool {
        matches!(self, Call::Ok { .. } | Call::Sent)
    }
}

/// A node call's error as the report counts it.
fn classify<E>(e: &CallError) -> Call<E> {
    match e {
        CallError::Rejected { .. } => Call::Rejected,
        CallError::CircuitOpen { .. } => Call::CircuitOpen,
        CallError::Request(RequestError::Timeout(_)) => Call::Timeout,
        CallError::Request(RequestError::Remote(r)) if r.message.contains("circuit open") => {
            Call::CircuitOpen
        }
        CallError::Request(RequestError::Remote(r))
            if r.known_code() == Some(RemoteCode::Rejected)
                || r.message.contains("refused the call") =>
        {
            Call::Rejected
        }
        CallError::Request(RequestError::Remote(r)) => Call::Failed(r.code.clone()),
        CallError::NoSuchService(_) => Call::failed("no_such_service"),
        CallError::UnknownPeer(_) => Call::failed("unknown_peer"),
        CallError::Request(RequestError::PeerGone) => Call::failed("peer_gone"),
        other => Call::Failed(format!("{other}").chars().take(40).collect()),
    }
}

/// A service's [`Answer`], timed from `started`.
fn answer(raw: &[u8], started: Instant) -> Call<()> {
    match wire::decode_body::<Answer>(raw) {
        Ok(a) => Call::Ok {
            latency_us: started.elapsed().as_micros() as u64,
            node: Some(a.node),
            hops: a.hops,
            extra: (),
        },
        Err(e) => Call::Failed(format!("bad answer: {e}")),
    }
}

/// What the driver sends as call number `seq`.
pub(super) fn payload(seq: u64, size: usize, tier: &str) -> Payload {
    Payload {
        seq,
        sent_us: world::now_us(),
        tier: tier.to_owned(),
        data: ByteBuf::from(vec![0x5a; size]),
    }
}

/// One call about to be made: its number, payload, encoded body and
/// options.
pub(super) struct Shot {
    seq: u64,
    started: Instant,
    timeout: Duration,
    /// The tier of a route load (`""` otherwise).
    tier: String,
    payload: Payload,
    body: Bytes,
    opts: CallOptions,
}

impl Shot {
    fn new(load: &LoadSpec, seq: u64) -> Result<Self, String> {
        let timeout = Duration::from_millis(load.timeout_ms);
        let started = Instant::now();
        let tier = if load.routes.is_empty() {
            String::new()
        } else {
            load.routes[seq as usize % load.routes.len()].0.clone()
        };
        let payload = payload(seq, load.size, &tier);
        let body = wire::encode_body(&payload).map_err(|e| e.to_string())?;
        let mut opts = CallOptions::default().timeout(timeout);
        if load.idempotent {
            opts = opts.idempotent();
        }
        Ok(Shot {
            seq,
            started,
            timeout,
            tier,
            payload,
            body,
            opts,
        })
    }
}

/// The calls of one load, counted.
pub(super) struct Tally<E> {
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
    /// What each successful call reported beside its latency.
    extras: Vec<E>,
}

impl<E> Tally<E> {
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

    fn add(&mut self, c: Call<E>) {
        self.sent += 1;
        match c {
            Call::Ok {
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
                self.extras.push(extra);
            }
            Call::Rejected => self.rejected += 1,
            Call::CircuitOpen => self.circuit += 1,
            Call::Timeout => self.timeout += 1,
            Call::Failed(why) => {
                self.failed += 1;
                *self.errors.entry(why).or_default() += 1;
            }
            Call::Sent => {}
        }
    }
}

/// What the load's calls add up to, beside the counts every load has.
pub(super) struct Figures<O> {
    delivered: u64,
    lost: u64,
    latency: Latency,
    /// The kind's own figures (the report's `outcome`).
    outcome: O,
}

impl<O> Figures<O> {
    /// Delivered: the successful calls, timed at the caller; nothing lost.
    fn calls<E>(t: &Tally<E>, outcome: O) -> Self {
        Figures {
            delivered: t.ok,
            lost: 0,
            latency: Latency::of(&t.hist),
            outcome,
        }
    }
}

/// A kind with no figures of its own.
#[derive(Debug, Serialize)]
pub(super) struct Nothing {}

/// One kind of load.
pub(super) trait Load {
    /// What one successful call reports beside its latency.
    type Extra: Send + 'static;
    /// The kind's own figures.
    type Outcome: Serialize;

    /// Makes one call.
    fn call(
        ctx: &Ctx,
        load: &LoadSpec,
        shot: Shot,
    ) -> impl Future<Output = Call<Self::Extra>> + Send;

    /// Adds the calls up, with what the nodes counted at the end.
    fn figures(
        load: &LoadSpec,
        t: &Tally<Self::Extra>,
        nodes: &[NodeStats],
        specs: &[NodeSpec],
    ) -> Figures<Self::Outcome>;

    /// What the report's `target` column shows.
    fn target(load: &LoadSpec) -> String {
        load.target.clone()
    }
}

/// A finished load waiting for the nodes' final counts to make its row.
pub(super) type Finish = Box<dyn FnOnce(&[NodeStats], &[NodeSpec]) -> LoadReport + Send>;

/// Starts driving `load` on its own task.
pub(super) fn start(
    ctx: Arc<Ctx>,
    load: LoadSpec,
    progress: Arc<Progress>,
) -> tokio::task::JoinHandle<Finish> {
    match load.kind {
        LoadKind::Publish => spawn::<publish::Publish>(ctx, load, progress),
        LoadKind::Push => spawn::<push::Push>(ctx, load, progress),
        LoadKind::Request => spawn::<request::Request>(ctx, load, progress),
        LoadKind::Anycast => spawn::<anycast::Anycast>(ctx, load, progress),
        LoadKind::Unicast => spawn::<unicast::Unicast>(ctx, load, progress),
        LoadKind::Multicast => spawn::<multicast::Multicast>(ctx, load, progress),
        LoadKind::Aggregate => spawn::<aggregate::Aggregate>(ctx, load, progress),
        LoadKind::Branch => spawn::<branch::Branch>(ctx, load, progress),
        LoadKind::Route => spawn::<route::Route>(ctx, load, progress),
        LoadKind::Event => spawn::<event::Event>(ctx, load, progress),
        LoadKind::Gateway => spawn::<gateway::Gateway>(ctx, load, progress),
        LoadKind::Config => spawn::<config::Config>(ctx, load, progress),
        LoadKind::SharedData => spawn::<shared_data::SharedData>(ctx, load, progress),
        LoadKind::StreamAppend => spawn::<stream_append::StreamAppend>(ctx, load, progress),
    }
}

fn spawn<K: Load + 'static>(
    ctx: Arc<Ctx>,
    load: LoadSpec,
    progress: Arc<Progress>,
) -> tokio::task::JoinHandle<Finish> {
    tokio::spawn(async move {
        let (tally, elapsed) = drive::<K>(ctx, load.clone(), progress).await;
        Box::new(move |nodes: &[NodeStats], specs: &[NodeSpec]| {
            report::<K>(&load, tally, elapsed, nodes, specs)
        }) as Finish
    })
}

async fn one<K: Load>(ctx: &Ctx, load: &LoadSpec, seq: u64) -> Call<K::Extra> {
    match Shot::new(load, seq) {
        Ok(shot) => K::call(ctx, load, shot).await,
        Err(e) => Call::Failed(e),
    }
}

fn record<E>(t: &Mutex<Tally<E>>, p: &Progress, c: Call<E>) {
    p.count(c.is_ok());
    if let Ok(mut t) = t.lock() {
        t.add(c);
    }
}

/// Drives `load` for its duration or count; returns the tally.
async fn drive<K: Load + 'static>(
    ctx: Arc<Ctx>,
    load: LoadSpec,
    progress: Arc<Progress>,
) -> (Tally<K::Extra>, Duration) {
    let started = Instant::now();
    let duration = Duration::from_secs_f64(load.duration_s.max(0.0));
    let limit = if load.count > 0 { load.count } else { u64::MAX };
    let tally = Arc::new(Mutex::new(Tally::new()));
    if load.rate > 0.0 {
        // Open loop: calls start on schedule; at most 4096 in flight.
        // No handle is kept per call (a finished task's memory would stay
        // until its handle went: a long run grew by every call): the end
        // is known by taking back every permit.
        let slots = 4096.max(load.concurrency);
        let gate = Arc::new(tokio::sync::Semaphore::new(slots));
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
            tokio::spawn(async move {
                let c = one::<K>(&ctx, &load2, i).await;
                record(&tally, &progress, c);
                drop(permit);
            });
            i += 1;
        }
        // Every call has recorded its outcome once every permit is back.
        let _all = gate.acquire_many(slots as u32).await;
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
                        let c = one::<K>(&ctx, &load2, i).await;
                        record(&tally, &progress, c);
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

/// The figures every load with calls shows in its outcome.
#[derive(Serialize)]
struct Common<'a> {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    served_by: &'a BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "is_zero")]
    max_hops: u8,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    errors: &'a BTreeMap<String, u64>,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

/// The fields of `v` (a struct), in key order.
fn fields(v: &impl Serialize) -> BTreeMap<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// The load's row of the report.
fn report<K: Load>(
    l: &LoadSpec,
    t: Tally<K::Extra>,
    elapsed: Duration,
    nodes: &[NodeStats],
    specs: &[NodeSpec],
) -> LoadReport {
    let f = K::figures(l, &t, nodes, specs);
    let mut outcome = fields(&Common {
        served_by: &t.served_by,
        max_hops: t.max_hops,
        errors: &t.errors,
    });
    outcome.extend(fields(&f.outcome));
    let secs = elapsed.as_secs_f64().max(1e-9);
    LoadReport {
        kind: l.kind,
        target: K::target(l),
        sent: t.sent,
        delivered: f.delivered,
        lost: f.lost,
        rejected: t.rejected,
        circuit_open: t.circuit,
        timed_out: t.timeout,
        failed: t.failed,
        latency: f.latency,
        throughput_per_s: f.delivered as f64 / secs,
        elapsed_s: secs,
        outcome,
    }
}

/// Counts each name once per appearance.
fn count_names<'a>(names: impl IntoIterator<Item = &'a String>, into: &mut BTreeMap<String, u64>) {
    for n in names {
        *into.entry(n.clone()).or_default() += 1;
    }
}

/// The receive latency the nodes' socket roles recorded, merged.
fn merged_latency(nodes: &[NodeStats]) -> Latency {
    let mut h = histogram(Unit::Micros);
    for n in nodes {
        for (v, c) in &n.latency_us {
            let _ = h.record_n((*v).max(1), *c);
        }
    }
    Latency::of(&h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_each_ending_once_and_keeps_what_successes_report() {
        let mut t = Tally::<&str>::new();
        t.add(Call::Ok {
            latency_us: 10,
            node: Some("a".into()),
            hops: 2,
            extra: "x",
        });
        t.add(Call::Rejected);
        t.add(Call::CircuitOpen);
        t.add(Call::Timeout);
        t.add(Call::failed("why"));
        t.add(Call::failed("why"));
        t.add(Call::Sent);
        assert_eq!(
            (t.sent, t.ok, t.rejected, t.circuit, t.timeout, t.failed),
            (7, 1, 1, 1, 1, 2)
        );
        assert_eq!(t.served_by["a"], 1);
        assert_eq!(t.errors["why"], 2);
        assert_eq!(t.max_hops, 2);
        assert_eq!(t.extras, vec!["x"]);
    }

    #[test]
    fn the_common_outcome_leaves_out_what_did_not_happen() {
        let empty = BTreeMap::new();
        let none = fields(&Common {
            served_by: &empty,
            max_hops: 0,
            errors: &empty,
        });
        assert!(none.is_empty(), "{none:?}");
        let served = BTreeMap::from([("w".to_string(), 3u64)]);
        let some = fields(&Common {
            served_by: &served,
            max_hops: 1,
            errors: &empty,
        });
        assert_eq!(
            serde_json::to_string(&some).unwrap(),
            r#"{"max_hops":1,"served_by":{"w":3}}"#
        );
    }

    #[test]
    fn progress_counts_every_call_once() {
        let p = Progress::default();
        p.count(true);
        p.count(false);
        p.count(true);
        let l: LoadSpec = toml::from_str("kind = \"anycast\"\ntarget = \"echo\"").unwrap();
        assert_eq!(p.line(&l), "anycast echo: sent 3 ok 2 err 1");
    }
}

//! The driver: starts the members, waits for the fabric and the socket
//! roles, runs the loads against the fault timeline, gathers the report.
//!
//! Guarantees: the loads start only once the driver and every local node
//! see every member (10 s, else an error) and every socket role has seen
//! a probe (10 s, else an error); fire-and-forget messages are given time
//! to arrive before they are counted; the run's ipc directory is removed
//! when the run ends. Does not: make calls (the loads do), or apply faults
//! itself (the timeline does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use zfabric::node::{Node, NodeConfig};
use zfabric::resilience::{BreakerConfig, BreakerState};
use zfabric::topology::gateway::GatewayRequest;
use zfabric::{wire, Client};

use super::load::{self, payload, Ctx, Progress, Sockets};
use super::member::{self, Launch, Member};
use super::report::{BreakerReport, Report};
use super::spec::{NodeSpec, Spec};
use super::timeline::{self, FaultPlan};
use super::world::{self, Answer, PROBE};
use crate::app::BoxError;

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
    let dir = super::tempfile_dir()?;
    let mut loads = spec.loads.clone();
    if let Some(d) = mode.duration {
        for l in &mut loads {
            l.duration_s = d;
            l.count = 0;
        }
    }
    let driver = Arc::new(
        Node::builder("driver")
            .config(driver_config(spec))
            .bind(world::node_endpoint(mode.transport, &dir.0, "driver"))
            .start()
            .await?,
    );
    let seed = driver.endpoints()[0].to_string();
    // The driver's sockets, bound, for the nodes with socket roles.
    let sockets = Sockets::bind(spec, |tag| {
        world::node_endpoint(mode.transport, &dir.0, tag)
    })
    .await?;
    let eps = sockets.endpoints();
    let mut members = Vec::new();
    let launch = Launch {
        exe: mode.exe,
        file: mode.file,
        transport: mode.transport,
        seed: &seed,
        eps: &eps,
        expect: spec.nodes.len(),
        data_dir: &dir.0,
    };
    if mode.split {
        // All at once: each child waits until it sees the whole fabric,
        // so starting them one after another made every child but the
        // last wait out its own timeout.
        let total = spec.nodes.len();
        if mode.show_progress {
            eprintln!("starting {total} nodes, one process each ...");
        }
        let ready = std::sync::atomic::AtomicUsize::new(0);
        let started = futures_util::future::try_join_all(spec.nodes.iter().map(|n| {
            let (launch, ready) = (&launch, &ready);
            async move {
                let m = member::spawn_child(launch, n).await?;
                let k = ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if mode.show_progress {
                    eprintln!("  {} ready ({k} of {total})", n.name);
                }
                Ok::<_, BoxError>(m)
            }
        }))
        .await?;
        members.extend(started);
    } else {
        for n in &spec.nodes {
            let node = world::start_node(
                n,
                mode.transport,
                &dir.0,
                &seed,
                &eps,
                world::Life::first(&dir.0),
            )
            .await?;
            let again = member::Again {
                spec: n.clone(),
                transport: mode.transport.to_owned(),
                dir: dir.0.clone(),
                seed: seed.clone(),
                eps: eps.clone(),
                restarts: 0,
            };
            members.push(Member::local(&n.name, node, Some(again)));
        }
    }
    wait_for_fabric(&driver, &members, spec.nodes.len()).await?;
    let sockets = Arc::new(sockets);
    probe(spec, &members, &sockets).await?;

    let ctx = Arc::new(Ctx {
        driver: driver.clone(),
        sockets,
        gateway: match members.iter().find_map(Member::gateway) {
            Some(ep) => Some(Arc::new(
                Client::<GatewayRequest, ByteBuf>::connect(&ep).await?,
            )),
            None => None,
        },
        // The load signs valid tokens with the gateway's HS256 secret;
        // with public keys it has no signing key (every call says so).
        gateway_key: spec
            .nodes
            .iter()
            .find_map(|n| n.gateway.as_ref().and_then(|g| g.key_spec().ok()))
            .and_then(|k| match k {
                zfabric::topology::gateway::KeySpec::Hs256(src) => {
                    zfabric::topology::gateway::read_secret(&src).ok()
                }
                _ => None,
            }),
        names: names(&driver),
    });
    let loads: Vec<_> = loads
        .into_iter()
        .map(|l| (l, Arc::new(Progress::default())))
        .collect();
    let start = Instant::now();
    let breaker_start = tokio::time::Instant::now().into_std();
    let runs: Vec<_> = loads
        .iter()
        .map(|(l, p)| load::start(ctx.clone(), l.clone(), p.clone()))
        .collect();
    let faults = timeline::watch(
        start,
        &mut members,
        FaultPlan::new(&spec.faults),
        &loads,
        mode.show_progress,
        || runs.iter().all(|r| r.is_finished()),
    )
    .await;
    let mut finished = Vec::new();
    for r in runs {
        finished.push(r.await?);
    }
    // Let fire-and-forget messages arrive before counting them.
    settle(&members, mode.split).await;
    let member_names = names(&driver);
    let mut nodes = Vec::new();
    for m in members {
        nodes.push(m.finish().await);
    }
    Ok(Report {
        name: spec.name.clone(),
        summary: spec.summary.clone(),
        transport: mode.transport.to_owned(),
        split: mode.split,
        loads: finished
            .into_iter()
            .map(|f| f(&nodes, &spec.nodes))
            .collect(),
        nodes,
        faults,
        breaker: breaker_report(&driver, &member_names, breaker_start),
    })
}

fn names(driver: &Node) -> BTreeMap<zfabric::node::PeerId, String> {
    driver
        .members()
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect()
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

/// The fabric is up when the driver and every local node see everyone.
async fn wait_for_fabric(
    driver: &Node,
    members: &[Member],
    everyone: usize,
) -> Result<(), BoxError> {
    for _ in 0..1000 {
        let locals_ok = members
            .iter()
            .filter_map(Member::here)
            .all(|n| n.node.members().len() >= everyone);
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
    Ok(())
}

/// The caller's breaker transitions, named and timed from the start.
fn breaker_report(
    driver: &Node,
    names: &BTreeMap<zfabric::node::PeerId, String>,
    start: std::time::Instant,
) -> Vec<BreakerReport> {
    let state = |s: BreakerState| match s {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    };
    driver
        .breaker_log()
        .into_iter()
        .map(|e| BreakerReport {
            at_s: e.at.saturating_duration_since(start).as_secs_f64(),
            member: names
                .get(&e.peer)
                .cloned()
                .unwrap_or_else(|| format!("{:016x}", e.peer.0)),
            service: e.service,
            from: state(e.transition.from).into(),
            to: state(e.transition.to).into(),
        })
        .collect()
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
    let mut seen_repliers = BTreeSet::new();
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
            .filter_map(|m| m.here().map(|n| (m.name(), n)))
            .map(|(name, n)| {
                n.counters
                    .snapshot(name, false)
                    .received
                    .values()
                    .sum::<u64>()
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

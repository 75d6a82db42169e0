//! `zfabric serve|req|node`: services on the fabric from a terminal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use zfabric::node::{CallError, CallOptions, MembershipEvent, Node, PeerId};
use zfabric::{RemoteError, Request};

use super::security::{CurveArgs, SecurityFile};
use super::{json_arg, stop_signal};
use crate::app::metrics::Common;
use crate::app::{BoxError, UsageError};
use crate::run::spec::{BulkheadSpec, ConsumerSpec, GatewaySpec, NodeSpec, ServiceSpec};

/// `zfabric serve` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeArgs {
    /// Listen on this endpoint.
    #[arg(long)]
    bind: String,
    /// The service name callers use.
    #[arg(long)]
    service: String,
    /// Answer with the request (the default).
    #[arg(long, conflicts_with_all = ["delay_us", "fail_rate"])]
    echo: bool,
    /// Wait this many microseconds, then answer with the request.
    #[arg(long)]
    delay_us: Option<u64>,
    /// Fail this share of requests (0.0–1.0) with the error `injected`.
    #[arg(long)]
    fail_rate: Option<f64>,
    #[command(flatten)]
    curve: CurveArgs,
    #[command(flatten)]
    common: Common,
}

/// `zfabric req` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReqArgs {
    /// An endpoint of a node of the fabric (e.g. the one `serve` bound).
    #[arg(long)]
    connect: String,
    /// The service to call.
    #[arg(long)]
    service: String,
    /// The request, as JSON.
    #[arg(long)]
    data: String,
    /// Requests to make.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Deadline of each request, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout: u64,
    /// Mark every request idempotent: one whose member fails (went away,
    /// unreachable, busy, circuit open) is retried on another member
    /// within its deadline, so it may be processed more than once.
    #[arg(long)]
    idempotent: bool,
    /// Start a trace: every request goes out in it (W3C `traceparent`),
    /// and its trace id is printed on stderr (`trace <32 hex digits>`) to
    /// look it up in the trace back end.
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    curve: CurveArgs,
}

/// `zfabric node` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NodeArgs {
    /// The node's configuration (TOML; see `docs/NODE.md`).
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    curve: CurveArgs,
    #[command(flatten)]
    common: Common,
}

fn check_endpoint(ep: &str) -> Result<zfabric::Endpoint, BoxError> {
    ep.parse::<zfabric::Endpoint>()
        .map_err(|e| UsageError(format!("bad endpoint {ep:?}: {e}")).into())
}

/// `zfabric serve`.
pub(crate) async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    check_endpoint(&args.bind)?;
    if args.fail_rate.is_some_and(|f| !(0.0..=1.0).contains(&f)) {
        return Err(UsageError("--fail-rate is a share between 0.0 and 1.0".into()).into());
    }
    let curve = args.curve.config()?;
    args.common.start().await?;
    let served = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (s, f) = (served.clone(), failed.clone());
    let (delay, fail_rate) = (args.delay_us, args.fail_rate.unwrap_or(0.0));
    let mut builder = Node::builder(format!("serve-{}", args.service));
    if let Some(c) = curve {
        builder = builder.curve(c);
    }
    let node = builder
        .bind(args.bind.clone())
        .serve(args.service.clone(), move |req: Request<Value>| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                if let Some(us) = delay {
                    tokio::time::sleep(Duration::from_micros(us)).await;
                }
                if crate::run::world::chance(fail_rate) {
                    f.fetch_add(1, Ordering::Relaxed);
                    return Err(RemoteError::new(
                        zfabric::wire::RemoteCode::Injected,
                        "failed on purpose (--fail-rate)",
                    ));
                }
                s.fetch_add(1, Ordering::Relaxed);
                Ok(req.body)
            }
        })
        .start()
        .await?;
    let eps: Vec<String> = node.endpoints().iter().map(|e| e.to_string()).collect();
    println!("serving {:?} on {}", args.service, eps.join(" "));
    crate::app::health::set_ready();
    let started = Instant::now();
    stop_signal().await;
    node.shutdown(Duration::from_secs(2)).await;
    eprintln!(
        "served {} requests ({} failed on purpose) in {:.1?}",
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed()
    );
    Ok(())
}

/// An endpoint for a short-lived caller node on the same transport.
fn own_endpoint(to: &zfabric::Endpoint) -> Result<String, BoxError> {
    let s = to.to_string();
    if s.starts_with("inproc://") {
        return Err(
            UsageError("inproc reaches only this process: use ipc:// or tcp://".into()).into(),
        );
    }
    if s.starts_with("ipc://") {
        let dir = std::env::temp_dir();
        return Ok(format!(
            "ipc://{}/zfabric-req-{}-{}.sock",
            dir.display(),
            std::process::id(),
            crate::run::world::random() % 1_000_000
        ));
    }
    let loopback = s.contains("127.0.0.1") || s.contains("localhost") || s.contains("[::1]");
    Ok(if loopback {
        "tcp://127.0.0.1:0"
    } else {
        "tcp://0.0.0.0:0"
    }
    .to_string())
}

/// `zfabric req`; fails (exit 1) if any request failed.
pub(crate) async fn request(args: ReqArgs) -> Result<(), BoxError> {
    let to = check_endpoint(&args.connect)?;
    let body = json_arg(&args.data)?;
    let curve = args.curve.caller_config()?;
    let secure = curve.is_some();
    // A client: it learns the members but does not join the fabric, so a
    // loop of `req` runs is not a stream of joined/gone members.
    let mut builder = Node::builder(format!("req-{}", std::process::id())).client();
    if let Some(c) = curve {
        builder = builder.curve(c);
    }
    let node = builder
        .bind(own_endpoint(&to)?)
        .seed(args.connect.clone())
        .start()
        .await?;
    let timeout = Duration::from_millis(args.timeout);
    if let Err(e) = find_service(&node, &args.connect, &args.service, timeout, secure).await {
        node.shutdown(Duration::from_millis(200)).await;
        return Err(e);
    }
    // Each request waits, within its deadline, for a member that can take
    // it (a restarted server, a breaker's trial): the loop does not burn
    // its count on instant failures while the fabric heals.
    let mut opts = CallOptions::default().timeout(timeout).wait_for_member();
    if args.idempotent {
        opts = opts.idempotent();
    }
    let calls = async {
        let (mut ok, mut failed) = (0u64, 0u64);
        for _ in 0..args.count {
            let t = Instant::now();
            match node
                .request_with::<_, Value>(&args.service, &body, opts)
                .await
            {
                Ok(v) => {
                    ok += 1;
                    println!("{v}");
                }
                Err(e) => {
                    failed += 1;
                    println!("error: {}", explain(&e, &node));
                }
            }
            tracing::debug!(took = ?t.elapsed(), "request done");
        }
        (ok, failed)
    };
    let (ok, failed) = match args.trace {
        true => {
            let cx = zfabric::trace::TraceContext::new_trace();
            eprintln!("trace {}", cx.trace_id_hex());
            zfabric::trace::with_context(cx, calls).await
        }
        false => calls.await,
    };
    node.shutdown(Duration::from_millis(500)).await;
    eprintln!("{ok} replies, {failed} errors");
    if failed > 0 {
        return Err(format!("{failed} of {} requests failed", args.count).into());
    }
    Ok(())
}

/// Why `req` could not start calling: nobody answered at the endpoint,
/// or the fabric there serves no such service.
#[derive(Debug, thiserror::Error)]
enum FindError {
    /// Nothing listens at the endpoint (known at once from a refused
    /// connection).
    #[error("no member reachable at {endpoint}: {why}")]
    Unreachable {
        /// The endpoint given to `--connect`.
        endpoint: String,
        /// What is known of why.
        why: String,
    },
    /// The node there answered, and no member it knows serves the service.
    #[error(
        "{endpoint} is up ({name}) but serves no service {service:?}; it serves {serves:?}{others}"
    )]
    NoSuchService {
        /// The endpoint given to `--connect`.
        endpoint: String,
        /// The name of the node that answered there.
        name: String,
        /// The service asked for.
        service: String,
        /// The services that node serves.
        serves: Vec<String>,
        /// The services of the other members it knows, if any.
        others: String,
    },
}

/// Waits (within `timeout`) until a member serves `service`, telling a
/// dead endpoint from an unknown service: a refused connection is known
/// once the first hellos went unanswered (two heartbeats), silence at the
/// end of `timeout`; once the node at `endpoint` answers, the members it
/// names get two heartbeats to answer too, then a service nobody serves is
/// an error at once (with what is served instead).
async fn find_service(
    node: &Node,
    endpoint: &str,
    service: &str,
    timeout: Duration,
    secure: bool,
) -> Result<(), BoxError> {
    const GRACE: Duration = Duration::from_secs(1); // two heartbeats
    let waited = Instant::now();
    let mut answered: Option<Instant> = None;
    let mut probed = false;
    while node.serving(service).is_empty() {
        let members = node.members();
        if answered.is_none() && !members.is_empty() {
            answered = Some(Instant::now());
        }
        if let Some(at) = answered {
            if at.elapsed() >= GRACE.min(timeout) || waited.elapsed() >= timeout {
                let seed = members
                    .iter()
                    .find(|m| m.endpoints.iter().any(|e| e.to_string() == endpoint))
                    .or(members.first());
                let (name, serves) = seed
                    .map(|m| (m.name.clone(), m.services.clone()))
                    .unwrap_or_default();
                let mut elsewhere: Vec<String> = members
                    .iter()
                    .filter(|m| Some(m.id) != seed.map(|s| s.id))
                    .flat_map(|m| m.services.iter().cloned())
                    .collect();
                elsewhere.sort();
                elsewhere.dedup();
                let others = if elsewhere.is_empty() {
                    String::new()
                } else {
                    format!("; the other members it knows serve {elsewhere:?}")
                };
                return Err(FindError::NoSuchService {
                    endpoint: endpoint.to_owned(),
                    name,
                    service: service.to_owned(),
                    serves,
                    others,
                }
                .into());
            }
        } else if waited.elapsed() >= GRACE.min(timeout) && !probed {
            probed = true;
            if let Some(why) = refused(endpoint).await {
                return Err(FindError::Unreachable {
                    endpoint: endpoint.to_owned(),
                    why,
                }
                .into());
            }
        } else if waited.elapsed() >= timeout {
            if secure {
                return Err(format!(
                    "no node answered at {endpoint} over CURVE within {timeout:?}: the handshake \
                     did not complete (is --curve-server that node's public key, and is our \
                     public key in its allow-list?)"
                )
                .into());
            }
            return Err(FindError::Unreachable {
                endpoint: endpoint.to_owned(),
                why: format!(
                    "something accepts connections there but no zfabric node answered within \
                     {timeout:?}"
                ),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Whether `endpoint` refuses connections (nothing listens): the reason,
/// or `None` if it accepts them (or the check cannot tell). Asked only
/// after the node's own link got no answer, so a live server rarely sees
/// this extra connection.
async fn refused(endpoint: &str) -> Option<String> {
    let ep: zfabric::Endpoint = endpoint.parse().ok()?;
    let attempt = async {
        match &ep {
            zfabric::Endpoint::Tcp { host, port } => {
                tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map(drop)
            }
            #[cfg(unix)]
            zfabric::Endpoint::Ipc(path) => tokio::net::UnixStream::connect(path).await.map(drop),
            _ => Ok(()),
        }
    };
    match tokio::time::timeout(Duration::from_millis(500), attempt).await {
        Ok(Err(e)) => Some(format!("{e} (is the server running?)")),
        _ => None,
    }
}

/// A call error as the user reads it: members by name (and id), not as
/// a bare id.
fn explain(e: &CallError, node: &Node) -> String {
    let who = |id: PeerId| match node.members().into_iter().find(|m| m.id == id) {
        Some(m) => format!("{} (id {id})", m.name),
        None => format!("peer {id}"),
    };
    match e {
        CallError::UnknownPeer(id) => format!("{} is not a member", who(*id)),
        CallError::BadReply(id) => format!("unexpected reply from {}", who(*id)),
        CallError::Rejected { peer, reason } => {
            format!("{} refused the call: {reason}", who(*peer))
        }
        other => other.to_string(),
    }
}

/// The `zfabric node` configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    name: String,
    /// Endpoints to listen on.
    bind: Vec<String>,
    /// Endpoints of other nodes (host names allowed; ZFABRIC_SEEDS adds more).
    #[serde(default)]
    seeds: Vec<String>,
    /// UDP port for LAN discovery by broadcast beacon.
    #[serde(default)]
    beacon_port: Option<u16>,
    /// A file holding the fabric key beacons are authenticated with.
    #[serde(default)]
    beacon_key_file: Option<std::path::PathBuf>,
    #[serde(default, rename = "service")]
    services: Vec<ServiceSpec>,
    #[serde(default, rename = "bulkhead")]
    bulkheads: Vec<BulkheadSpec>,
    #[serde(default, rename = "consumer")]
    consumers: Vec<ConsumerSpec>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    gateway: Option<GatewayFile>,
    /// CURVE: our key pair, the seeds' server keys, the allow-list.
    #[serde(default)]
    security: Option<SecurityFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    bind: String,
    expose: Vec<String>,
    #[serde(default)]
    key: Option<crate::run::spec::toml_value::Ignored>,
    #[serde(default)]
    key_file: Option<std::path::PathBuf>,
    #[serde(default)]
    key_env: Option<String>,
    #[serde(default)]
    jwks_file: Option<std::path::PathBuf>,
    #[serde(default)]
    algorithm: Option<String>,
}

/// `zfabric node`.
pub(crate) async fn node(args: NodeArgs) -> Result<(), BoxError> {
    let file = args.config.display().to_string();
    let text =
        std::fs::read_to_string(&args.config).map_err(|e| UsageError(format!("{file}: {e}")))?;
    let cfg: NodeFile = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(":{line}")
            })
            .unwrap_or_default();
        UsageError(format!("{file}{at}: {}", e.message()))
    })?;
    for ep in cfg.bind.iter().chain(&cfg.seeds) {
        check_endpoint(ep).map_err(|e| UsageError(format!("{file}: {e}")))?;
    }
    for svc in &cfg.services {
        if let Some(b) = &svc.bulkhead {
            if !cfg.bulkheads.iter().any(|x| &x.name == b) {
                return Err(UsageError(format!(
                    "{file}: service `{}` field `bulkhead`: no [[bulkhead]] named `{b}`",
                    svc.name
                ))
                .into());
            }
        }
        if svc.handler.handler == crate::run::spec::HandlerKind::Forward && svc.handler.to.is_none()
        {
            return Err(UsageError(format!(
                "{file}: service `{}` field `to`: a forward handler needs `to`",
                svc.name
            ))
            .into());
        }
    }
    let spec = NodeSpec {
        name: cfg.name.clone(),
        services: cfg.services.clone(),
        bulkheads: cfg.bulkheads.clone(),
        consumers: cfg.consumers.clone(),
        groups: cfg.groups.clone(),
        subscribe: Vec::new(),
        pull: false,
        reply: None,
        gateway: match &cfg.gateway {
            Some(g) => {
                let mut spec = GatewaySpec {
                    expose: g.expose.clone(),
                    key: g.key.clone(),
                    key_file: g.key_file.clone(),
                    key_env: g.key_env.clone(),
                    jwks_file: g.jwks_file.clone(),
                    algorithm: g.algorithm.clone(),
                };
                spec.resolve(args.config.parent().filter(|p| !p.as_os_str().is_empty()));
                spec.key_spec()
                    .map_err(|e| UsageError(format!("{file}: {e}")))?;
                Some(spec)
            }
            None => None,
        },
    };
    let curve = args.curve.node_config(
        cfg.security.as_ref(),
        args.config.parent().filter(|p| !p.as_os_str().is_empty()),
        &file,
    )?;
    args.common.start().await?;
    let place = crate::run::world::Placement {
        curve,
        binds: cfg.bind.clone(),
        seeds: cfg.seeds.clone(),
        beacon_port: cfg.beacon_port,
        beacon_key: match &cfg.beacon_key_file {
            Some(p) => {
                let p = zfabric::topology::gateway::resolve_key_path(
                    args.config.parent().filter(|p| !p.as_os_str().is_empty()),
                    p,
                );
                Some(
                    zfabric::node::BeaconKey::from_file(&p)
                        .map_err(|e| UsageError(format!("{file}: beacon_key_file: {e}")))?,
                )
            }
            None => None,
        },
        gateway_bind: cfg
            .gateway
            .as_ref()
            .map(|g| g.bind.clone())
            .unwrap_or_default(),
    };
    let local = crate::run::world::start_with(&spec, &place, &Default::default()).await?;
    let eps: Vec<String> = local
        .node
        .endpoints()
        .iter()
        .map(|e| e.to_string())
        .collect();
    println!(
        "node {:?} (id {}) listening on {}",
        cfg.name,
        local.node.id(),
        eps.join(" ")
    );
    if let Some(g) = &local.gateway {
        println!("gateway on {}", g.endpoints()[0]);
    }
    watch_readiness(local.node.clone(), !cfg.seeds.is_empty());
    let mut events = local.node.events();
    let stop = stop_signal();
    tokio::pin!(stop);
    let started = Instant::now();
    // Names of the members seen, so that a gone one is still named.
    let mut names: std::collections::HashMap<PeerId, String> = Default::default();
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(ev) => {
                    let (what, id) = match ev {
                        MembershipEvent::Joined(id) => ("joined", id),
                        MembershipEvent::Rejoined(id) => ("rejoined", id),
                        MembershipEvent::Updated(id) => ("updated", id),
                        MembershipEvent::Suspected(id) => ("suspect", id),
                        MembershipEvent::Gone(id) => ("gone", id),
                    };
                    let info = local.node.members().into_iter().find(|m| m.id == id);
                    match info {
                        Some(i) => {
                            println!("{what}: {} (id {id}) services {:?}", i.name, i.services);
                            names.insert(id, i.name);
                        }
                        None => match names.remove(&id) {
                            Some(name) => println!("{what}: {name} (id {id})"),
                            None => println!("{what}: peer {id}"),
                        },
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => println!("({n} membership events skipped)"),
                Err(_) => break,
            },
            _ = &mut stop => break,
        }
    }
    let stats = local.counters.snapshot(&cfg.name, false);
    let node = local.node.clone();
    drop(local);
    if let Ok(node) = Arc::try_unwrap(node) {
        node.shutdown(Duration::from_secs(2)).await;
    }
    eprintln!(
        "node {:?} stopped after {:.1?}; handled {:?}",
        cfg.name,
        started.elapsed(),
        stats.handled
    );
    Ok(())
}

/// Keeps `/readyz` true to the node: bound and serving now, and (with
/// seeds) joined: ready while it sees at least one member. Checked every
/// half second for as long as the process runs.
fn watch_readiness(node: std::sync::Arc<Node>, has_seeds: bool) {
    if !has_seeds {
        crate::app::health::set_ready();
        return;
    }
    crate::app::health::set_not_ready("has seeds and has not joined the fabric yet");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if node.members().is_empty() {
                crate::app::health::set_not_ready("sees no member of the fabric");
            } else {
                crate::app::health::set_ready();
            }
        }
    });
}

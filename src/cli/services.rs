//! `zfabric serve|req|node`: services on the fabric from a terminal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use zfabric::node::{CallError, CallOptions, MembershipEvent, Node, PeerId};
use zfabric::{RemoteError, Request};

use super::security::CurveArgs;
use super::{json_arg, stop_signal};
use crate::app::metrics::Common;
use crate::app::{BoxError, UsageError};
use crate::run::spec::{GatewaySpec, NodeSpec};

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

/// `zfabric node` options. Every key of the configuration can also come
/// from the environment (`ZFABRIC_…`) and from flags: flag > env > file
/// > default (docs/NODE.md lists the keys and variables).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NodeArgs {
    /// The node's configuration (TOML; see `docs/NODE.md`). Optional when
    /// the environment and flags give the rest (at least a bind).
    #[arg(long, conflicts_with = "config_from_fabric")]
    config: Option<PathBuf>,
    /// Fetch the configuration file from the fabric's configuration
    /// service instead (`SERVICE/ENV`: the highest version of that
    /// service's `toml` document in that environment), through the seeds
    /// given by env or flags; env and flags still override its keys.
    /// While running, new versions are announced (and with
    /// `--restart-on-config-update` applied by a graceful stop).
    #[arg(long, value_name = "SERVICE/ENV")]
    config_from_fabric: Option<String>,
    /// With `--config-from-fabric`: stop gracefully (exit 0) when a newer
    /// version is published, for the orchestrator to restart the node
    /// with it.
    #[arg(long, requires = "config_from_fabric")]
    restart_on_config_update: bool,
    /// Check the configuration and print it as it would run (every key
    /// with where it came from: flag, env, file, default; no key
    /// material, only paths and public keys), loading every key file it
    /// names; exit 0 if it is valid, 2 if not. Opens no socket.
    #[arg(long)]
    check_config: bool,
    /// Set any key: `KEY=VALUE` (e.g. `gateway.bind=tcp://0.0.0.0:8080`;
    /// lists comma-separated; `service`, `bulkhead`, `consumer` as TOML
    /// inline arrays). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The node's name (default: the host name). Env ZFABRIC_NAME.
    #[arg(long)]
    name: Option<String>,
    /// Listen on this endpoint (repeatable; replaces `bind`). Env
    /// ZFABRIC_BIND.
    #[arg(long)]
    bind: Vec<String>,
    /// Tell peers to reach this node at this endpoint (repeatable; port 0:
    /// the bound port). Default: the bound endpoints, 0.0.0.0 replaced by
    /// this host's address. Env ZFABRIC_ADVERTISE.
    #[arg(long)]
    advertise: Vec<String>,
    /// A seed endpoint (repeatable; replaces `seeds`; host names resolve to
    /// every address). Env ZFABRIC_SEEDS.
    #[arg(long = "seed")]
    seeds: Vec<String>,
    #[command(flatten)]
    curve: CurveArgs,
    #[command(flatten)]
    common: Common,
}

pub(crate) fn check_endpoint(ep: &str) -> Result<zfabric::Endpoint, BoxError> {
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
    crate::app::health::set_stopping("stopping: draining requests");
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
pub(crate) fn own_endpoint(to: &zfabric::Endpoint) -> Result<String, BoxError> {
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
pub(crate) async fn find_service(
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
pub(crate) fn explain(e: &CallError, node: &Node) -> String {
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

/// Everything `node` needs, checked: the layered configuration, what to
/// start and where, and what the check found (for `--check-config`).
struct NodePlan {
    /// Fetched from the configuration service: service, env, version.
    from_fabric: Option<(String, String, u64)>,
    layered: super::node_config::Layered,
    name: String,
    seeds: bool,
    metrics: Option<String>,
    spec: NodeSpec,
    place: crate::run::world::Placement,
    /// One line per check passed (keys loaded, endpoints advertised).
    checks: Vec<String>,
}

/// The flags of `node` as configuration keys.
fn flag_values(args: &NodeArgs) -> Result<Vec<super::node_config::FlagValue>, BoxError> {
    use super::node_config::{parse_set, FlagValue};
    let mut out = Vec::new();
    let mut add = |path: &'static str, value: String, flag: &str| {
        out.push(FlagValue {
            path,
            value,
            flag: flag.into(),
        })
    };
    if let Some(n) = &args.name {
        add("name", n.clone(), "--name");
    }
    for (path, list, flag) in [
        ("bind", &args.bind, "--bind"),
        ("advertise", &args.advertise, "--advertise"),
        ("seeds", &args.seeds, "--seed"),
    ] {
        if !list.is_empty() {
            add(path, list.join(","), flag);
        }
    }
    if let Some(m) = args.common.listen() {
        add("metrics", m.to_owned(), "--metrics");
    }
    out.extend(args.curve.overrides());
    for s in &args.set {
        out.push(parse_set(s)?);
    }
    Ok(out)
}

/// Layers file, env and flags, checks the result and loads every key
/// file it names; a usage error (exit 2) names what is wrong and where
/// it was set.
async fn plan(args: &NodeArgs) -> Result<NodePlan, BoxError> {
    use super::node_config::layer;
    let vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let flags = flag_values(args)?;
    let env = |k: &str| std::env::var(k).ok();
    let mut from_fabric = None;
    let (label, text) = match (&args.config, &args.config_from_fabric) {
        (Some(p), _) => (
            Some(p.clone()),
            Some(
                std::fs::read_to_string(p)
                    .map_err(|e| UsageError(format!("{}: {e}", p.display())))?,
            ),
        ),
        (None, Some(from)) => {
            let before = layer(None, &env, &vars, &flags)?;
            let doc = fetch_config(from, &before).await?;
            // A label without a directory: paths in it are relative to
            // the working directory.
            let label = PathBuf::from(format!(
                "config-service:{}:{}:v{}",
                doc.service, doc.env, doc.version
            ));
            let text = String::from_utf8(doc.body.clone()).map_err(|_| {
                UsageError(format!("{}: the document is not UTF-8", label.display()))
            })?;
            from_fabric = Some(doc);
            (Some(label), Some(text))
        }
        (None, None) => (None, None),
    };
    let mut layered = layer(label.as_deref().zip(text.as_deref()), &env, &vars, &flags)?;
    let cfg = layered.config()?;
    let file = layered.where_();
    let name = match &cfg.name {
        Some(n) if !n.trim().is_empty() => n.clone(),
        _ => {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            if host.is_empty() {
                return Err(UsageError(format!(
                    "{file}: no `name` given (file, ZFABRIC_NAME or --name) and the host has no name"
                ))
                .into());
            }
            layered.default("name", toml::Value::String(host.clone()), "the host name");
            host
        }
    };
    for (what, list) in [
        ("bind", &cfg.bind),
        ("advertise", &cfg.advertise),
        ("seeds", &cfg.seeds),
    ] {
        for ep in list {
            check_endpoint(ep).map_err(|e| UsageError(format!("{file}: `{what}`: {e}")))?;
        }
    }
    if let Some(m) = &cfg.metrics {
        crate::app::metrics::parse_listen(m)
            .map_err(|e| UsageError(format!("{file}: `metrics`: {e}")))?;
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
    let mut checks = Vec::new();
    let membership = match &cfg.membership {
        Some(m) => {
            let c = m.config().map_err(|e| UsageError(format!("{file}: {e}")))?;
            checks.push(format!(
                "membership: heartbeat {:?}, suspect after {:?}, gone after {:?}",
                c.heartbeat_interval, c.suspect_after, c.gone_after
            ));
            Some(c)
        }
        None => None,
    };
    let gateway = match &cfg.gateway {
        Some(g) => {
            check_endpoint(&g.bind)
                .map_err(|e| UsageError(format!("{file}: `gateway.bind`: {e}")))?;
            let spec = GatewaySpec {
                expose: g.expose.clone(),
                key: None,
                key_file: g.key_file.clone(),
                key_env: None,
                jwks_file: g.jwks_file.clone(),
                algorithm: g.algorithm.clone(),
            };
            let keys = spec
                .key_spec()
                .map_err(|e| UsageError(format!("{file}: {e}")))?;
            zfabric::topology::gateway::Auth::load(&keys)
                .map_err(|e| UsageError(format!("{file}: gateway key: {e}")))?;
            checks.push(format!(
                "gateway key loaded from {}",
                g.key_file
                    .as_ref()
                    .or(g.jwks_file.as_ref())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ));
            Some(spec)
        }
        None => None,
    };
    let curve = CurveArgs::node_config(cfg.security.as_ref(), &file)?;
    if let Some(c) = &curve {
        checks.push(format!(
            "CURVE on: our public key {}",
            c.public_key().to_z85()
        ));
    }
    let beacon_key = match &cfg.beacon_key_file {
        Some(p) => {
            let k = zfabric::node::BeaconKey::from_file(p)
                .map_err(|e| UsageError(format!("{file}: beacon_key_file: {e}")))?;
            checks.push(format!("beacon key loaded from {}", p.display()));
            Some(k)
        }
        None => None,
    };
    // What peers will be told (a port 0 is picked at start).
    let parse = |l: &[String]| -> Vec<zfabric::Endpoint> {
        l.iter().filter_map(|e| e.parse().ok()).collect()
    };
    let (bound, explicit, seeds) = (parse(&cfg.bind), parse(&cfg.advertise), parse(&cfg.seeds));
    let host = if zfabric::node::HostAddresses::needed_for(&bound)
        || zfabric::node::HostAddresses::needed_for(&explicit)
    {
        zfabric::node::HostAddresses::discover(&seeds).await
    } else {
        Default::default()
    };
    let adv = zfabric::node::advertised(&bound, &explicit, &host);
    let shown: Vec<String> = adv.endpoints.iter().map(|e| e.to_string()).collect();
    checks.push(format!("advertises {}", shown.join(" ")));
    for ep in &adv.unroutable {
        checks.push(format!(
            "warning: {ep} is a wildcard and no address of this host was found: set `advertise`"
        ));
    }
    let spec = NodeSpec {
        name: name.clone(),
        services: cfg.services.clone(),
        bulkheads: cfg.bulkheads.clone(),
        consumers: cfg.consumers.clone(),
        groups: cfg.groups.clone(),
        subscribe: Vec::new(),
        pull: false,
        reply: None,
        gateway,
        config_dir: cfg.config_dir.clone(),
        data_service: false,
        customer_cache: None,
        stream: None,
        stream_consumer: None,
        effect_store: false,
    };
    let place = crate::run::world::Placement {
        curve,
        binds: cfg.bind.clone(),
        advertise: cfg.advertise.clone(),
        membership,
        seeds: cfg.seeds.clone(),
        beacon_port: cfg.beacon_port,
        beacon_key,
        gateway_bind: cfg
            .gateway
            .as_ref()
            .map(|g| g.bind.clone())
            .unwrap_or_default(),
        data_dir: None,
    };
    if let Some(d) = &from_fabric {
        checks.push(format!(
            "configuration fetched from the fabric: {}/{} version {}",
            d.service, d.env, d.version
        ));
    }
    Ok(NodePlan {
        from_fabric: from_fabric.map(|d| (d.service, d.env, d.version)),
        layered,
        name,
        seeds: !cfg.seeds.is_empty(),
        metrics: cfg.metrics.clone(),
        spec,
        place,
        checks,
    })
}

/// Fetches `SERVICE/ENV`'s configuration from the fabric, through the
/// seeds (and with the CURVE settings) of `before` (env and flags).
async fn fetch_config(
    from: &str,
    before: &super::node_config::Layered,
) -> Result<zfabric::topology::config::ConfigDocument, BoxError> {
    use zfabric::topology::config::{fetch, ConfigError, ConfigKey};
    let (service, env) = from
        .split_once('/')
        .filter(|(s, e)| !s.is_empty() && !e.is_empty())
        .ok_or_else(|| {
            UsageError(format!(
                "--config-from-fabric {from:?}: expected SERVICE/ENV"
            ))
        })?;
    let seeds: Vec<String> = before
        .table
        .get("seeds")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let Some(first) = seeds.first() else {
        return Err(UsageError(
            "--config-from-fabric needs seeds to reach the configuration service: give \
             ZFABRIC_SEEDS or --seed"
                .into(),
        )
        .into());
    };
    for s in &seeds {
        check_endpoint(s)?;
    }
    let security: Option<super::security::SecurityFile> = match before.table.get("security") {
        Some(v) => Some(
            v.clone()
                .try_into()
                .map_err(|e: toml::de::Error| UsageError(format!("security: {}", e.message())))?,
        ),
        None => None,
    };
    let curve = CurveArgs::node_config(security.as_ref(), "the configuration (env and flags)")?;
    let mut b = Node::builder(format!("config-fetch-{}", std::process::id())).client();
    if let Some(c) = curve {
        b = b.curve(c);
    }
    b = b.bind(own_endpoint(&check_endpoint(first)?)?);
    for s in &seeds {
        b = b.seed(s.clone());
    }
    let node = b.start().await?;
    let key = ConfigKey::latest(service, "toml", env);
    let got = fetch(&node, &key, Duration::from_secs(30)).await;
    node.shutdown(Duration::from_millis(200)).await;
    match got {
        Ok(doc) => Ok(doc),
        Err(ConfigError::NotFound(what)) => Err(UsageError(format!(
            "--config-from-fabric {from}: the configuration service has no document {what}"
        ))
        .into()),
        Err(e) => Err(format!(
            "--config-from-fabric {from}: no configuration from the fabric (seeds {}): {e}",
            seeds.join(", ")
        )
        .into()),
    }
}

/// `zfabric node`.
pub(crate) async fn node(args: NodeArgs) -> Result<(), BoxError> {
    let plan = plan(&args).await?;
    if args.check_config {
        print!("{}", plan.layered.render());
        for c in &plan.checks {
            println!("# {c}");
        }
        println!("# configuration ok");
        return Ok(());
    }
    for v in &plan.layered.unknown_vars {
        tracing::warn!(variable = %v, "set but no zfabric variable: ignored (a typo?)");
    }
    crate::app::metrics::start_on(plan.metrics.as_deref()).await?;
    let NodePlan {
        name: node_name,
        seeds: has_seeds,
        spec,
        place,
        from_fabric,
        ..
    } = plan;
    let local = crate::run::world::start_with(&spec, &place, &Default::default()).await?;
    let eps: Vec<String> = local
        .node
        .endpoints()
        .iter()
        .map(|e| e.to_string())
        .collect();
    let bound: Vec<String> = local
        .node
        .bound_endpoints()
        .iter()
        .map(|e| e.to_string())
        .collect();
    println!(
        "node {:?} (id {}) listening on {} advertised as {}",
        node_name,
        local.node.id(),
        bound.join(" "),
        eps.join(" ")
    );
    if let Some(g) = &local.gateway {
        println!("gateway on {}", g.endpoints()[0]);
    }
    watch_readiness(&local.node, has_seeds);
    let mut events = local.node.events();
    let mut updates = from_fabric
        .as_ref()
        .map(|(service, env, _)| zfabric::topology::config::watch(&local.node, service, env, 8));
    let mut running_version = from_fabric.as_ref().map(|f| f.2).unwrap_or(0);
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
            Some(msg) = async {
                match &mut updates {
                    Some(u) => u.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match msg.decode::<zfabric::topology::config::ConfigDocument>() {
                    Ok(doc) if doc.kind == "toml" && doc.version > running_version => {
                        println!(
                            "config: {}/{} version {} available (running {running_version})",
                            doc.service, doc.env, doc.version
                        );
                        if args.restart_on_config_update {
                            println!("config: stopping to restart with version {}", doc.version);
                            break;
                        }
                        running_version = doc.version;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "a configuration update did not decode"),
                }
            },
            _ = &mut stop => break,
        }
    }
    crate::app::health::set_stopping("stopping: leaving the fabric and draining requests");
    let stats = local.counters.snapshot(&node_name, false);
    let mut node = local.node.clone();
    drop(local);
    // A graceful leave needs the node itself: the tasks that held a clone
    // (the gateway's server, aborted as `local` dropped) let go of it as
    // they end, within a bounded moment.
    let waited = Instant::now();
    loop {
        match Arc::try_unwrap(node) {
            Ok(n) => {
                n.shutdown(Duration::from_secs(2)).await;
                break;
            }
            Err(shared) if waited.elapsed() < Duration::from_secs(1) => {
                node = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                tracing::warn!("the node is still in use: stopping without telling its peers");
                break;
            }
        }
    }
    eprintln!(
        "node {:?} stopped after {:.1?}; handled {:?}",
        node_name,
        started.elapsed(),
        stats.handled
    );
    Ok(())
}

/// Keeps `/readyz` true to the node: bound and serving now, and (with
/// seeds) joined: ready while it sees at least one member. Checked every
/// half second for as long as the node runs; the check holds the node
/// only while it looks (so that stopping can take it back to leave).
fn watch_readiness(node: &Arc<Node>, has_seeds: bool) {
    if !has_seeds {
        crate::app::health::set_ready();
        return;
    }
    crate::app::health::set_not_ready("has seeds and has not joined the fabric yet");
    let node = Arc::downgrade(node);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let Some(node) = node.upgrade() else { break };
            let alone = node.members().is_empty();
            drop(node);
            if alone {
                crate::app::health::set_not_ready("sees no member of the fabric");
            } else {
                crate::app::health::set_ready();
            }
        }
    });
}

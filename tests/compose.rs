//! The Docker Compose fabric (deploy/compose): a gateway and two services
//! with several replicas each, on the local Docker Engine, driven the way
//! an operator would drive it. The test builds the image from the release
//! binary under a tag of its own, brings the fabric up under a project
//! name of its own, and:
//! 1. calls `checkout` (which forwards to `quote`) through the gateway
//!    from the host with a signed JWT, and sees every `quote` replica
//!    serve (each replica's `zfabric_requests_total`, scraped from its
//!    published metrics port); a forged token is refused;
//! 2. scales `quote` up and sees the new replicas serve, found through
//!    the service's DNS name without restarting anybody;
//! 3. kills a `quote` replica (`docker kill`) while an idempotent caller
//!    and a gateway caller run: the idempotent caller sees no error (the
//!    gateway caller's errors are counted: its internal hop is not
//!    idempotent);
//! 4. restarts the remaining replicas one at a time (SIGTERM: graceful
//!    leave) while both callers run: neither sees an error;
//! 5. tears everything down (`down -v --remove-orphans`) and checks that
//!    nothing of the project is left.
//!
//! It prints a report of what was called, scaled, killed and restarted and
//! what the callers saw on stderr (`--nocapture`).
//!
//! Guarantees: everything it makes (containers, network, image, key file)
//! is removed when it ends, also on panic or when its watchdog fires; its
//! traffic stays on the Compose network it creates and on 127.0.0.1 (the
//! ports are published on loopback only). Every link inside the fabric is
//! CURVE with the keys `keys.sh` makes; the gateway's own listener is
//! plain (tokens, not CURVE, admit outside callers). Not covered: more
//! than one Docker host, key rotation. Needs Docker Engine
//! and `docker-compose`: skipped with a visible message without them (a
//! failure when `ZFABRIC_REQUIRE_ALL` is set, as in CI).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use zfabric::topology::gateway::{sign_jwt, Claims, GatewayRequest};
use zfabric::{Client, RequestError};

const BIN: &str = env!("CARGO_BIN_EXE_zfabric");
const BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/image/build.sh");
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/compose/keys.sh");
const COMPOSE_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/compose/docker-compose.yml"
);

/// The whole run, image build included, is bounded by this.
const LIMIT: Duration = Duration::from_secs(480);
/// How long any one awaited condition may take.
const WAIT: Duration = Duration::from_secs(90);

/// A report line, printed at once (a failure later still shows the way
/// there).
fn say(line: impl AsRef<str>) {
    eprintln!("compose: {}", line.as_ref());
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} does not run: {e}"))
}

async fn docker(args: &[&str]) -> std::process::Output {
    run("docker", args).await
}

async fn docker_ok(args: &[&str]) -> String {
    let o = docker(args).await;
    assert!(o.status.success(), "docker {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `check` (every 200 ms, at most [`WAIT`]) until it gives `Some`.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < WAIT,
            "not reached within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything the test made; dropping it removes it all (callers,
/// the Compose project with its network and volumes, the image).
struct Fabric {
    project: String,
    image: String,
    /// The secrets `keys.sh` made (CURVE key pairs, key lists, JWT key).
    secrets: tempfile::TempDir,
    /// The gateway's HS256 key, read back from `secrets`.
    key: Vec<u8>,
}

impl Fabric {
    fn compose_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("docker-compose");
        c.args(["-p", &self.project, "-f", COMPOSE_FILE])
            .args(args)
            .env("ZFABRIC_IMAGE", &self.image)
            .env("ZFABRIC_SECRETS", self.secrets.path())
            .env_remove("QUOTE_REPLICAS")
            .env_remove("CHECKOUT_REPLICAS");
        c
    }

    async fn compose(&self, args: &[&str]) -> String {
        let mut c: Command = self.compose_cmd(args).into();
        let o = c
            .kill_on_drop(true)
            .output()
            .await
            .expect("docker-compose runs");
        if !o.status.success() {
            // What the nodes said, to see why.
            let mut l: Command = self
                .compose_cmd(&["logs", "--no-color", "--tail", "20"])
                .into();
            let logs = l.output().await.map(|l| text(&l)).unwrap_or_default();
            panic!("docker-compose {args:?}: {}\n{logs}", text(&o));
        }
        text(&o)
    }

    fn network(&self) -> String {
        format!("{}_fabric", self.project)
    }

    /// The running containers of `service`, by Compose name
    /// (`<project>_quote_3`), with their ids.
    async fn running(&self, service: &str) -> BTreeMap<String, String> {
        let out = docker_ok(&[
            "ps",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--format",
            "{{.Names}} {{.ID}}",
        ])
        .await;
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, id)| (n.to_string(), id.to_string()))
            .collect()
    }

    /// The short name of a container in the report (`quote_3`).
    fn short<'a>(&self, name: &'a str) -> &'a str {
        name.strip_prefix(&format!("{}_", self.project))
            .unwrap_or(name)
    }

    fn token(&self) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            + 3600;
        sign_jwt(
            &self.key,
            &Claims {
                sub: "compose-test".into(),
                exp,
                nbf: None,
                services: None,
            },
        )
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // Callers first (they hold the network), then the project, then
        // the image.
        if let Ok(o) = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("name={}-caller", self.project),
            ])
            .output()
        {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
        let _ = self
            .compose_cmd(&["down", "-v", "--remove-orphans", "-t", "5"])
            .output();
        let _ = std::process::Command::new("docker")
            .args(["image", "rm", "-f", &self.image])
            .output();
    }
}

/// `GET path` on 127.0.0.1:`port`: the status and the body, or `None`
/// if nothing answered within 2 s.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let resp = String::from_utf8_lossy(&buf).into_owned();
        let status = resp.split_whitespace().nth(1)?.parse().ok()?;
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
}

/// The sum of the samples of `metric` whose labels include every one of
/// `labels` (`key="value"`), in a Prometheus text exposition.
fn sample(exposition: &str, metric: &str, labels: &[&str]) -> u64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The host port `port` of `container` is published on.
async fn host_port(container: &str, port: u16) -> Option<u16> {
    let o = docker(&["port", container, &format!("{port}/tcp")]).await;
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.rsplit(':').next()?.trim().parse().ok())
}

/// A container's metrics page, if it answers.
async fn metrics(container: &str) -> Option<String> {
    let port = host_port(container, 9100).await?;
    match http_get(port, "/metrics").await? {
        (200, body) => Some(body),
        _ => None,
    }
}

/// Requests of `service` a container's node served successfully, if its
/// metrics answer.
async fn served(container: &str, service: &str) -> Option<u64> {
    let m = metrics(container).await?;
    Some(sample(
        &m,
        "zfabric_requests_total",
        &[
            &format!("service=\"{service}\""),
            "side=\"server\"",
            "outcome=\"ok\"",
        ],
    ))
}

/// Alive members a container's node sees, if its metrics answer.
async fn alive_members(container: &str) -> Option<u64> {
    let m = metrics(container).await?;
    Some(sample(&m, "zfabric_node_members", &["state=\"alive\""]))
}

async fn ready(container: &str) -> bool {
    match host_port(container, 9100).await {
        Some(p) => matches!(http_get(p, "/readyz").await, Some((200, _))),
        None => false,
    }
}

/// `quote` requests served by each container, those that do not answer
/// counted as 0.
async fn served_by(containers: &BTreeMap<String, String>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (name, id) in containers {
        out.insert(name.clone(), served(id, "quote").await.unwrap_or(0));
    }
    out
}

/// `after - before` per replica, formatted for the report.
fn deltas(
    fabric: &Fabric,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> (String, BTreeMap<String, u64>) {
    let d: BTreeMap<String, u64> = after
        .iter()
        .map(|(n, a)| {
            (
                n.clone(),
                a.saturating_sub(before.get(n).copied().unwrap_or(0)),
            )
        })
        .collect();
    let s = d
        .iter()
        .map(|(n, v)| format!("{} {v}", fabric.short(n)))
        .collect::<Vec<_>>()
        .join(", ");
    (s, d)
}

/// What a caller saw: replies, errors, and the first error of each kind.
#[derive(Default)]
struct Seen {
    replies: AtomicU64,
    errors: AtomicU64,
    /// By kind: how many, and the first message of that kind.
    kinds: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Seen {
    /// Counts an error; its kind is the message up to the first digit
    /// (ids, addresses and durations vary within a kind).
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let kind: String = message
            .split(|c: char| c.is_ascii_digit())
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut kinds = self.kinds.lock().unwrap();
        let e = kinds
            .entry(kind)
            .or_insert((0, message.chars().take(160).collect()));
        e.0 += 1;
    }

    fn replies(&self) -> u64 {
        self.replies.load(Ordering::Relaxed)
    }

    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn summary(&self) -> String {
        let kinds = self.kinds.lock().unwrap();
        let mut s = format!("{} replies, {} errors", self.replies(), self.errors());
        if !kinds.is_empty() {
            let k: Vec<String> = kinds
                .values()
                .map(|(n, first)| format!("{n}× {first:?}"))
                .collect();
            s.push_str(&format!(" ({})", k.join("; ")));
        }
        s
    }
}

/// An idempotent `zfabric req` in a container of its own on the fabric's
/// network (the Compose `caller` service, with its CURVE key), calling
/// `quote` through its DNS name; each reply or error is counted as it is
/// printed. Stopped by killing its container.
struct Caller {
    name: String,
    seen: Arc<Seen>,
    child: tokio::process::Child,
    reader: tokio::task::JoinHandle<()>,
}

impl Caller {
    async fn start(fabric: &Fabric, tag: &str) -> Caller {
        let name = format!("{}-caller-{tag}", fabric.project);
        let mut cmd: Command = fabric
            .compose_cmd(&[
                "run",
                "--rm",
                "-T",
                "--name",
                &name,
                "caller",
                "req",
                "--connect",
                "tcp://quote:7000",
                "--service",
                "quote",
                "--data",
                "{\"caller\":\"direct\"}",
                "--count",
                "100000000",
                "--timeout",
                "5000",
                "--idempotent",
            ])
            .into();
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("docker-compose run starts");
        let seen = Arc::new(Seen::default());
        let out = child.stdout.take().expect("piped stdout");
        let s = seen.clone();
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.strip_prefix("error: ") {
                    Some(e) => {
                        // The kind, without ids and addresses.
                        s.error(e.to_string());
                    }
                    None if line.contains("\"direct\"") => {
                        s.replies.fetch_add(1, Ordering::Relaxed);
                    }
                    None => s.error(format!("wrong reply {line}")),
                }
            }
        });
        Caller {
            name,
            seen,
            child,
            reader,
        }
    }

    async fn stop(mut self) -> Arc<Seen> {
        let _ = docker(&["kill", &self.name]).await;
        let _ = self.child.wait().await;
        let _ = (&mut self.reader).await;
        self.seen
    }
}

/// Calls `checkout` through the gateway from the host, about 100 a second,
/// until stopped.
struct GatewayCaller {
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl GatewayCaller {
    fn start(client: Arc<Client<GatewayRequest, ByteBuf>>, token: String) -> GatewayCaller {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let (st, s) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while !st.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let body = serde_json::json!({ "caller": "gateway", "n": n });
                match gateway_call(&client, &token, "checkout", &body).await {
                    Ok(v) if v == body => {
                        s.replies.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(v) => s.error(format!("wrong reply {v}")),
                    Err(e) => s.error(describe(&e)),
                }
            }
        });
        GatewayCaller { stop, seen, task }
    }

    async fn stop(self) -> Arc<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.seen
    }
}

fn describe(e: &RequestError) -> String {
    match e {
        RequestError::Remote(r) => format!("remote {}: {}", r.code.as_str(), r.message),
        other => other.to_string(),
    }
}

async fn gateway_call(
    client: &Client<GatewayRequest, ByteBuf>,
    token: &str,
    service: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, RequestError> {
    let req = GatewayRequest {
        token: token.to_string(),
        service: service.to_string(),
        body: ByteBuf::from(zfabric::wire::encode_body(body).expect("encodes").to_vec()),
    };
    let reply = client.request_within(&req, Duration::from_secs(5)).await?;
    Ok(zfabric::wire::decode_body(&reply)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_fabric_scales_fails_over_and_rolls() {
    if !common::tool_available("docker", "info")
        || !common::tool_available("docker-compose", "version")
    {
        return;
    }
    common::watchdog_for(LIMIT, fabric_lifecycle()).await;
}

async fn fabric_lifecycle() {
    let started = Instant::now();
    let id = std::process::id();
    let mut fabric = Fabric {
        project: format!("zfcompose{id}"),
        image: format!("zfabric-compose:{id}"),
        secrets: tempfile::tempdir().expect("temp dir"),
        key: Vec::new(),
    };

    // The image, from the release binary; then the secrets, made by the
    // script an operator uses (keygen inside that image).
    let built = run("sh", &[BUILD, &fabric.image, BIN]).await;
    assert!(built.status.success(), "image build: {}", text(&built));
    let dir = fabric.secrets.path().display().to_string();
    let keys = run("sh", &[KEYS, &dir, &fabric.image]).await;
    assert!(keys.status.success(), "keys.sh: {}", text(&keys));
    fabric.key = std::fs::read_to_string(fabric.secrets.path().join("gateway-hs256"))
        .expect("the JWT key")
        .trim_end()
        .as_bytes()
        .to_vec();
    say(format!(
        "image {} built from {BIN}, CURVE key pairs (quote, checkout, gateway, caller) and \
         the JWT key made by keys.sh, in {:.1?}; project {}",
        fabric.image,
        started.elapsed(),
        fabric.project
    ));

    // ---- up ----
    let t = Instant::now();
    fabric.compose(&["up", "-d"]).await;
    let seeds = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={}", fabric.project),
        "--filter",
        "label=com.docker.compose.service=seeds",
        "--format",
        "{{.Status}}",
    ])
    .await;
    assert!(
        seeds.trim().starts_with("Exited (0)"),
        "the seeds one-shot did not complete: {seeds:?}"
    );
    let quotes = fabric.running("quote").await;
    let checkouts = fabric.running("checkout").await;
    let gateways = fabric.running("gateway").await;
    assert_eq!(quotes.len(), 3, "{quotes:?}");
    assert_eq!(checkouts.len(), 2, "{checkouts:?}");
    assert_eq!(gateways.len(), 1, "{gateways:?}");
    let gw = gateways.values().next().unwrap().clone();
    let all: Vec<String> = quotes
        .values()
        .chain(checkouts.values())
        .chain(gateways.values())
        .cloned()
        .collect();
    for c in &all {
        until(&format!("{c} ready (/readyz)"), || async {
            ready(c).await.then_some(())
        })
        .await;
    }
    // Every node sees the other five (found through the two DNS names).
    for c in &all {
        until(&format!("{c} sees 5 members"), || async {
            (alive_members(c).await? == 5).then_some(())
        })
        .await;
    }
    say(format!(
        "up: seeds (wait-for --dns quote) exited 0, then quote×3, checkout×2, gateway×1 \
         all ready (/readyz 200), each node seeing the other 5, {:.1?} after `up`",
        t.elapsed()
    ));

    // ---- call through the gateway ----
    let gw_port = host_port(&gw, 8080).await.expect("the gateway's port");
    let client = Arc::new(
        Client::<GatewayRequest, ByteBuf>::connect(&format!("tcp://127.0.0.1:{gw_port}"))
            .await
            .expect("a client of the gateway"),
    );
    let token = fabric.token();
    let before = served_by(&quotes).await;
    let calls = 30u64;
    for n in 0..calls {
        let body = serde_json::json!({ "order": n });
        let reply = gateway_call(&client, &token, "checkout", &body)
            .await
            .unwrap_or_else(|e| panic!("call {n} through the gateway: {e}"));
        assert_eq!(reply, body);
    }
    let forged = sign_jwt(
        b"not the gateway's key",
        &Claims {
            sub: "mallory".into(),
            exp: u64::MAX / 2,
            nbf: None,
            services: None,
        },
    );
    let refused = gateway_call(&client, &forged, "checkout", &serde_json::json!({})).await;
    assert!(
        matches!(&refused, Err(RequestError::Remote(e)) if e.code == "unauthorized"),
        "a forged token was not refused: {refused:?}"
    );
    let after = served_by(&quotes).await;
    let (report, d) = deltas(&fabric, &before, &after);
    assert_eq!(d.values().sum::<u64>(), calls, "quote served {d:?}");
    assert!(d.values().all(|&v| v > 0), "a quote replica idle: {d:?}");
    say(format!(
        "call: {calls} calls host → gateway (127.0.0.1:{gw_port}, HS256 JWT from the secret) \
         → checkout → quote: {calls} replies, 0 errors; served by {report}; a forged token: \
         remote unauthorized"
    ));
    let out = fabric
        .compose(&[
            "run",
            "--rm",
            "-T",
            "--name",
            &format!("{}-caller-once", fabric.project),
            "caller",
            "req",
            "--connect",
            "tcp://quote:7000",
            "--service",
            "quote",
            "--data",
            "{\"hello\":1}",
            "--count",
            "20",
        ])
        .await;
    assert!(out.contains("20 replies, 0 errors"), "{out}");
    say(
        "call: `docker-compose run caller req --connect tcp://quote:7000 --count 20` \
         (CURVE, the caller's key): 20 replies, 0 errors",
    );

    // ---- scale quote 3 → 5 ----
    let t = Instant::now();
    fabric
        .compose(&["up", "-d", "--no-deps", "--scale", "quote=5", "quote"])
        .await;
    let scaled = fabric.running("quote").await;
    assert_eq!(scaled.len(), 5, "{scaled:?}");
    let new: BTreeMap<String, String> = scaled
        .iter()
        .filter(|(n, _)| !quotes.contains_key(*n))
        .map(|(n, i)| (n.clone(), i.clone()))
        .collect();
    assert_eq!(new.len(), 2, "{new:?}");
    let before = served_by(&scaled).await;
    // Calls go on until both new replicas have served some (checkout
    // finds them through the re-resolved DNS name and gossip).
    let mut made = 0u64;
    loop {
        for _ in 0..20 {
            made += 1;
            let body = serde_json::json!({ "scale": made });
            match gateway_call(&client, &token, "checkout", &body).await {
                Ok(v) => assert_eq!(v, body),
                Err(e) => panic!("call through the gateway while scaling: {e}"),
            }
        }
        let mut all_served = true;
        for id in new.values() {
            all_served &= served(id, "quote").await.unwrap_or(0) > 0;
        }
        if all_served {
            break;
        }
        assert!(
            t.elapsed() < WAIT,
            "the new replicas did not serve within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = t.elapsed();
    // And a fixed batch, to see the spread over five.
    for n in 0..50 {
        let body = serde_json::json!({ "spread": n });
        assert_eq!(
            gateway_call(&client, &token, "checkout", &body)
                .await
                .expect("call after scaling"),
            body
        );
    }
    made += 50;
    let after = served_by(&scaled).await;
    let (report, d) = deltas(&fabric, &before, &after);
    assert_eq!(d.values().sum::<u64>(), made, "{d:?}");
    assert!(d.values().all(|&v| v > 0), "{d:?}");
    say(format!(
        "scale: `up --scale quote=5`: {} and {} new; both serving {took:.1?} after the command; \
         {made} calls through the gateway meanwhile: {made} replies, 0 errors; served by {report}",
        fabric.short(new.keys().next().unwrap()),
        fabric.short(new.keys().nth(1).unwrap()),
    ));

    // ---- kill one quote replica under load ----
    let direct = Caller::start(&fabric, "kill").await;
    let through = GatewayCaller::start(client.clone(), token.clone());
    until("the callers get replies", || async {
        (direct.seen.replies() >= 200 && through.seen.replies() >= 20).then_some(())
    })
    .await;
    let (victim_name, victim) = scaled
        .iter()
        .next()
        .map(|(n, i)| (n.clone(), i.clone()))
        .unwrap();
    let survivors: BTreeMap<String, String> = scaled
        .iter()
        .filter(|(n, _)| **n != victim_name)
        .map(|(n, i)| (n.clone(), i.clone()))
        .collect();
    let before = served_by(&survivors).await;
    let (d0, g0) = (direct.seen.replies(), through.seen.replies());
    let t = Instant::now();
    docker_ok(&["kill", &victim]).await;
    until("the gateway sees the killed replica gone", || async {
        (alive_members(&gw).await? == 6).then_some(())
    })
    .await;
    let detected = t.elapsed();
    let (d1, g1) = (direct.seen.replies(), through.seen.replies());
    until("the callers go on after the kill", || async {
        (direct.seen.replies() >= d1 + 1000 && through.seen.replies() >= g1 + 100).then_some(())
    })
    .await;
    let direct_seen = direct.stop().await;
    let through_seen = through.stop().await;
    let after = served_by(&survivors).await;
    let (report, d) = deltas(&fabric, &before, &after);
    assert!(d.values().all(|&v| v > 0), "a survivor idle: {d:?}");
    say(format!(
        "kill: `docker kill {}` (SIGKILL, no goodbye) after {d0} direct and {g0} gateway replies; \
         the gateway saw it gone {detected:.1?} later",
        fabric.short(&victim_name)
    ));
    say(format!(
        "kill: idempotent direct caller (req --idempotent --timeout 5000 → quote): {}; \
         {} replies after the kill",
        direct_seen.summary(),
        direct_seen.replies() - d0
    ));
    say(format!(
        "kill: gateway caller (host → gateway → checkout → quote, not idempotent): {}; {} \
         replies after the kill",
        through_seen.summary(),
        through_seen.replies() - g0
    ));
    say(format!(
        "kill: served by the 4 survivors meanwhile: {report}"
    ));
    assert_eq!(
        direct_seen.errors(),
        0,
        "the idempotent caller did not fail over: {}",
        direct_seen.summary()
    );

    // ---- rolling restart of the remaining quote replicas ----
    let direct = Caller::start(&fabric, "roll").await;
    let through = GatewayCaller::start(client.clone(), token.clone());
    until("the callers get replies", || async {
        (direct.seen.replies() >= 200 && through.seen.replies() >= 20).then_some(())
    })
    .await;
    let t_roll = Instant::now();
    let mut steps = Vec::new();
    for (name, cid) in &survivors {
        let t = Instant::now();
        docker_ok(&["restart", "-t", "10", cid]).await;
        let restarted = t.elapsed();
        until(&format!("{name} ready again"), || async {
            ready(cid).await.then_some(())
        })
        .await;
        // Back in the fabric: the gateway sees it again and it serves.
        until(&format!("{name} rejoined"), || async {
            (alive_members(&gw).await? == 6).then_some(())
        })
        .await;
        until(&format!("{name} serving again"), || async {
            (served(cid, "quote").await? > 0).then_some(())
        })
        .await;
        steps.push(format!(
            "{} (stopped and started {restarted:.1?}, serving {:.1?})",
            fabric.short(name),
            t.elapsed()
        ));
    }
    let (d1, g1) = (direct.seen.replies(), through.seen.replies());
    until("the callers go on after the roll", || async {
        (direct.seen.replies() >= d1 + 200 && through.seen.replies() >= g1 + 20).then_some(())
    })
    .await;
    let rolled = t_roll.elapsed();
    let direct_seen = direct.stop().await;
    let through_seen = through.stop().await;
    let after = served_by(&survivors).await;
    let (report, d) = deltas(&fabric, &BTreeMap::new(), &after);
    assert!(d.values().all(|&v| v > 0), "{d:?}");
    say(format!(
        "roll: `docker restart -t 10` (SIGTERM: graceful leave) one at a time, each waited for \
         until serving again: {}; {rolled:.1?} in all",
        steps.join(", ")
    ));
    say(format!(
        "roll: idempotent direct caller: {}",
        direct_seen.summary()
    ));
    say(format!(
        "roll: gateway caller (not idempotent): {}",
        through_seen.summary()
    ));
    say(format!("roll: served since each restart: {report}"));
    assert_eq!(
        direct_seen.errors(),
        0,
        "the idempotent caller saw errors during a graceful roll: {}",
        direct_seen.summary()
    );
    // A leaving node tells its peers first and then drains: not even a
    // call that is not idempotent fails.
    assert_eq!(
        through_seen.errors(),
        0,
        "the gateway caller saw errors during a graceful roll: {}",
        through_seen.summary()
    );
    drop(client);

    // ---- down ----
    let t = Instant::now();
    fabric
        .compose(&["down", "-v", "--remove-orphans", "-t", "10"])
        .await;
    let left = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", fabric.project),
    ])
    .await;
    assert!(left.trim().is_empty(), "containers left: {left}");
    let nets = docker_ok(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name={}", fabric.network()),
    ])
    .await;
    assert!(nets.trim().is_empty(), "network left: {nets}");
    say(format!(
        "down: `down -v --remove-orphans`: no container of {} and no network left after \
         {:.1?}; {:.1?} in all",
        fabric.project,
        t.elapsed(),
        started.elapsed()
    ));
    // The image goes in Drop.
}

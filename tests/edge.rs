//! The HTTP edge (`zfabric::edge`) driven by real HTTP clients: every
//! route kind over HTTP/1.1 and HTTP/2, every fabric error mapping, JWT
//! accept and refuse, the size, rate and deadline limits, the cache,
//! `traceparent`, TLS; the status page in headless Chromium, seeing a
//! member disappear once it is killed.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use zfabric::edge::{EdgeConfig, HttpGateway, MAPPING};
use zfabric::node::{Node, NodeConfig, ServeOptions};
use zfabric::resilience::{BreakerConfig, Bulkhead, BulkheadConfig};
use zfabric::telemetry::{EdgeRefusal, EDGE_REFUSED};
use zfabric::{RemoteError, Request};

const SECRET: &[u8] = b"edge-test-secret";

/// The services behind the gateway, on one node.
async fn services(hits: Arc<AtomicU64>) -> Node {
    Node::builder("svc")
        .config(common::fast())
        .bind("tcp://127.0.0.1:0")
        .serve("users", |req: Request<Value>| async move {
            Ok::<_, RemoteError>(json!({"user": req.body["id"], "name": "ada", "got": req.body}))
        })
        .serve("orders", |_req: Request<Value>| async move {
            Ok::<_, RemoteError>(json!({"orders": [1, 2]}))
        })
        .serve("counter", move |_req: Request<Value>| {
            let hits = hits.clone();
            async move { Ok::<_, RemoteError>(json!({"n": hits.fetch_add(1, Ordering::SeqCst) + 1})) }
        })
        .serve("codes", |req: Request<Value>| async move {
            let code = req.body["code"].as_str().unwrap_or("teapot").to_string();
            Err::<Value, _>(RemoteError {
                code,
                message: "asked for".into(),
            })
        })
        .serve("slow", |req: Request<Value>| async move {
            let ms = req.body["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, RemoteError>(json!({"slept": ms}))
        })
        .serve_with(
            "narrow",
            ServeOptions::new().bulkhead(Bulkhead::new("narrow", BulkheadConfig::new(1, 0))),
            |_req: Request<Value>| async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<_, RemoteError>(json!({}))
            },
        )
        .serve("flaky", |_req: Request<Value>| async move {
            Err::<Value, _>(RemoteError {
                code: "injected".into(),
                message: "always".into(),
            })
        })
        .start()
        .await
        .unwrap()
}

/// The gateway's node, joined to `svc`: a breaker that opens after two
/// failures and stays open, so the circuit-open mapping is deterministic.
async fn gateway_node(svc: &Node) -> Arc<Node> {
    gateway_node_with(
        svc,
        Some(BreakerConfig {
            window: 4,
            minimum_calls: 2,
            failure_rate: 0.5,
            open_for: Duration::from_secs(60),
            ..BreakerConfig::default()
        }),
    )
    .await
}

/// A gateway node joined to `svc` with `breaker`.
async fn gateway_node_with(svc: &Node, breaker: Option<BreakerConfig>) -> Arc<Node> {
    let config = NodeConfig {
        breaker,
        ..common::fast()
    };
    let node = Node::builder("edge")
        .config(config)
        .bind("tcp://127.0.0.1:0")
        .seed(svc.endpoints()[0].to_string())
        .start()
        .await
        .unwrap();
    let node = Arc::new(node);
    // Joined when it sees every service of `svc` (svc may see others).
    common::eventually(400, Duration::from_millis(10), || {
        let n = node.clone();
        async move { (!n.serving("flaky").is_empty()).then_some(()) }
    })
    .await;
    node
}

const ROUTES: &str = r#"
listen = "127.0.0.1:0"
max_body_bytes = 256
[[route]]
path = "/v1/{service}"
service = "{service}"
allow = ["users", "orders", "codes", "slow", "narrow", "flaky", "ghost"]
[[route]]
method = "GET"
path = "/v1/users/{id}"
service = "users"
[[route]]
method = "GET"
path = "/v1/count"
service = "counter"
cache_ttl_ms = 60000
[[route]]
method = "GET"
path = "/v1/dash/{id}"
aggregate = ["users", "orders"]
[[route]]
method = "GET"
path = "/v1/partial/{id}"
aggregate = ["users", "ghost"]
completion = "by_deadline"
[[route]]
method = "GET"
path = "/ping"
static_status = 200
static_body = '{"pong":true}'
"#;

async fn start(config: &str, dir: &std::path::Path, node: Arc<Node>) -> HttpGateway {
    let config = EdgeConfig::from_toml(config, Some(dir)).unwrap();
    HttpGateway::start(config, node).await.unwrap()
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

async fn send(rb: reqwest::RequestBuilder) -> Reply {
    let r = tokio::time::timeout(Duration::from_secs(10), rb.send())
        .await
        .expect("the gateway answers")
        .expect("an HTTP answer");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        json,
    }
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_kind_answers_over_http1_and_http2() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let svc = services(hits.clone()).await;
        let gw = start(ROUTES, dir.path(), gateway_node(&svc).await).await;
        let base = gw.url();
        let h1 = reqwest::Client::new();
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        for (client, version) in [
            (&h1, reqwest::Version::HTTP_11),
            (&h2, reqwest::Version::HTTP_2),
        ] {
            // POST /v1/{service}: JSON in, MessagePack over the fabric, JSON out.
            let r = client
                .post(format!("{base}/v1/users"))
                .body(r#"{"id": 7, "extra": [1, "x"]}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), version);
            assert_eq!(r.status().as_u16(), 200);
            let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert_eq!(v["user"], 7);
            assert_eq!(v["got"]["extra"], json!([1, "x"]));
            // A path template: the parameter goes into the body.
            let r = send(client.get(format!("{base}/v1/users/42"))).await;
            assert_eq!((r.status, r.json["user"].clone()), (200, json!("42")));
            // Static.
            let r = send(client.get(format!("{base}/ping"))).await;
            assert_eq!((r.status, r.json.clone()), (200, json!({"pong": true})));
            // Aggregation: both answers in one.
            let r = send(client.get(format!("{base}/v1/dash/9"))).await;
            assert_eq!(r.status, 200, "{}", r.json);
            assert_eq!(r.json["results"]["users"]["user"], "9");
            assert_eq!(r.json["results"]["orders"]["orders"], json!([1, 2]));
            assert_eq!(r.json["partial"], false);
        }
        // Aggregation with a service nobody serves: partial, marked.
        let r = send(h1.get(format!("{base}/v1/partial/3"))).await;
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(r.json["results"]["users"]["user"], "3");
        assert_eq!(r.json["errors"]["ghost"]["status"], 404);
        assert_eq!(r.json["partial"], true);
        // The cache: the second GET is answered without a fabric call.
        let first = send(h1.get(format!("{base}/v1/count"))).await;
        let second = send(h1.get(format!("{base}/v1/count"))).await;
        assert_eq!(header(&first, "x-cache"), Some("miss"));
        assert_eq!(header(&second, "x-cache"), Some("hit"));
        assert_eq!(first.json, second.json);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "one fabric call for two GETs"
        );
        // Unknown path, wrong method, service not on the allow-list.
        let before = common::counter(EDGE_REFUSED, EdgeRefusal::NoRoute.as_str());
        assert_eq!(send(h1.get(format!("{base}/nowhere"))).await.status, 404);
        assert!(common::counter(EDGE_REFUSED, EdgeRefusal::NoRoute.as_str()) > before);
        let r = send(h1.delete(format!("{base}/ping"))).await;
        assert_eq!((r.status, header(&r, "allow")), (405, Some("GET")));
        let r = send(h1.post(format!("{base}/v1/secrets"))).await;
        assert_eq!(
            (r.status, r.json["error"]["code"].clone()),
            (403, json!("forbidden"))
        );
        gw.shutdown(Duration::from_secs(1)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fabric_errors_become_the_documented_http_statuses() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let svc = services(Arc::new(AtomicU64::new(0))).await;
        let gw = start(ROUTES, dir.path(), gateway_node(&svc).await).await;
        let base = gw.url();
        let c = reqwest::Client::new();
        let post = |service: &str, body: Value| {
            c.post(format!("{base}/v1/{service}"))
                .body(body.to_string())
        };
        let status_of = |failure: &str| {
            MAPPING
                .iter()
                .find(|r| r.failure == failure)
                .unwrap_or_else(|| panic!("no row {failure}"))
                .status
        };
        // NoSuchService.
        let r = send(post("ghost", json!({}))).await;
        assert_eq!(r.status, status_of("CallError::NoSuchService"));
        assert_eq!(r.json["error"]["code"], "no_such_service");
        // The 4xx a service names, and any other code.
        for code in ["bad_request", "not_found", "unauthorized", "forbidden"] {
            let r = send(post("codes", json!({"code": code}))).await;
            assert_eq!(r.status, status_of(&format!("remote {code}")), "{code}");
            assert_eq!(r.json["error"]["code"], code);
            assert_eq!(r.json["error"]["message"], "asked for");
        }
        let r = send(post("codes", json!({"code": "teapot"}))).await;
        assert_eq!(r.status, status_of("remote (any other code)"));
        // Timeout: the caller's deadline header is the fabric call's deadline.
        let t0 = Instant::now();
        let r = send(post("slow", json!({"ms": 3000})).header("x-request-timeout-ms", "150")).await;
        assert_eq!(r.status, status_of("RequestError::Timeout"), "{}", r.json);
        assert!(
            t0.elapsed() < Duration::from_millis(2900),
            "the header's deadline was used"
        );
        let r = send(post("slow", json!({"ms": 1})).header("x-request-timeout-ms", "soon")).await;
        assert_eq!(r.status, 400);
        // CircuitOpen: two failures open the gateway node's breaker.
        let mut last = None;
        for _ in 0..6 {
            let r = send(post("flaky", json!({}))).await;
            if r.status == 503 {
                last = Some(r);
                break;
            }
            assert_eq!(r.status, 502);
        }
        let r = last.expect("the breaker opened");
        assert_eq!(r.json["error"]["code"], "circuit_open");
        assert_eq!(status_of("CallError::CircuitOpen"), 503);
        let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        // Rejected: the bulkhead (1 slot, no queue) is held by a first
        // call. Through a gateway without breakers, so that refusals do
        // not open a circuit first.
        let gw2 = start(ROUTES, dir.path(), gateway_node_with(&svc, None).await).await;
        let base2 = gw2.url();
        let post2 = |service: &str, body: Value| {
            c.post(format!("{base2}/v1/{service}"))
                .body(body.to_string())
        };
        // Rejected: the bulkhead (1 slot, no queue) is held by a first call.
        let held = tokio::spawn(send(post2("narrow", json!({}))));
        // Once the bulkhead shows the first call running, the next is refused.
        common::eventually(400, Duration::from_millis(10), || async {
            zfabric::telemetry::status()
                .bulkheads
                .iter()
                .any(|b| b.name == "narrow" && b.in_flight == 1)
                .then_some(())
        })
        .await;
        let r = send(post2("narrow", json!({}))).await;
        assert_eq!(r.status, status_of("CallError::Rejected"), "{}", r.json);
        assert_eq!(header(&r, "retry-after"), Some("1"));
        assert_eq!(held.await.unwrap().status, 200);
        gw2.shutdown(Duration::from_secs(1)).await;
        gw.shutdown(Duration::from_secs(1)).await;
    })
    .await
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

fn exp(in_s: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now + in_s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_size_rate_and_traces_are_checked_at_the_edge() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gw.key"), SECRET).unwrap();
        let svc = services(Arc::new(AtomicU64::new(0))).await;
        let config = r#"
            listen = "127.0.0.1:0"
            max_body_bytes = 64
            [auth]
            hs256_file = "gw.key"
            [rate_limit]
            per_second = 0.5
            burst = 3
            by = "subject"
            [[route]]
            method = "GET"
            path = "/v1/users/{id}"
            service = "users"
            scopes = ["users:read"]
            [[route]]
            path = "/v1/echo"
            service = "users"
            [[route]]
            method = "GET"
            path = "/open"
            static_status = 200
            static_body = "{}"
            public = true
        "#;
        let gw = start(config, dir.path(), gateway_node(&svc).await).await;
        let base = gw.url();
        let c = reqwest::Client::new();
        let get = |t: Option<&str>| {
            let rb = c.get(format!("{base}/v1/users/1"));
            match t {
                Some(t) => rb.bearer_auth(t),
                None => rb,
            }
        };
        let unauthorized = || common::counter(EDGE_REFUSED, "unauthorized");
        let before = unauthorized();
        // No token, a bad signature, an expired token: 401.
        let r = send(get(None)).await;
        assert_eq!(r.status, 401);
        assert!(header(&r, "www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "eve", "exp": exp(60), "scope": "users:read"}),
            &EncodingKey::from_secret(b"another secret").unwrap(),
        )
        .unwrap();
        assert_eq!(send(get(Some(&forged))).await.status, 401);
        let old = token(json!({"sub": "ann", "exp": exp(-3600), "scope": "users:read"}));
        assert_eq!(send(get(Some(&old))).await.status, 401);
        assert_eq!(unauthorized() - before, 3, "each refusal counted");
        // A valid token without the scope: 403; with it: 200.
        let narrow = token(json!({"sub": "bob", "exp": exp(60), "scope": "orders:read"}));
        assert_eq!(send(get(Some(&narrow))).await.status, 403);
        let ann = token(json!({"sub": "ann", "exp": exp(60), "scope": "users:read other"}));
        let r = send(get(Some(&ann))).await;
        assert_eq!(r.status, 200, "{}", r.json);
        // A public route needs no token.
        assert_eq!(send(c.get(format!("{base}/open"))).await.status, 200);
        // Size: a body over 64 bytes is refused before any call.
        let cara = token(json!({"sub": "cara", "exp": exp(60)}));
        let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(100));
        let r = send(
            c.post(format!("{base}/v1/echo"))
                .bearer_auth(&cara)
                .body(big),
        )
        .await;
        assert_eq!(r.status, 413);
        // Not JSON: 400.
        let r = send(
            c.post(format!("{base}/v1/echo"))
                .bearer_auth(&cara)
                .body("{nope"),
        )
        .await;
        assert_eq!(r.status, 400);
        // A token whose `services` claim leaves the route's service out.
        let only_orders = token(json!({"sub": "eli", "exp": exp(60), "services": ["orders"]}));
        let r = send(
            c.post(format!("{base}/v1/echo"))
                .bearer_auth(&only_orders)
                .body("{}"),
        )
        .await;
        assert_eq!(r.status, 403, "{}", r.json);
        // traceparent: the answer continues the caller's trace.
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let r = send(
            c.post(format!("{base}/v1/echo"))
                .bearer_auth(&cara)
                .header("traceparent", tp)
                .body("{}"),
        )
        .await;
        assert_eq!(r.status, 200);
        let out = header(&r, "traceparent").unwrap();
        assert!(
            out.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{out}"
        );
        assert_ne!(out, tp, "the gateway's own span");
        // Without one, a new trace.
        let r = send(get(Some(&ann))).await;
        assert_eq!(header(&r, "traceparent").map(str::len), Some(55));
        // Rate: ann has used 2 of her burst of 3 (the 403 and 401 were
        // bob's and anonymous); the next passes, then 429.
        let r = send(get(Some(&ann))).await;
        assert_eq!(r.status, 200);
        let limited = common::counter(EDGE_REFUSED, "rate_limited");
        let r = send(get(Some(&ann))).await;
        assert_eq!(r.status, 429);
        let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert!(common::counter(EDGE_REFUSED, "rate_limited") > limited);
        // Another subject has its own bucket.
        assert_eq!(
            send(get(Some(&token(
                json!({"sub": "dan", "exp": exp(60), "scope": "users:read"})
            ))))
            .await
            .status,
            200
        );
        gw.shutdown(Duration::from_secs(1)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_same_routes_when_a_certificate_is_configured() {
    if !common::tool_available("openssl", "version") {
        return;
    }
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-days", "2", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext", "basicConstraints=critical,CA:FALSE",
                "-keyout", "key.pem", "-out", "cert.pem",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let svc = services(Arc::new(AtomicU64::new(0))).await;
        let config = format!(
            "{ROUTES}\n[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n"
        );
        let gw = start(&config, dir.path(), gateway_node(&svc).await).await;
        assert!(gw.url().starts_with("https://"));
        // A rustls client trusting exactly that certificate.
        use rustls::pki_types::pem::PemObject;
        let cert = rustls::pki_types::CertificateDer::from_pem_file(dir.path().join("cert.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(gw.local_addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = r#"{"id": 5}"#;
        let req = format!(
            "POST /v1/users HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""user":5"#), "{answer}");
        // Plain HTTP to the TLS port gets no answer.
        let plain = reqwest::Client::new()
            .get(format!("http://{}/ping", gw.local_addr()))
            .send()
            .await;
        assert!(plain.is_err() || !plain.unwrap().status().is_success());
        gw.shutdown(Duration::from_secs(1)).await;
    })
    .await
}

#[test]
fn the_gateway_doc_table_is_the_mapping_in_the_code() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/GATEWAY.md")).unwrap();
    let start = text.find("## Errors").expect("an Errors section");
    let section = &text[start..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map(|i| i + 3)
        .unwrap_or(section.len())];
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let failure = cells[0].trim_matches('`').to_string();
        let status: u16 = cells[1]
            .parse()
            .unwrap_or_else(|_| panic!("status in {line}"));
        let retry = cells[2] == "yes";
        rows.push((failure, status, retry));
    }
    let code: Vec<(String, u16, bool)> = MAPPING
        .iter()
        .map(|r| (r.failure.to_string(), r.status, r.retry_after))
        .collect();
    assert_eq!(
        rows, code,
        "docs/GATEWAY.md's error table and edge::MAPPING differ"
    );
}

/// Runs headless Chromium on `url` and returns the DOM after the page's
/// script has run (a virtual-time budget of 3 s: several polls).
fn dump_dom(url: &str, profile: &std::path::Path) -> String {
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_a_killed_member_leave_the_status_page() {
    if !common::tool_available("chromium", "--version") {
        return;
    }
    common::watchdog_for(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        // The member to kill: a separate process serving "victim".
        let mut victim = common::proc::Reap(
            std::process::Command::new(env!("CARGO_BIN_EXE_zfabric"))
                .args([
                    "serve",
                    "--service",
                    "victim",
                    "--bind",
                    "tcp://127.0.0.1:0",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let lines = common::proc::Lines::of(victim.0.stdout.take().unwrap());
        let line = lines.find("serving", Duration::from_secs(20));
        let ep = line.rsplit(' ').next().unwrap().to_string();
        let svc = services(Arc::new(AtomicU64::new(0))).await;
        let node = Node::builder("edge")
            .config(common::fast())
            .bind("tcp://127.0.0.1:0")
            .seed(svc.endpoints()[0].to_string())
            .seed(ep)
            .start()
            .await
            .unwrap();
        let node = Arc::new(node);
        common::eventually(400, Duration::from_millis(10), || {
            let n = node.clone();
            async move { (n.members().len() == 2).then_some(()) }
        })
        .await;
        let gw = start(ROUTES, dir.path(), node.clone()).await;
        let url = format!("{}/", gw.url());
        let profile = dir.path().join("chromium");
        let u = url.clone();
        let p = profile.clone();
        let before = tokio::task::spawn_blocking(move || dump_dom(&u, &p))
            .await
            .unwrap();
        assert!(
            before.contains("<td>serve-victim</td>"),
            "the member is listed: {before}"
        );
        assert!(before.contains("<td>svc</td>"));
        assert!(before.contains("victim"), "its service is listed");
        victim.0.kill().unwrap();
        victim.0.wait().unwrap();
        // Wait (bounded) for the gateway's view to drop it, then look again.
        common::eventually(600, Duration::from_millis(10), || {
            let n = node.clone();
            async move { (n.members().len() == 1).then_some(()) }
        })
        .await;
        let after = tokio::task::spawn_blocking(move || dump_dom(&url, &profile))
            .await
            .unwrap();
        assert!(
            !after.contains("serve-victim"),
            "the killed member is gone: {after}"
        );
        assert!(after.contains("<td>svc</td>"), "the other member stays");
        gw.shutdown(Duration::from_secs(1)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_metrics_listener_serves_the_status_page_too() {
    common::watchdog(async {
        let mut serve = common::proc::Reap(
            std::process::Command::new(env!("CARGO_BIN_EXE_zfabric"))
                .args([
                    "serve",
                    "--service",
                    "echo",
                    "--bind",
                    "tcp://127.0.0.1:0",
                    "--metrics",
                    "127.0.0.1:0",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let err = common::proc::Lines::of(serve.0.stderr.take().unwrap());
        let line = err.find("metrics on http://", Duration::from_secs(20));
        let base = line
            .split("http://")
            .nth(1)
            .unwrap()
            .trim_end_matches("/metrics")
            .to_string();
        let c = reqwest::Client::new();
        let page = c.get(format!("http://{base}/")).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        assert!(page.text().await.unwrap().contains("zfabric status"));
        // The listener is up before the node: poll until it shows.
        let s: Value = common::eventually(200, Duration::from_millis(20), || {
            let rb = c.get(format!("http://{base}/status.json"));
            async move {
                let text = rb.send().await.ok()?.text().await.ok()?;
                let s: Value = serde_json::from_str(&text).ok()?;
                (!s["nodes"].as_array()?.is_empty()).then_some(s)
            }
        })
        .await;
        assert_eq!(s["role"], "node");
        assert_eq!(s["nodes"][0]["name"], "serve-echo");
        assert_eq!(s["nodes"][0]["serves"], json!(["echo"]));
        assert!(s["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "echo"));
        drop(serve);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_command_serves_its_file_and_refuses_a_bad_one() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let bin = env!("CARGO_BIN_EXE_zfabric");
        let mut serve = common::proc::Reap(
            std::process::Command::new(bin)
                .args(["serve", "--service", "echo", "--bind", "tcp://127.0.0.1:0"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let out = common::proc::Lines::of(serve.0.stdout.take().unwrap());
        let ep = out
            .find("serving", Duration::from_secs(20))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string();
        let file = dir.path().join("gw.toml");
        std::fs::write(
            &file,
            format!(
                "listen = \"127.0.0.1:0\"\n[node]\nseeds = [\"{ep}\"]\nheartbeat_ms = 50\n\
                 [[route]]\npath = \"/v1/{{service}}\"\nservice = \"{{service}}\"\nallow = [\"echo\"]\n"
            ),
        )
        .unwrap();
        let mut gw = common::proc::Reap(
            std::process::Command::new(bin)
                .arg("gateway")
                .arg("--config")
                .arg(&file)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let out = common::proc::Lines::of(gw.0.stdout.take().unwrap());
        let url = out
            .find("gateway on http://", Duration::from_secs(20))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string();
        let c = reqwest::Client::new();
        // Until the gateway's node has met the service: 404, then 200.
        let r = common::eventually(300, Duration::from_millis(20), || {
            let rb = c.post(format!("{url}/v1/echo")).body(r#"{"hello":"fabric"}"#);
            async move {
                let r = send(rb).await;
                (r.status == 200).then_some(r)
            }
        })
        .await;
        assert_eq!(r.json, json!({"hello": "fabric"}));
        drop(gw);
        // A bad file: a usage error (exit 2) naming the route.
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[route]]\npath = \"/v1/{s}\"\nservice = \"{s}\"\n").unwrap();
        let out = std::process::Command::new(bin)
            .arg("gateway")
            .arg("--config")
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("allow list"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_api_gateway_file_checks_and_starts() {
    common::watchdog(async {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("patterns/api_gateway/gateway.toml");
        let mut c = EdgeConfig::load(&path).unwrap();
        assert_eq!(c.routes.len(), 4);
        assert!(c.auth.is_some() && c.rate_limit.is_some());
        // Its key file loads; its static route answers without a token.
        c.listen = "127.0.0.1:0".into();
        c.node.seeds.clear();
        let node = Arc::new(c.node.builder().start().await.unwrap());
        let gw = HttpGateway::start(c, node).await.unwrap();
        let r = send(reqwest::Client::new().get(format!("{}/healthz", gw.url()))).await;
        assert_eq!((r.status, r.json.clone()), (200, json!({"ok": true})));
        let r = send(reqwest::Client::new().get(format!("{}/v1/profiles/1", gw.url()))).await;
        assert_eq!(r.status, 401);
        gw.shutdown(Duration::from_secs(1)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_are_checked_against_a_jwks_file() {
    if !common::tool_available("openssl", "version") {
        return;
    }
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let made = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-out", "ec.pem"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let pem = std::fs::read(dir.path().join("ec.pem")).unwrap();
        let key = EncodingKey::from_ec_pem(&pem).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("edge-2026".into());
        let set = json!({ "keys": [jwk] });
        std::fs::write(dir.path().join("keys.json"), set.to_string()).unwrap();
        let svc = services(Arc::new(AtomicU64::new(0))).await;
        let config = r#"
            listen = "127.0.0.1:0"
            [auth]
            jwks_file = "keys.json"
            [[route]]
            path = "/v1/echo"
            service = "users"
            claims = { tenant = "acme" }
        "#;
        let gw = start(config, dir.path(), gateway_node(&svc).await).await;
        let c = reqwest::Client::new();
        let sign = |kid: &str, claims: Value| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(kid.into());
            jsonwebtoken::encode(&h, &claims, &key).unwrap()
        };
        let call = |t: String| {
            c.post(format!("{}/v1/echo", gw.url()))
                .bearer_auth(t)
                .body("{}")
        };
        let ok = sign(
            "edge-2026",
            json!({"sub": "a", "exp": exp(60), "tenant": "acme"}),
        );
        assert_eq!(send(call(ok)).await.status, 200);
        let other_tenant = sign(
            "edge-2026",
            json!({"sub": "a", "exp": exp(60), "tenant": "umbrella"}),
        );
        assert_eq!(send(call(other_tenant)).await.status, 403);
        let unknown_kid = sign(
            "edge-2025",
            json!({"sub": "a", "exp": exp(60), "tenant": "acme"}),
        );
        assert_eq!(send(call(unknown_kid)).await.status, 401);
        // An HS256 token (algorithm confusion) is refused.
        assert_eq!(
            send(call(token(
                json!({"sub": "a", "exp": exp(60), "tenant": "acme"})
            )))
            .await
            .status,
            401
        );
        gw.shutdown(Duration::from_secs(1)).await;
    })
    .await
}

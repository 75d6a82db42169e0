//! The dashboard and the alert rules use only metric names the code
//! records; the rules pass their `promtool` unit tests; a real scrape of a
//! running `zfabric` passes `promtool check metrics` and its health
//! endpoints answer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn every_metric_on_the_dashboard_is_recorded_by_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dash = std::fs::read_to_string(root.join("deploy/grafana/zfabric.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dash).expect("valid JSON");
    assert!(!json["panels"].as_array().unwrap().is_empty());
    recorded_by_the_code(&dash, "the dashboard");
}

#[test]
fn every_metric_in_the_alert_rules_is_recorded_by_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/rules.yml")).unwrap();
    // Recording rules (`zfabric:…`) are not metric names.
    let rules = rules.replace("zfabric:", "recorded:");
    recorded_by_the_code(&rules, "the alert rules");
}

fn recorded_by_the_code(dash: &str, what: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    let mut names: Vec<&str> = dash
        .match_indices("zfabric_")
        .map(|(i, _)| {
            let rest = &dash[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 4, "{names:?}");
    for n in names {
        // Histograms are recorded under their base name.
        let base = n.trim_end_matches("_bucket");
        assert!(
            code.contains(&format!("\"{base}\"")),
            "{n} is in {what} but not in the code"
        );
    }
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    if !common::tool_available("promtool", "--version") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    for args in [
        &["check", "rules", "rules.yml"][..],
        &["test", "rules", "rules.test.yml"][..],
        &["check", "config", "prometheus.yml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bare HTTP/1.1 GET on loopback: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(body) } else { body.into() })
}

/// A chunked HTTP/1.1 body put back together.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn a_scrape_of_a_serving_process_describes_itself_and_passes_promtool() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args(["serve", "--bind", "tcp://127.0.0.1:0", "--service", "echo"])
        .args(["--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let child = Killed(child);
    // "metrics on http://ADDR/metrics" on stderr, then "serving … on EP".
    let mut metrics = None;
    for line in stderr.lines().take(20) {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("metrics on http://") {
            metrics = Some(rest.trim_end_matches("/metrics").to_string());
            break;
        }
    }
    let metrics = metrics.expect("the metrics address is printed");
    let mut endpoint = None;
    for line in stdout.lines().take(20) {
        let line = line.unwrap();
        if let Some(at) = line.find("tcp://") {
            endpoint = Some(line[at..].split_whitespace().next().unwrap().to_string());
            break;
        }
    }
    let endpoint = endpoint.expect("the endpoint is printed");
    let req = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args(["req", "--connect", &endpoint, "--service", "echo"])
        .args(["--data", "{\"n\":1}", "--count", "3"])
        .output()
        .unwrap();
    assert!(
        req.status.success(),
        "{}",
        String::from_utf8_lossy(&req.stderr)
    );
    assert_eq!(get(&metrics, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(&metrics, "/readyz"), (200, "ready\n".into()));
    assert_eq!(get(&metrics, "/nothing-here").0, 404);
    let (status, scrape) = get(&metrics, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "# HELP zfabric_requests_total",
        "zfabric_requests_total{node=\"serve-echo\",service=\"echo\",side=\"server\",outcome=\"ok\"} 3",
        "# TYPE zfabric_request_duration_seconds histogram",
        "zfabric_request_duration_seconds_bucket{node=\"serve-echo\",service=\"echo\",side=\"server\",le=\"0.00001\"}",
        "zfabric_messages_dropped_total{reason=\"link_down\"} 0",
        "zfabric_build_info{version=",
        "process_resident_memory_bytes",
    ] {
        assert!(
            scrape.contains(needle),
            "{needle:?} not in the scrape:\n{scrape}"
        );
    }
    drop(child);
    if !common::tool_available("promtool", "--version") {
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lines a child writes on one pipe, read on a thread of their own
/// (so that a chatty child never blocks on a full pipe).
fn lines_of(pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line (from `rx`, until `deadline`) for which `pick` gives
/// something.
fn first_line<T>(
    rx: &std::sync::mpsc::Receiver<String>,
    deadline: std::time::Instant,
    what: &str,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(t) = pick(&line) {
                    return t;
                }
            }
            Err(e) => panic!("no line with {what} before the deadline ({e})"),
        }
    }
}

/// One `zfabric node` of the test fabric: its endpoint, its metrics
/// address, and the process (killed when dropped).
struct FabricNode {
    endpoint: String,
    metrics: String,
    _child: Killed,
    // Kept so the reader threads keep draining the pipes.
    _out: std::sync::mpsc::Receiver<String>,
    _err: std::sync::mpsc::Receiver<String>,
}

fn start_node(dir: &Path, name: &str, config: &str) -> FabricNode {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args(["node", "--config"])
        .arg(&path)
        .args(["--metrics", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    let child = Killed(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // "metrics on http://ADDR/metrics" on stderr, then "node … listening on EP".
    let metrics = first_line(&err, deadline, "the metrics address", |l| {
        l.strip_prefix("metrics on http://")
            .map(|r| r.trim_end_matches("/metrics").to_string())
    });
    let endpoint = first_line(&out, deadline, "the endpoint", |l| {
        let at = l.find("listening on tcp://")?;
        Some(
            l[at + "listening on ".len()..]
                .split_whitespace()
                .next()?
                .to_string(),
        )
    });
    FabricNode {
        endpoint,
        metrics,
        _child: child,
        _out: out,
        _err: err,
    }
}

/// `s` percent-encoded for a query string.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query through Prometheus's HTTP API: the result vector.
fn query(prometheus: &str, expr: &str) -> Vec<serde_json::Value> {
    let (status, body) = get(
        prometheus,
        &format!("/api/v1/query?query={}", urlencode(expr)),
    );
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{expr}: not JSON ({e}), status {status}: {body}"));
    assert_eq!(v["status"], "success", "{expr}: {body}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// An alert condition without its threshold: `EXPR > 0.25`, `EXPR == 2`
/// become `EXPR`, which returns data whenever the fabric is measured at
/// all, healthy or not. Only a comparison with a number at the very end
/// is taken off (what every alert in rules.yml has); anything else is
/// left as it is.
fn without_threshold(expr: &str) -> String {
    let e = expr.trim();
    for op in ["==", "!=", ">=", "<=", ">", "<"] {
        if let Some((lhs, rhs)) = e.rsplit_once(op) {
            if rhs.trim().parse::<f64>().is_ok() && !lhs.trim().is_empty() {
                return lhs.trim().to_string();
            }
        }
    }
    e.to_string()
}

/// A real Prometheus (Debian's `prometheus`) scrapes three `zfabric node`
/// processes (a front service forwarding to two members of another, one
/// of them failing a share of its calls) and evaluates rules.yml; under
/// traffic from `zfabric req`, every expression on the dashboard and
/// every rule's expression returns data through `/api/v1/query`. The
/// dashboard's expressions are read from zfabric.json with the template
/// variables at their "All" value (`.*`); the rules' expressions are the
/// ones Prometheus itself loaded from rules.yml (`/api/v1/rules`, checked
/// against the rules the file declares), alert conditions with their
/// threshold taken off ([`without_threshold`]): healthy, an alert's
/// condition is rightly empty, while the measured expression under it
/// must not be. Then a member is killed: its breaker series leave the
/// front node's scrape and Prometheus's answer, while the other member's
/// stay.
#[test]
fn a_real_prometheus_gets_data_for_every_dashboard_and_rule_expression() {
    if !common::tool_available("prometheus", "--version") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let front = start_node(
        dir.path(),
        "front",
        r#"
name = "front"
bind = ["tcp://127.0.0.1:0"]
[[bulkhead]]
name = "pool"
concurrent = 4
queued = 4
[[service]]
name = "quote"
handler = "forward"
to = "pricing"
bulkhead = "pool"
dedup = true
"#,
    );
    let member = |name: &str, fail: f64| {
        start_node(
            dir.path(),
            name,
            &format!(
                "name = \"{name}\"\nbind = [\"tcp://127.0.0.1:0\"]\nseeds = [\"{}\"]\n\
                 [[service]]\nname = \"pricing\"\nhandler = \"fail\"\nfail_rate = {fail}\n",
                front.endpoint
            ),
        )
    };
    let pricing1 = member("pricing-1", 0.0);
    let pricing2 = member("pricing-2", 0.2);

    // Prometheus on a free loopback port, scraping the three every
    // second and evaluating the rules as often.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: zfabric\n    static_configs:\n      - targets: [\"{}\", \"{}\", \"{}\"]\n",
        root.join("deploy/prometheus/rules.yml").display(),
        front.metrics,
        pricing1.metrics,
        pricing2.metrics
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let mut child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    let prom_log = lines_of(child.stderr.take().unwrap());
    let _prometheus = Killed(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // `msg="Listening on" address=127.0.0.1:PORT`: the port it got.
    let prometheus = first_line(&prom_log, deadline, "Prometheus's address", |l| {
        let at = l.find("msg=\"Listening on\" address=")?;
        Some(l[at..].split_once("address=")?.1.trim().to_string())
    });

    // The expressions: the dashboard's, with its variables at "All".
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/zfabric.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<(String, String)> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap();
            let e = e
                .replace("${node}", ".*")
                .replace("$node", ".*")
                .replace("${service}", ".*")
                .replace("$service", ".*");
            assert!(!e.contains('$'), "a template variable left in {e}");
            exprs.push((format!("dashboard: {}", p["title"]), e));
        }
    }
    assert!(exprs.len() >= 15, "{exprs:?}");

    // The rules, as Prometheus loaded them from rules.yml.
    let file = std::fs::read_to_string(root.join("deploy/prometheus/rules.yml")).unwrap();
    let declared = file
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("- record:") || l.starts_with("- alert:")
        })
        .count();
    let rules = loop {
        let (_, body) = get(&prometheus, "/api/v1/rules");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let rules: Vec<serde_json::Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if rules.len() == declared {
            break rules;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus loaded {} of the {declared} rules: {body}",
            rules.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in &rules {
        let q = r["query"].as_str().unwrap();
        let e = if r["type"] == "alerting" {
            without_threshold(q)
        } else {
            q.to_string()
        };
        exprs.push((format!("rule {}", r["name"]), e));
    }
    assert!(declared >= 7);
    assert_eq!(without_threshold("a > 0.25"), "a");
    assert_eq!(without_threshold("x - y > 0"), "x - y");
    assert_eq!(without_threshold("rate(a[5m]) > b"), "rate(a[5m]) > b");

    // Traffic until every expression answers (or the deadline).
    let traffic = || {
        Command::new(env!("CARGO_BIN_EXE_zfabric"))
            .args(["req", "--connect", &front.endpoint, "--service", "quote"])
            .args(["--data", "{\"n\":1}", "--count", "40", "--timeout", "2000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut empty: Vec<&(String, String)> = exprs.iter().collect();
    while !empty.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no data before the deadline for:\n{}",
            empty
                .iter()
                .map(|(w, e)| format!("  {w}: {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        traffic();
        empty.retain(|(_, e)| query(&prometheus, e).is_empty());
    }
    // Every rule evaluated without error.
    let (_, body) = get(&prometheus, "/api/v1/rules");
    assert!(!body.contains("\"health\":\"err\""), "{body}");
    // Every target up.
    let (_, body) = get(&prometheus, "/api/v1/targets");
    assert_eq!(body.matches("\"health\":\"up\"").count(), 3, "{body}");

    // The front node keeps a breaker per member, by name.
    let breaker = |peer: &str| format!("zfabric_breaker_state{{node=\"front\", peer=\"{peer}\"}}");
    assert!(!query(&prometheus, &breaker("pricing-1")).is_empty());
    assert!(!query(&prometheus, &breaker("pricing-2")).is_empty());
    // A member killed: gone within `gone_after`, its series leave the
    // front's scrape and so Prometheus's answer (a stale series); the
    // other member's stay.
    drop(pricing2);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, scrape) = get(&front.metrics, "/metrics");
        let gone_from_scrape = !scrape.contains("peer=\"pricing-2\"");
        if gone_from_scrape && query(&prometheus, &breaker("pricing-2")).is_empty() {
            assert!(scrape.contains("peer=\"pricing-1\""), "{scrape}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed member's breaker series stayed:\n{scrape}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!query(&prometheus, &breaker("pricing-1")).is_empty());
    drop(pricing1);
    drop(front);
}

/// `zfabric run` runs several nodes in one process: each has its own
/// series under its `node` label (members seen, requests served), none
/// overwriting another's.
#[test]
fn each_node_of_a_run_has_its_own_series() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .arg("run")
        .arg(root.join("patterns/anycast.toml"))
        .args(["--duration", "30", "--json", "--metrics", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    let _child = Killed(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let metrics = first_line(&err, deadline, "the metrics address", |l| {
        l.strip_prefix("metrics on http://")
            .map(|r| r.trim_end_matches("/metrics").to_string())
    });
    let workers = ["worker-1", "worker-2", "worker-3"];
    loop {
        let (_, scrape) = get(&metrics, "/metrics");
        let each = workers.iter().all(|w| {
            // Every worker sees the two others and has served calls.
            scrape.contains(&format!(
                "zfabric_node_members{{node=\"{w}\",state=\"alive\"}} "
            )) && scrape.lines().any(|l| {
                l.starts_with(&format!(
                    "zfabric_requests_total{{node=\"{w}\",service=\"echo\",side=\"server\",outcome=\"ok\"}} "
                )) && !l.ends_with(" 0")
            })
        });
        if each {
            for w in workers {
                let seen = scrape
                    .lines()
                    .find(|l| {
                        l.starts_with(&format!(
                            "zfabric_node_members{{node=\"{w}\",state=\"alive\"}}"
                        ))
                    })
                    .unwrap();
                assert!(seen.ends_with(" 2") || seen.ends_with(" 3"), "{seen}");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every worker has its own series:\n{scrape}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The four traffic counters of one pattern and transport.
fn traffic(pattern: &str, tp: common::Tp) -> [u64; 4] {
    let transport = match tp {
        common::Tp::Inproc => "inproc",
        common::Tp::Ipc => "ipc",
        common::Tp::Tcp => "tcp",
    };
    [
        "zfabric_messages_sent_total",
        "zfabric_message_bytes_sent_total",
        "zfabric_messages_received_total",
        "zfabric_message_bytes_received_total",
    ]
    .map(|name| common::traffic(name, pattern, transport))
}

/// Asserts that `pattern` over `tp` moved by `n` messages each way and by
/// at least `bytes` each way since `before`.
fn moved(pattern: &str, tp: common::Tp, before: [u64; 4], n: u64, bytes: u64) {
    let after = traffic(pattern, tp);
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(d[0], n, "{pattern} over {tp:?}: messages sent {d:?}");
    assert_eq!(d[2], n, "{pattern} over {tp:?}: messages received {d:?}");
    assert!(d[1] >= bytes, "{pattern} over {tp:?}: bytes sent {d:?}");
    assert!(d[3] >= bytes, "{pattern} over {tp:?}: bytes received {d:?}");
    // Headers are counted too, and they are not empty.
    assert!(d[1] > bytes && d[3] > bytes, "{pattern} over {tp:?}: {d:?}");
}

/// Sending N messages of S bytes moves each pattern's message counters by
/// N and its byte counters by at least N·S, on both sides, on every
/// transport. (The only test in this binary that sends in process, so
/// the deltas are its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_bytes_are_counted_per_pattern_and_transport() {
    use bytes::Bytes;
    use zfabric::{CallFields, SocketBuilder};
    const N: u64 = 25;
    const S: usize = 1000;
    let body = Bytes::from(vec![7u8; S]);
    let limit = Duration::from_secs(10);
    // The recorder is installed by the first read, before any socket opens.
    let _ = traffic("pubsub", common::Tp::Inproc);
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        for tp in [common::Tp::Inproc, common::Tp::Ipc, common::Tp::Tcp] {
            // Publish/subscribe.
            let before = traffic("pubsub", tp);
            let publisher = SocketBuilder::new()
                .bind(common::endpoint(tp, &dir))
                .publisher::<()>()
                .await
                .unwrap();
            let at = publisher.endpoints()[0].to_string();
            let mut sub = SocketBuilder::new()
                .connect(at)
                .subscriber::<()>(&["t"])
                .await
                .unwrap();
            publisher.wait_subscribers(1).await;
            for _ in 0..N {
                publisher.publish_bytes(b"t", body.clone()).await.unwrap();
            }
            // The last publications of a burst may wait in the batcher.
            let stats = publisher.flush(limit).await;
            assert_eq!(stats.unaccounted(), 0, "{tp:?}: {stats:?}");
            for i in 0..N {
                let d = sub.recv_timeout(limit).await.unwrap_or_else(|e| {
                    panic!("{tp:?}: message {i}: {e}; {:?}", publisher.stats())
                });
                assert_eq!(d.body().len(), S);
            }
            moved("pubsub", tp, before, N, N * S as u64);

            // Push/pull.
            let before = traffic("pipeline", tp);
            let mut puller = SocketBuilder::new()
                .bind(common::endpoint(tp, &dir))
                .puller::<()>()
                .await
                .unwrap();
            let at = puller.endpoints()[0].to_string();
            let pusher = SocketBuilder::new()
                .connect(at)
                .pusher::<()>()
                .await
                .unwrap();
            pusher.wait_connected().await;
            for _ in 0..N {
                pusher.send_bytes(body.clone()).await.unwrap();
            }
            for _ in 0..N {
                let d = puller.recv_timeout(limit).await.unwrap();
                assert_eq!(d.body().len(), S);
            }
            moved("pipeline", tp, before, N, N * S as u64);

            // Request/reply: N requests and N replies each way.
            let before = traffic("reqrep", tp);
            let server = SocketBuilder::new()
                .bind(common::endpoint(tp, &dir))
                .server::<(), ()>()
                .await
                .unwrap();
            let at = server.endpoints()[0].to_string();
            let _serving = server.spawn_raw(|req| async move { Ok(req.body) });
            let client = SocketBuilder::new()
                .connect(at)
                .client::<(), ()>()
                .await
                .unwrap();
            for _ in 0..N {
                let rep = client
                    .request_raw(CallFields::default(), body.clone(), limit)
                    .await
                    .unwrap();
                assert_eq!(rep.body.len(), S);
            }
            moved("reqrep", tp, before, 2 * N, 2 * N * S as u64);
        }
    })
    .await;
}

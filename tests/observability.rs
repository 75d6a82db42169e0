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
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
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

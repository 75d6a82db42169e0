//! The status page: what the fabric looks like from this process, as
//! JSON (`/status.json`) and as one self-contained HTML page (`/`) that
//! polls it every second.
//!
//! The JSON has the members each node of the process sees and their
//! state, the services and who serves them, per service the requests,
//! errors and latency quantiles measured here, the breakers and the
//! bulkheads' saturation ([`crate::telemetry::status`] for the live
//! state). The page computes request rates from successive polls.
//!
//! Guarantees: the page loads nothing from outside (inline CSS and
//! script, no fonts, no images); it shows a member gone at the first poll
//! after the node's view drops it. Does not: keep history beyond two
//! polls, or authenticate viewers (serve it only where the fabric's
//! membership may be seen).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use crate::telemetry::StatusReport;

/// Latency bucket upper bounds, in milliseconds (the last is +Inf).
const BUCKETS_MS: [f64; 16] = [
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    10000.0,
    f64::INFINITY,
];

/// One service's line on the status page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceLine {
    /// The service.
    pub name: String,
    /// The members serving it (names), as this process's nodes see them.
    pub served_by: Vec<String>,
    /// Requests finished (since start).
    pub requests: u64,
    /// Of those, failed ones.
    pub errors: u64,
    /// Median latency in ms (bucket upper bound), if any request finished.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in ms (bucket upper bound).
    pub p99_ms: Option<f64>,
}

/// What `/status.json` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Who answers: `gateway` or `node`.
    pub role: &'static str,
    /// Milliseconds since the Unix epoch when it was made.
    pub generated_ms: u64,
    /// The live nodes and bulkheads of this process.
    #[serde(flatten)]
    pub report: StatusReport,
    /// Every service seen (served here, by a member, or called), sorted.
    pub services: Vec<ServiceLine>,
}

impl Status {
    /// The status now: the live report, with `measured` for the request
    /// figures (services without figures get zeros) and who serves each
    /// service from the report.
    pub fn now(role: &'static str, measured: Vec<ServiceLine>) -> Status {
        let report = crate::telemetry::status();
        let mut lines: BTreeMap<String, ServiceLine> =
            measured.into_iter().map(|l| (l.name.clone(), l)).collect();
        let mut servers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for n in &report.nodes {
            for s in &n.serves {
                servers.entry(s.clone()).or_default().insert(n.name.clone());
            }
            for m in &n.members {
                for s in &m.services {
                    servers.entry(s.clone()).or_default().insert(m.name.clone());
                }
            }
        }
        for (s, by) in servers {
            lines
                .entry(s.clone())
                .or_insert_with(|| ServiceLine {
                    name: s,
                    ..ServiceLine::default()
                })
                .served_by = by.into_iter().collect();
        }
        Status {
            role,
            generated_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            report,
            services: lines.into_values().collect(),
        }
    }
}

/// Request figures per service, as the edge measures its calls: a count,
/// an error count and a latency histogram each (fixed buckets, no
/// allocation per request). Bounded by the services the routes name.
#[derive(Debug, Default)]
pub struct ServiceStats {
    lines: Mutex<BTreeMap<String, Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS_MS.len()],
}

fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let b = BUCKETS_MS[i];
            return Some(if b.is_finite() { b } else { BUCKETS_MS[i - 1] });
        }
    }
    None
}

impl ServiceStats {
    /// Records one finished call of `service`.
    pub fn record(&self, service: &str, ok: bool, elapsed: std::time::Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let i = BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS_MS.len() - 1);
        let mut lines = self.lines.lock();
        let c = lines.entry(service.to_string()).or_default();
        c.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The figures so far, one line per service.
    pub fn lines(&self) -> Vec<ServiceLine> {
        self.lines
            .lock()
            .iter()
            .map(|(name, c)| {
                let b: Vec<u64> = c
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                ServiceLine {
                    name: name.clone(),
                    served_by: Vec::new(),
                    requests: c.requests.load(Ordering::Relaxed),
                    errors: c.errors.load(Ordering::Relaxed),
                    p50_ms: quantile(&b, 0.5),
                    p99_ms: quantile(&b, 0.99),
                }
            })
            .collect()
    }
}

/// Request figures per service read from a Prometheus text rendering
/// (what a node's `/metrics` serves): `zfabric_requests_total` and the
/// buckets of `zfabric_request_duration_seconds`, both sides of every
/// node in the process added up. Lines it does not know are skipped.
pub fn lines_from_prometheus(text: &str) -> Vec<ServiceLine> {
    #[derive(Default)]
    struct Acc {
        requests: f64,
        errors: f64,
        /// Cumulative bucket counts by upper bound (seconds).
        buckets: BTreeMap<u64, f64>,
    }
    fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
        let pat = format!("{key}=\"");
        let start = labels.find(&pat)? + pat.len();
        let rest = &labels[start..];
        Some(&rest[..rest.find('"')?])
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let Some(service) = label(labels, "service") else {
            continue;
        };
        match name {
            "zfabric_requests_total" => {
                let a = acc.entry(service.to_string()).or_default();
                a.requests += value;
                if label(labels, "outcome") != Some("ok") {
                    a.errors += value;
                }
            }
            "zfabric_request_duration_seconds_bucket" => {
                let Some(le) = label(labels, "le") else {
                    continue;
                };
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    match le.parse::<f64>() {
                        Ok(v) => v,
                        Err(_) => continue,
                    }
                };
                let key = if le.is_finite() {
                    (le * 1e9) as u64
                } else {
                    u64::MAX
                };
                *acc.entry(service.to_string())
                    .or_default()
                    .buckets
                    .entry(key)
                    .or_default() += value;
            }
            _ => {}
        }
    }
    acc.into_iter()
        .map(|(name, a)| {
            let total = a.buckets.get(&u64::MAX).copied().unwrap_or(0.0);
            let q = |q: f64| -> Option<f64> {
                if total <= 0.0 {
                    return None;
                }
                let rank = total * q;
                let mut last_finite = None;
                for (le, n) in &a.buckets {
                    if *le != u64::MAX {
                        last_finite = Some(*le as f64 / 1e6);
                    }
                    if *n >= rank {
                        return if *le == u64::MAX {
                            last_finite
                        } else {
                            Some(*le as f64 / 1e6)
                        };
                    }
                }
                last_finite
            };
            ServiceLine {
                served_by: Vec::new(),
                requests: a.requests as u64,
                errors: a.errors as u64,
                p50_ms: q(0.5),
                p99_ms: q(0.99),
                name,
            }
        })
        .collect()
}

/// The status page: one HTML document, inline CSS and script, that polls
/// `status.json` (relative to itself) every second.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>zfabric status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em}h2{font-size:1.05em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:40em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;font-variant-numeric:tabular-nums}
th{background:#eee}.alive,.closed{color:#176b1f}.suspect,.half_open{color:#a66b00}.open,.gone,.stale{color:#b00020}
#meta{color:#666}
</style></head>
<body>
<h1>zfabric status</h1>
<div id="meta">loading&hellip;</div>
<h2>Members</h2>
<table id="members"><thead><tr><th>seen by</th><th>member</th><th>id</th><th>state</th><th>services</th><th>endpoints</th></tr></thead><tbody></tbody></table>
<h2>Services</h2>
<table id="services"><thead><tr><th>service</th><th>served by</th><th>requests</th><th>req/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th></tr></thead><tbody></tbody></table>
<h2>Breakers</h2>
<table id="breakers"><thead><tr><th>node</th><th>service</th><th>member</th><th>state</th></tr></thead><tbody></tbody></table>
<h2>Bulkheads</h2>
<table id="bulkheads"><thead><tr><th>bulkhead</th><th>in flight</th><th>queued</th><th>saturation</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
let prev = null;
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}
function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const c of r) cell(tr, c[0], c[1]);
    body.appendChild(tr);
  }
}
function ms(v) { return v == null ? "-" : String(v); }
function render(s) {
  const members = [], breakers = [];
  for (const n of s.nodes) {
    for (const m of n.members) {
      members.push([[n.name], [m.name], [m.id], [m.state, m.state], [m.services.join(", ")], [m.endpoints.join(" ")]]);
    }
    for (const b of n.breakers) {
      breakers.push([[n.name], [b.service], [b.peer], [b.state, b.state]]);
    }
  }
  fill("members", members);
  fill("breakers", breakers);
  const dt = prev ? (s.generated_ms - prev.generated_ms) / 1000 : 0;
  const before = {};
  if (prev) for (const l of prev.services) before[l.name] = l.requests;
  fill("services", s.services.map(l => {
    const rate = dt > 0 && l.name in before ? ((l.requests - before[l.name]) / dt).toFixed(1) : "-";
    return [[l.name], [l.served_by.join(", ")], [String(l.requests)], [rate], [String(l.errors)], [ms(l.p50_ms)], [ms(l.p99_ms)]];
  }));
  fill("bulkheads", s.bulkheads.map(b => {
    const sat = b.max_concurrent > 0 ? Math.round(100 * b.in_flight / b.max_concurrent) + "%" : "-";
    return [[b.name], [b.in_flight + "/" + b.max_concurrent], [b.queued + "/" + b.max_queued], [sat]];
  }));
  const total = s.nodes.reduce((k, n) => k + n.members.length, 0);
  document.getElementById("meta").textContent =
    s.role + " · " + s.nodes.map(n => n.name).join(", ") + " · members seen: " + total +
    " · updated " + new Date(s.generated_ms).toISOString();
  document.getElementById("meta").className = "";
  prev = s;
}
async function poll() {
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    render(await r.json());
  } catch (e) {
    const m = document.getElementById("meta");
    m.textContent = "status unavailable: " + e;
    m.className = "stale";
  }
}
poll();
setInterval(poll, 1000);
</script>
</body></html>
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_edge_figures_count_errors_and_give_bucket_quantiles() {
        let s = ServiceStats::default();
        for _ in 0..98 {
            s.record("a", true, Duration::from_micros(800));
        }
        s.record("a", false, Duration::from_millis(40));
        s.record("a", false, Duration::from_secs(60));
        let l = &s.lines()[0];
        assert_eq!((l.requests, l.errors), (100, 2));
        assert_eq!(l.p50_ms, Some(1.0));
        assert_eq!(l.p99_ms, Some(50.0));
    }

    #[test]
    fn prometheus_text_gives_requests_errors_and_quantiles_per_service() {
        let text = "\
# TYPE zfabric_requests_total counter
zfabric_requests_total{node=\"a\",service=\"echo\",side=\"server\",outcome=\"ok\"} 90
zfabric_requests_total{node=\"a\",service=\"echo\",side=\"server\",outcome=\"timeout\"} 10
zfabric_request_duration_seconds_bucket{node=\"a\",service=\"echo\",side=\"server\",le=\"0.001\"} 50
zfabric_request_duration_seconds_bucket{node=\"a\",service=\"echo\",side=\"server\",le=\"0.01\"} 99
zfabric_request_duration_seconds_bucket{node=\"a\",service=\"echo\",side=\"server\",le=\"+Inf\"} 100
zfabric_messages_dropped_total{reason=\"x\"} 3
";
        let lines = lines_from_prometheus(text);
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!((l.name.as_str(), l.requests, l.errors), ("echo", 100, 10));
        assert_eq!(l.p50_ms, Some(1.0));
        assert_eq!(l.p99_ms, Some(10.0));
    }

    #[test]
    fn the_page_loads_nothing_from_outside() {
        for needle in ["http://", "https://", "<link", "src=", "@import", "url("] {
            assert!(!PAGE.contains(needle), "the page contains {needle:?}");
        }
    }
}

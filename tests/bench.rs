//! `zfabric bench --quick` runs (as CI does) and its JSON carries every
//! expected field: medians, per-round ratios with their spread, the
//! rounds in rotated order, delivered and lost for every stream side;
//! `--plot` writes an SVG. Asserts structure and behaviour, never speed.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_quick_bench_measures_every_pattern_and_transport_with_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("bench.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args(["bench", "--quick", "--json", "--plot"])
        .arg(&svg)
        .output()
        .expect("zfabric runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert!(r["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(r["quick"], true);
    assert_eq!(r["rounds"], 2, "--quick runs two rounds per cell");
    assert!(r["unstable_spread"].as_f64().unwrap() > 0.0);
    let cells = r["cells"].as_array().unwrap();
    for pattern in ["pubsub", "pushpull", "reqrep", "anycast", "aggregator"] {
        for tp in ["inproc", "ipc", "tcp"] {
            let c = cells
                .iter()
                .find(|c| c["pattern"] == pattern && c["transport"] == tp)
                .unwrap_or_else(|| panic!("no {pattern} {tp} cell in {stdout}"));
            assert_eq!(c["size"], 64);
            let z = &c["zfabric"];
            assert_eq!(z["name"], "zfabric");
            let baselines = c["baselines"].as_array().unwrap();
            assert!(!baselines.is_empty(), "{pattern} {tp}: no baseline");
            let expected = if tp == "inproc" { "tokio" } else { "zeromq" };
            assert_eq!(baselines[0]["name"], expected);
            assert_eq!(c["ratios"].as_array().unwrap().len(), baselines.len());
            assert_rounds(c, 2);
            let stream = pattern == "pubsub" || pattern == "pushpull";
            for side in std::iter::once(z).chain(baselines) {
                if stream {
                    assert_delivered_and_lost(side, c);
                } else {
                    assert!(side["sent"].is_null() && side["lost"].is_null(), "{c}");
                }
            }
            #[cfg(feature = "libzmq")]
            if pattern == "pubsub" {
                if let Some(lz) = baselines.iter().find(|b| b["name"] == "libzmq") {
                    assert_eq!(lz["lost"], 0, "libzmq pub/sub is configured lossless: {c}");
                }
            }
            match pattern {
                "pubsub" | "pushpull" => {
                    assert!(z["msgs_per_s"].as_f64().unwrap() > 0.0);
                    assert!(z["mb_per_s"].as_f64().unwrap() > 0.0);
                    assert!(c["ratios"][0]["throughput"].as_f64().unwrap() > 0.0);
                    if pattern == "pushpull" {
                        assert_eq!(z["lost"], 0, "push/pull never loses: {c}");
                    }
                }
                _ => {
                    let l = &z["latency"];
                    for k in ["samples", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
                        assert!(l[k].as_f64().unwrap() > 0.0, "{pattern} {tp} {k}: {l}");
                    }
                    assert!(l["p50_us"].as_f64() <= l["p99_us"].as_f64());
                    assert!(c["ratios"][0]["p50_latency"].as_f64().unwrap() > 0.0);
                }
            }
        }
    }
    let svg = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(
        svg.contains("<svg") && svg.contains("latency"),
        "not an SVG plot"
    );
}

/// Every round ran every side once, the order rotated by one from round
/// to round, and each ratio is the median of per-round ratios with its
/// spread and stability.
#[test]
fn bench_curve_puts_curve_and_null_zfabric_in_the_same_rounds() {
    let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args(["bench", "--curve", "--quick", "--json", "--sizes", "1024"])
        .args(["--messages", "2000", "--seconds", "0.1"])
        .output()
        .expect("zfabric runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(r["curve"], true);
    let cells = r["cells"].as_array().unwrap();
    // Request/reply and push/pull on ipc and tcp; never inproc.
    let mut seen: Vec<(String, String)> = cells
        .iter()
        .map(|c| {
            (
                c["pattern"].as_str().unwrap().to_owned(),
                c["transport"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = [
        ("pushpull", "ipc"),
        ("pushpull", "tcp"),
        ("reqrep", "ipc"),
        ("reqrep", "tcp"),
    ]
    .iter()
    .map(|(p, t)| (p.to_string(), t.to_string()))
    .collect();
    assert_eq!(seen, want);
    for c in cells {
        assert_eq!(c["zfabric"]["name"], "zfabric+curve");
        let b = c["baselines"].as_array().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0]["name"], "zfabric");
        assert!(c["ratios"][0]["throughput"].as_f64().unwrap() > 0.0, "{c}");
        // Interleaved: each round runs both, in rotated order.
        let runs = c["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{c}");
        assert_eq!(
            runs[0]["order"],
            serde_json::json!(["zfabric+curve", "zfabric"])
        );
        assert_eq!(
            runs[1]["order"],
            serde_json::json!(["zfabric", "zfabric+curve"])
        );
    }
}

fn assert_rounds(c: &Value, rounds: usize) {
    assert_eq!(c["rounds"], rounds as u64, "{c}");
    let runs = c["runs"].as_array().unwrap();
    assert_eq!(runs.len(), rounds, "{c}");
    let names: Vec<&Value> = std::iter::once(&c["zfabric"]["name"])
        .chain(
            c["baselines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| &b["name"]),
        )
        .collect();
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["round"], i as u64 + 1);
        let order: Vec<&Value> = run["order"].as_array().unwrap().iter().collect();
        let mut expected = names.clone();
        expected.rotate_left(i % names.len());
        assert_eq!(order, expected, "round {} order: {c}", i + 1);
        assert_eq!(run["zfabric"]["name"], "zfabric");
        assert_eq!(
            run["baselines"].as_array().unwrap().len(),
            names.len() - 1,
            "{c}"
        );
    }
    let mut any_unstable = false;
    for ratio in c["ratios"].as_array().unwrap() {
        let mut headline_unstable = false;
        for metric in ["throughput", "p50_latency", "p99_latency"] {
            let s = &ratio["spread"][metric];
            if ratio[metric].is_null() {
                assert!(s.is_null(), "{metric}: {c}");
                continue;
            }
            let (median, min, max) = (
                s["median"].as_f64().unwrap(),
                s["min"].as_f64().unwrap(),
                s["max"].as_f64().unwrap(),
            );
            assert_eq!(ratio[metric].as_f64().unwrap(), median);
            assert!(min <= median && median <= max, "{metric}: {c}");
            let relative = s["relative"].as_f64().unwrap();
            assert!((relative - (max - min) / median).abs() < 1e-9, "{c}");
            let unstable = s["unstable"].as_bool().unwrap();
            assert_eq!(unstable, relative > 0.25, "{metric}: {c}");
            if metric != "p99_latency" {
                headline_unstable |= unstable;
            }
        }
        // A row is unstable by its headline ratios, throughput and p50.
        assert_eq!(ratio["unstable"], headline_unstable, "{c}");
        any_unstable |= headline_unstable;
    }
    assert_eq!(c["unstable"].as_bool().unwrap(), any_unstable, "{c}");
}

/// A stream side says how many it sent, delivered and lost, and its rate
/// counts the delivered ones.
fn assert_delivered_and_lost(side: &Value, c: &Value) {
    let (sent, delivered, lost) = (
        side["sent"].as_u64().unwrap(),
        side["delivered"].as_u64().unwrap(),
        side["lost"].as_u64().unwrap(),
    );
    assert!(sent > 0, "{c}");
    assert_eq!(delivered + lost, sent, "{c}");
    assert!(side["msgs_per_s"].as_f64().unwrap() > 0.0, "{c}");
}

#[test]
fn bad_bench_options_exit_2() {
    for args in [
        &["bench", "--patterns", "smoke-signals"][..],
        &["bench", "--sizes", "0"],
        &["bench", "--transports", "udp"],
        &["bench", "--rounds", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

//! `zfabric bench --quick` runs (as CI does) and its JSON carries every
//! expected field; `--plot` writes an SVG.

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

#[test]
fn bad_bench_options_exit_2() {
    for args in [
        &["bench", "--patterns", "smoke-signals"][..],
        &["bench", "--sizes", "0"],
        &["bench", "--transports", "udp"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

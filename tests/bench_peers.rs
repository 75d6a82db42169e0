//! `zfabric bench` built with the `peers` feature puts NATS core and
//! Zenoh in the same rounds as zfabric on tcp cells: NATS for
//! request/reply, anycast (a queue group) and pub/sub, Zenoh for
//! request/reply (get/queryable) and pub/sub in both congestion-control
//! modes, every stream side with sent, delivered and lost. The NATS sides
//! need `nats-server` on PATH: where it is missing the test checks the
//! visible skip instead (and fails under `ZFABRIC_REQUIRE_ALL`). Asserts
//! structure, never speed. Run with
//! `cargo test --release --features peers --test bench_peers`.

mod common;

use std::process::Command;

use serde_json::Value;

#[test]
fn the_peer_baselines_run_in_the_same_rounds_on_tcp() {
    let nats = common::tool_available("nats-server", "--version");
    let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args([
            "bench",
            "--quick",
            "--json",
            "--patterns",
            "reqrep,anycast,pubsub",
            "--transports",
            "ipc,tcp",
        ])
        .output()
        .expect("zfabric runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let skipped = r["skipped"].as_array().expect("a skipped list");
    if nats {
        assert!(skipped.is_empty(), "{skipped:?}");
    } else {
        assert!(stderr.contains("NATS baselines skipped"), "{stderr}");
        assert!(skipped
            .iter()
            .any(|s| s.as_str().unwrap().contains("nats-server")));
    }
    for c in r["cells"].as_array().unwrap() {
        let names: Vec<&str> = c["baselines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap())
            .collect();
        let pattern = c["pattern"].as_str().unwrap();
        if c["transport"] != "tcp" {
            assert!(
                !names
                    .iter()
                    .any(|n| n.starts_with("nats") || n.starts_with("zenoh")),
                "peers only on tcp: {c}"
            );
            continue;
        }
        let mut want = vec![];
        if nats {
            want.push("nats");
        }
        match pattern {
            "reqrep" => want.push("zenoh"),
            "pubsub" => want.extend(["zenoh", "zenoh-drop"]),
            _ => {}
        }
        for w in want {
            assert!(names.contains(&w), "{pattern}: no {w} side in {names:?}");
        }
        assert_eq!(c["ratios"].as_array().unwrap().len(), names.len());
        for run in c["runs"].as_array().unwrap() {
            assert_eq!(run["baselines"].as_array().unwrap().len(), names.len());
        }
        for b in c["baselines"].as_array().unwrap() {
            if pattern == "pubsub" {
                let (sent, delivered, lost) = (
                    b["sent"].as_u64().unwrap(),
                    b["delivered"].as_u64().unwrap(),
                    b["lost"].as_u64().unwrap(),
                );
                assert_eq!(sent, delivered + lost, "{b}");
                if b["name"] == "zenoh" {
                    assert_eq!(lost, 0, "zenoh with Block is lossless: {b}");
                }
            } else {
                let l = &b["latency"];
                assert!(l["p50_us"].as_f64().unwrap() > 0.0, "{b}");
                assert!(l["p50_us"].as_f64() <= l["p99_us"].as_f64(), "{b}");
                assert!(b["msgs_per_s"].as_f64().unwrap() > 0.0, "{b}");
            }
        }
    }
    // The bench stops the nats-server it started.
    let left = Command::new("pgrep")
        .args(["-f", "nats-server -a 127.0.0.1 -p -1"])
        .output();
    if let Ok(left) = left {
        let pids = String::from_utf8_lossy(&left.stdout);
        assert!(pids.trim().is_empty(), "nats-server left running: {pids}");
    }
}

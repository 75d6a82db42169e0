//! Every topology file in `patterns/` is run (`zfabric run --json`, short
//! duration) and its outcome checked against what the pattern promises.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn run(file: &str, extra: &[&str]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("patterns")
        .join(file);
    let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .arg("run")
        .arg(&path)
        .arg("--json")
        .args(extra)
        .output()
        .expect("zfabric runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{file} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{file}: bad JSON ({e}):\n{stdout}"))
}

fn load(r: &Value, i: usize) -> &Value {
    &r["loads"][i]
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn every_pattern_file_is_tested_here() {
    let tested = [
        "aggregator",
        "anycast",
        "async_messaging",
        "branch",
        "bulkhead",
        "chain",
        "circuit_breaker",
        "config_service",
        "event_stream",
        "multicast",
        "pipeline",
        "proxy",
        "pubsub",
        "router_dealer",
        "shared_data",
        "unicast",
    ];
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("patterns"))
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".toml").map(str::to_owned)
            })
            .collect();
    files.sort();
    assert_eq!(
        files, tested,
        "a pattern file without a test (or a test without its file)"
    );
}

#[test]
fn anycast_spreads_the_load_and_loses_nothing_when_a_member_is_killed() {
    let r = run("anycast.toml", &["--duration", "2"]);
    let l = load(&r, 0);
    assert_eq!(
        n(&l["failed"]) + n(&l["timed_out"]) + n(&l["lost"]),
        0,
        "{l}"
    );
    assert_eq!(
        l["outcome"]["served_by"].as_object().unwrap().len(),
        3,
        "{l}"
    );
    assert_eq!(r["faults"][0]["kind"], "kill");
    assert!(r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["killed"] == true));
}

#[test]
fn unicast_reaches_only_the_named_node() {
    let r = run("unicast.toml", &["--duration", "1"]);
    let l = load(&r, 0);
    let served = l["outcome"]["served_by"].as_object().unwrap();
    assert_eq!(served.keys().collect::<Vec<_>>(), ["store-2"]);
    assert_eq!(n(&l["delivered"]), n(&l["sent"]));
}

#[test]
fn config_service_serves_each_environment_its_highest_version_and_nothing_else() {
    let r = run("config_service.toml", &["--duration", "1"]);
    let (prod, staging, dev) = (load(&r, 0), load(&r, 1), load(&r, 2));
    for (l, version) in [(prod, "2"), (staging, "1")] {
        let versions = l["outcome"]["versions"].as_object().unwrap();
        assert_eq!(versions.keys().collect::<Vec<_>>(), [version], "{l}");
        assert_eq!(l["outcome"]["highest_on_disk"].to_string(), version, "{l}");
        assert_eq!(n(&l["delivered"]), n(&l["sent"]), "{l}");
        assert!(n(&l["sent"]) > 0, "{l}");
    }
    // No document for dev: every fetch is `not_found`, and those answers
    // are a healthy member's (no circuit opened).
    assert_eq!(n(&dev["delivered"]), 0, "{dev}");
    assert_eq!(
        n(&dev["outcome"]["errors"]["not_found"]),
        n(&dev["sent"]),
        "{dev}"
    );
    assert!(dev["outcome"]["highest_on_disk"].is_null(), "{dev}");
    assert_eq!(
        r["breaker"].as_array().unwrap().len(),
        0,
        "{}",
        r["breaker"]
    );
}

#[test]
fn multicast_reaches_every_member_and_names_the_killed_one() {
    let r = run("multicast.toml", &["--duration", "2"]);
    let l = load(&r, 0);
    let missed = l["outcome"]["missed_by_member"].as_object().unwrap();
    assert!(missed.keys().all(|k| k == "cache-3"), "{l}");
    assert!(n(&missed["cache-3"]) > 0, "the killed member is named: {l}");
    // Before the kill every message reached all three.
    assert!(n(&l["delivered"]) >= 2 * n(&l["sent"]), "{l}");
}

#[test]
fn pubsub_delivers_by_prefix_without_loss() {
    let r = run("pubsub.toml", &["--duration", "1"]);
    let l = load(&r, 0);
    assert_eq!(n(&l["lost"]), 0, "{l}");
    assert_eq!(n(&l["outcome"]["gaps_reported"]), 0, "{l}");
    assert_eq!(
        l["outcome"]["delivered_per_subscriber"],
        l["outcome"]["expected_per_subscriber"]
    );
    let sports = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "sub-sports")
        .unwrap();
    assert!(sports["received"]
        .as_object()
        .unwrap()
        .keys()
        .all(|t| t.starts_with("sports.")));
}

#[test]
fn the_pipeline_deals_tasks_evenly_and_loses_none() {
    let r = run("pipeline.toml", &["--duration", "1"]);
    let l = load(&r, 0);
    assert_eq!(n(&l["lost"]), 0, "{l}");
    let per: Vec<u64> = l["outcome"]["per_worker"]
        .as_object()
        .unwrap()
        .values()
        .map(n)
        .collect();
    assert_eq!(per.len(), 3);
    let (min, max) = (per.iter().min().unwrap(), per.iter().max().unwrap());
    assert!(max - min <= 1, "round-robin: {per:?}");
}

#[test]
fn router_dealer_spreads_requests_and_answers_all() {
    let r = run("router_dealer.toml", &["--duration", "1"]);
    let l = load(&r, 0);
    assert_eq!(n(&l["delivered"]), n(&l["sent"]), "{l}");
    assert_eq!(l["outcome"]["served_by"].as_object().unwrap().len(), 3);
}

#[test]
fn the_aggregator_returns_partial_results_naming_the_missing_members() {
    let r = run("aggregator.toml", &["--duration", "2"]);
    let l = load(&r, 0);
    let o = &l["outcome"];
    assert!(o["completeness"].as_f64().unwrap() < 1.0, "{o}");
    assert!(o["avg_replies"].as_f64().unwrap() >= 1.0, "{o}");
    let missing = |k: &str| {
        o[k].as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let named: Vec<String> = [missing("timed_out_members"), missing("failed_members")].concat();
    assert!(named.iter().any(|m| m == "quotes-slow"), "{o}");
    assert!(named.iter().any(|m| m == "quotes-doomed"), "{o}");
    assert!(
        !named.iter().any(|m| m == "quotes-a" || m == "quotes-b"),
        "{o}"
    );
}

#[test]
fn a_chain_answers_from_its_end_at_hop_three() {
    let r = run("chain.toml", &["--duration", "1"]);
    let l = load(&r, 0);
    assert_eq!(n(&l["outcome"]["max_hops"]), 3);
    assert_eq!(
        l["outcome"]["served_by"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["inventory"]
    );
    assert_eq!(n(&l["delivered"]), n(&l["sent"]));
}

#[test]
fn branches_run_side_by_side_and_routes_follow_the_tier() {
    let r = run("branch.toml", &["--duration", "1"]);
    let b = load(&r, 0);
    let per = &b["outcome"]["ok_per_branch"];
    assert_eq!(n(&per["price"]), n(&b["sent"]));
    assert_eq!(n(&per["stock"]), n(&b["sent"]));
    let routed = load(&r, 1)["outcome"]["routed"]
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(
        routed.keys().collect::<Vec<_>>(),
        ["basic -> standard-chain", "vip -> premium-chain"]
    );
}

#[test]
fn the_gateway_refuses_every_forged_token_before_the_service() {
    let r = run("proxy.toml", &["--duration", "1"]);
    let o = &load(&r, 0)["outcome"];
    assert_eq!(n(&o["forged_accepted"]), 0, "{o}");
    assert!(n(&o["forged_refused"]) > 0, "{o}");
    assert_eq!(n(&o["service_handled"]), n(&o["authorized_ok"]), "{o}");
}

#[test]
fn every_consumer_group_handles_every_event_once() {
    let r = run("async_messaging.toml", &["--duration", "1"]);
    let l = load(&r, 0);
    assert_eq!(n(&l["lost"]), 0, "{l}");
    let sent = n(&l["sent"]);
    let handled = &l["outcome"]["handled_by_group"];
    for g in ["billing", "payments", "shipping"] {
        assert_eq!(n(&handled[g]), sent, "group {g}: {l}");
    }
    assert!(
        n(&l["outcome"]["redeliveries"]) > 0,
        "failures were redelivered: {l}"
    );
}

#[test]
fn the_bulkhead_sheds_the_hung_service_and_its_neighbour_is_unaffected() {
    let r = run("bulkhead.toml", &["--duration", "2"]);
    let (hung, healthy) = (load(&r, 0), load(&r, 1));
    assert!(n(&hung["rejected"]) > 0, "{hung}");
    assert_eq!(n(&healthy["delivered"]), n(&healthy["sent"]), "{healthy}");
    assert_eq!(
        n(&healthy["rejected"]) + n(&healthy["timed_out"]) + n(&healthy["failed"]),
        0
    );
    // The healthy service's slowest request beat the hung one's fastest.
    assert!(
        n(&healthy["latency"]["max_us"]) < n(&hung["latency"]["p50_us"]),
        "{r}"
    );
}

#[test]
fn the_breaker_opens_half_opens_and_closes() {
    let r = run("circuit_breaker.toml", &["--duration", "2.5"]);
    let l = load(&r, 0);
    assert!(n(&l["circuit_open"]) > 0, "calls failed fast: {l}");
    let moves: Vec<String> = r["breaker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{}>{}",
                b["from"].as_str().unwrap(),
                b["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        moves.first().map(String::as_str),
        Some("closed>open"),
        "{moves:?}"
    );
    assert!(moves.iter().any(|m| m == "open>half_open"), "{moves:?}");
    assert_eq!(
        moves.last().map(String::as_str),
        Some("half_open>closed"),
        "{moves:?}"
    );
}

/// What `shared_data.toml` promises, checked on one run's report.
fn check_shared_data(r: &Value) {
    let l = load(r, 0);
    let o = &l["outcome"];
    assert_eq!(n(&l["failed"]) + n(&l["timed_out"]), 0, "{l}");
    let rounds = n(&o["rounds"]);
    assert!(rounds >= 10, "{o}");
    // Business idempotency: concurrent and retried creates of one email
    // make one customer, and the file holds exactly one row per email.
    assert_eq!(n(&o["create_calls"]), 4 * rounds, "{o}");
    assert_eq!(n(&o["distinct_emails"]), rounds, "{o}");
    // One answer per email says it made the customer, unless the data
    // service died between its commit and that answer.
    assert_eq!(
        n(&o["customers_made"]) + n(&o["made_but_answer_lost"]),
        rounds,
        "{o}"
    );
    assert_eq!(n(&o["emails_with_two_ids"]), 0, "{o}");
    assert_eq!(
        n(&o["rows_in_db"]),
        rounds,
        "rows counted in the redb file: {o}"
    );
    assert_eq!(n(&o["email_index_rows"]), rounds, "{o}");
    // Optimistic concurrency: every stale update refused.
    assert_eq!(n(&o["conflicts_refused"]), rounds, "{o}");
    // The data survived the restart: the file it opened again held every
    // customer made before.
    assert_eq!(n(&o["boots_seen"]), 2, "the data service restarted: {o}");
    let before = n(&o["customers_before_restart"]);
    assert!(before > 0 && before < rounds, "{o}");
    assert_eq!(n(&o["rows_at_last_open"]), before, "{o}");
    // Caches: hits and misses counted; the cache that dropped its
    // invalidations served stale values, never one as old as its TTL.
    for svc in ["orders.customer", "billing.customer"] {
        let c = &o["caches"][svc];
        assert!(n(&c["cache_hits"]) >= rounds, "{svc}: {c}");
        assert!(n(&c["cache_misses"]) >= rounds, "{svc}: {c}");
        assert_eq!(n(&c["hits_seen_by_rounds"]), rounds, "{svc}: {c}");
        let ttl = n(&c["ttl_ms"]) as f64;
        assert!(c["max_stale_age_ms"].as_f64().unwrap() < ttl, "{svc}: {c}");
    }
    let orders = &o["caches"]["orders.customer"];
    assert!(n(&orders["invalidations_dropped"]) > 0, "{orders}");
    assert!(n(&orders["stale_reads"]) > 0, "{orders}");
    assert!(n(&orders["evicted"]["expired"]) > 0, "{orders}");
    // Measured at the caller, so with room for scheduling: stale for
    // about a TTL after the update, then fresh.
    let stale_for = orders["max_stale_for_ms"].as_f64().unwrap();
    let ttl = n(&orders["ttl_ms"]) as f64;
    assert!(stale_for > 0.0 && stale_for < ttl + 1000.0, "{orders}");
    let billing = &o["caches"]["billing.customer"];
    assert_eq!(n(&billing["invalidations_dropped"]), 0, "{billing}");
    // Every round's first version left billing's cache: invalidated by
    // its change event, or expired when that event was never published
    // (the data service killed between commit and publish).
    let ev = &billing["evicted"];
    assert!(
        n(&ev["invalidated"]) + n(&ev["expired"]) >= rounds,
        "{billing}"
    );
    assert!(n(&ev["invalidated"]) * 2 >= rounds, "{billing}");
}

#[test]
fn shared_data_makes_one_customer_per_email_bounds_staleness_by_the_ttl_and_survives_a_restart() {
    check_shared_data(&run("shared_data.toml", &[]));
}

#[test]
fn shared_data_keeps_its_promises_across_processes_when_the_data_service_is_sigkilled() {
    let r = run("shared_data.toml", &["--transport", "ipc", "--split"]);
    assert_eq!(r["split"], true);
    check_shared_data(&r);
}

/// What `event_stream.toml` promises, checked on one run's report.
fn check_event_stream(r: &Value) {
    let l = load(r, 0);
    let o = &l["outcome"];
    let appended = n(&o["appended"]);
    // 40 a second for 4 s; a few fail while the producer restarts.
    assert!(appended >= 100, "{o}");
    assert_eq!(appended + n(&o["append_failed"]), n(&l["sent"]), "{l}");
    // Every acknowledged record was processed, none had its effect twice.
    assert_eq!(n(&o["lost"]), 0, "{o}");
    assert_eq!(n(&l["lost"]), 0, "{l}");
    assert_eq!(n(&o["processed_twice"]), 0, "{o}");
    // What the store holds: every acknowledged record, and at most the
    // unacknowledged appends beside them (written, answer lost).
    let processed = n(&o["processed"]);
    assert!(processed >= appended, "{o}");
    assert!(processed <= appended + n(&o["append_failed"]), "{o}");
    // The log reopened after the restart holds all of them.
    assert!(n(&o["records_in_log"]) >= processed, "{o}");
    // The members left at the end took over the leaver's partitions
    // (which member gets which is rendezvous hashing over random ids),
    // and positions were committed.
    let by = &o["processed_by"];
    assert!(n(&by["c1"]) + n(&by["c2"]) > 0, "{o}");
    assert!(n(&o["commits"]) > 0, "{o}");
    let faults = r["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 3, "{faults:?}");
}

#[test]
fn event_stream_loses_nothing_and_applies_no_effect_twice_across_restarts_and_a_rebalance() {
    check_event_stream(&run("event_stream.toml", &[]));
}

#[test]
fn event_stream_keeps_its_promises_when_the_producer_and_a_member_are_sigkilled() {
    let r = run("event_stream.toml", &["--transport", "ipc", "--split"]);
    assert_eq!(r["split"], true);
    check_event_stream(&r);
}

#[test]
fn the_same_topology_runs_over_tcp_and_as_separate_processes() {
    let r = run("anycast.toml", &["--duration", "1.5", "--transport", "tcp"]);
    assert_eq!(r["transport"], "tcp");
    assert!(n(&load(&r, 0)["delivered"]) > 0);
    let r = run(
        "chain.toml",
        &["--duration", "1", "--transport", "ipc", "--split"],
    );
    assert_eq!(r["split"], true);
    let l = load(&r, 0);
    assert_eq!(n(&l["outcome"]["max_hops"]), 3, "{l}");
    assert_eq!(n(&l["delivered"]), n(&l["sent"]), "{l}");
    // Counts come back from the child processes.
    let orders = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "orders")
        .unwrap();
    assert!(n(&orders["handled"]["orders"]) > 0, "{orders}");
    let r = run(
        "pubsub.toml",
        &["--duration", "1", "--transport", "tcp", "--split"],
    );
    let l = load(&r, 0);
    assert_eq!(n(&l["lost"]), 0, "{l}");
}

#[test]
fn a_malformed_topology_file_is_refused_with_its_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\nsummary = \"y\"\n[[node]]\nname = \"a\"\nservcie = 3\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .arg("run")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:1") && err.contains("servcie"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args(["run", "patterns/anycast.toml", "--split"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--split needs ipc or tcp");
}

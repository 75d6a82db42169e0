//! Runs the multi-process fabric demo (examples/fabric_demo.rs) in its
//! single-command form: three service nodes and a client, each its own
//! process, over tcp and over ipc; the weather feed, the task farm and the
//! multicast group as separate processes; and the bulkhead example.

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples next to the test binaries.
fn demo_binary() -> PathBuf {
    example_binary("fabric_demo")
}

fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run plain `cargo test` (it builds the examples) or `cargo build --example {name}` first",
        bin.display()
    );
    bin
}

fn run(transport: &str) {
    let out = Command::new(demo_binary())
        .args(["all", transport])
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo over {transport} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = stdout
        .lines()
        .find(|l| l.starts_with("served:"))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    for name in ["alpha", "beta", "gamma"] {
        assert!(served.contains(name), "{name} served nothing: {served}");
    }
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" priced by ")).count(),
        12
    );
}

#[test]
fn three_service_processes_and_a_client_find_each_other_over_tcp() {
    run("tcp");
}

#[test]
fn three_service_processes_and_a_client_find_each_other_over_ipc() {
    run("ipc");
}

/// The example exits non-zero unless every request to the healthy route
/// was served in the isolated run; the shared run must show the damage.
#[test]
fn the_bulkhead_example_sheds_the_failing_route_and_serves_the_healthy_one() {
    let out = Command::new(example_binary("bulkhead"))
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |run: &str, route: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.split_whitespace().take(2).eq([run, route]))
            .unwrap_or_else(|| panic!("no {run} {route} row in:\n{stdout}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // Columns: run route sent ok rejected circuit ...
    // Sharing the bulkhead hurts the healthy route: requests refused, or
    // queued behind the hung dependency (p50 of hundreds of ms).
    let shared = row("shared", "stock");
    assert!(
        shared[2] != shared[3] || millis(&shared[8]) >= 100.0,
        "the shared run shows no damage:\n{stdout}"
    );
    let isolated = row("isolated", "stock");
    assert_eq!(isolated[2], isolated[3], "{stdout}");
    let pay = row("isolated", "pay");
    assert_ne!(pay[5], "0", "the breaker never opened:\n{stdout}");
}

/// Milliseconds in a `Duration` debug string ("488.50ms", "2.1µs", "1.2s").
fn millis(s: &str) -> f64 {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let v: f64 = s[..split].parse().unwrap_or(0.0);
    match &s[split..] {
        "s" => v * 1000.0,
        "ms" => v,
        "µs" => v / 1000.0,
        _ => v / 1e6,
    }
}

/// Runs an example's single-command form and returns its stdout.
fn run_example(name: &str, args: &[&str]) -> String {
    let out = Command::new(example_binary(name))
        .args(args)
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn weather(transport: &str) {
    let out = run_example("weather", &["all", transport]);
    for prefix in ["weather.paris", "weather."] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("summary {prefix}:")))
            .unwrap_or_else(|| panic!("no summary for {prefix}:\n{out}"));
        assert!(line.contains("received 20"), "{line}");
    }
}

#[test]
fn the_weather_feed_reaches_two_subscriber_processes_over_tcp() {
    weather("tcp");
}

#[test]
fn the_weather_feed_reaches_two_subscriber_processes_over_ipc() {
    weather("ipc");
}

fn taskfarm(transport: &str) {
    let out = run_example("taskfarm", &["all", transport]);
    let line = out
        .lines()
        .find(|l| l.starts_with("sink: 60 results"))
        .unwrap_or_else(|| panic!("no sink report:\n{out}"));
    assert!(
        line.contains("from 3 workers"),
        "every worker got tasks: {line}"
    );
}

#[test]
fn the_task_farm_spreads_tasks_over_worker_processes_over_tcp() {
    taskfarm("tcp");
}

#[test]
fn the_task_farm_spreads_tasks_over_worker_processes_over_ipc() {
    taskfarm("ipc");
}

fn multicast(transport: &str) {
    let out = run_example("multicast_group", &["all", transport]);
    let updates: Vec<&str> = out.lines().filter(|l| l.starts_with("update v")).collect();
    assert_eq!(updates.len(), 3, "{out}");
    assert!(
        updates
            .iter()
            .all(|l| l.ends_with("delivered to 3 members, failed 0")),
        "{out}"
    );
}

#[test]
fn a_multicast_reaches_every_member_process_over_tcp() {
    multicast("tcp");
}

#[test]
fn a_multicast_reaches_every_member_process_over_ipc() {
    multicast("ipc");
}

//! Runs the multi-process fabric demo (examples/fabric_demo.rs) in its
//! single-command form: three service nodes and a client, each its own
//! process, over tcp and over ipc.

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples next to the test binaries.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("examples").join("fabric_demo");
    assert!(
        bin.exists(),
        "{} is missing: run plain `cargo test` (it builds the examples) or `cargo build --example fabric_demo` first",
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

//! The README's main command, run as a real process.

use std::process::Command;

#[test]
fn the_tour_runs_every_pattern_on_every_transport() {
    let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args(["tour", "--round-trips", "50", "--messages", "2000"])
        .output()
        .expect("zfabric runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tour failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for tp in ["inproc", "ipc", "tcp"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(tp))
            .unwrap_or_else(|| panic!("no {tp} row in:\n{stdout}"));
        assert!(line.contains("us") && line.contains("k/s"), "{line}");
    }
}

#[test]
fn bad_usage_exits_with_code_2_and_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args(["tour", "--no-such-flag"])
        .output()
        .expect("zfabric runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));

    let out = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args([
            "tour",
            "--transports",
            "carrier-pigeon",
            "--round-trips",
            "1",
            "--messages",
            "1",
        ])
        .output()
        .expect("zfabric runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown transport is bad usage"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("carrier-pigeon"));
}

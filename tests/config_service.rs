//! The configuration service across processes: a node serves documents
//! from a directory (`config_dir`); another node starts from one of them
//! (`--config-from-fabric SERVICE/ENV`), serves what it says, hears of a
//! new version over fabric pub/sub and, with
//! `--restart-on-config-update`, stops gracefully to apply it; a key with
//! no document is a clear error. Every child is killed when the test
//! ends, every wait is bounded.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::proc::{Lines, Reap};

const WATCHDOG: Duration = Duration::from_secs(60);

/// `zfabric node` with none of the test environment's zfabric variables.
fn node(vars: &[(&str, &str)], args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zfabric"));
    c.arg("node").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("ZFABRIC_") && k != "ZFABRIC_REQUIRE_ALL" {
            c.env_remove(k);
        }
    }
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

fn spawn(mut c: Command) -> (Reap, Lines, Lines) {
    let mut child = Reap(
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = Lines::of(child.0.stdout.take().unwrap());
    let err = Lines::of(child.0.stderr.take().unwrap());
    (child, out, err)
}

#[test]
fn a_node_starts_from_the_fabric_config_and_restarts_on_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("configs");
    let prod = docs.join("pricing").join("prod");
    std::fs::create_dir_all(&prod).unwrap();
    std::fs::write(
        prod.join("1.toml"),
        "bind = [\"tcp://127.0.0.1:0\"]\n[[service]]\nname = \"price\"\nhandler = \"echo\"\n",
    )
    .unwrap();

    let (_server, server_out, _e) = spawn(node(
        &[
            ("ZFABRIC_NAME", "config-server"),
            ("ZFABRIC_BIND", "tcp://127.0.0.1:0"),
            ("ZFABRIC_CONFIG_DIR", docs.to_str().unwrap()),
        ],
        &[],
    ));
    let line = server_out.find("listening on", WATCHDOG);
    let seed = line.split_whitespace().last().unwrap().to_owned();

    // Nothing for that environment: a clear error, exit 2.
    let missing = node(
        &[],
        &["--config-from-fabric", "pricing/dev", "--seed", &seed],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{err}");
    assert!(err.contains("no document pricing/dev"), "{err}");

    // --check-config shows where the file came from.
    let check = node(
        &[("ZFABRIC_SEEDS", &seed)],
        &["--config-from-fabric", "pricing/prod", "--check-config"],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains("fetched from the fabric: pricing/prod version 1"),
        "{text}"
    );
    assert!(
        text.contains("service: file config-service:pricing:prod:v1"),
        "{text}"
    );

    let (mut priced, out, _err) = spawn(node(
        &[("ZFABRIC_SEEDS", &seed)],
        &[
            "--config-from-fabric",
            "pricing/prod",
            "--name",
            "priced",
            "--restart-on-config-update",
        ],
    ));
    let line = out.find("listening on", WATCHDOG);
    assert!(line.starts_with("node \"priced\""), "{line}");
    let ep = line.split_whitespace().last().unwrap().to_owned();
    let r = Command::new(env!("CARGO_BIN_EXE_zfabric"))
        .args(["req", "--connect", &ep, "--service", "price", "--data", "5"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "5");

    // The config server must know of the subscription before it scans:
    // it learns it with a heartbeat, so publish only once it sees the
    // node (a joined line), then write version 2.
    server_out.find("joined: priced", WATCHDOG);
    std::fs::write(
        prod.join("2.toml"),
        "bind = [\"tcp://127.0.0.1:0\"]\n[[service]]\nname = \"price\"\nhandler = \"delay\"\ndelay_ms = 1\n",
    )
    .unwrap();
    let seen = out.find(
        "config: pricing/prod version 2 available (running 1)",
        WATCHDOG,
    );
    println!("{seen}");
    out.find("config: stopping to restart with version 2", WATCHDOG);
    let status = priced.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

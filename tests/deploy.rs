//! The container image (deploy/image): built from nothing pulled, it runs
//! as a non-root user, and two containers on a Docker network the test
//! creates talk to each other through it (a service in one, a caller in
//! the other, found by the container's DNS name). Needs a running Docker
//! Engine: skipped with a visible message without one (a failure when
//! `ZFABRIC_REQUIRE_ALL` is set, as in CI).

mod common;

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_zfabric");
const BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/image/build.sh");

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Everything the test made, removed when it ends, also on panic.
struct Made {
    image: String,
    network: String,
    containers: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        let _ = docker(&["network", "rm", &self.network]);
        let _ = docker(&["image", "rm", "-f", &self.image]);
    }
}

#[test]
fn the_image_runs_unprivileged_and_serves_across_containers() {
    if !common::tool_available("docker", "info") {
        return;
    }
    let id = std::process::id();
    let mut made = Made {
        image: format!("zfabric-test:{id}"),
        network: format!("zf-test-{id}"),
        containers: Vec::new(),
    };
    let built = Command::new("sh")
        .args([BUILD, &made.image, BIN])
        .output()
        .expect("build.sh runs");
    assert!(
        built.status.success(),
        "image build failed: {}",
        text(&built)
    );

    // Non-root, and nothing but the binary and what it links.
    let user = docker(&["image", "inspect", "-f", "{{.Config.User}}", &made.image]);
    assert_eq!(text(&user).trim(), "65532:65532");
    let version = docker(&["run", "--rm", "--network", "none", &made.image, "--version"]);
    assert!(version.status.success(), "{}", text(&version));
    assert!(text(&version).contains("zfabric"), "{}", text(&version));
    let size = docker(&["image", "inspect", "-f", "{{.Size}}", &made.image]);
    let bytes: u64 = text(&size).trim().parse().expect("a size");
    eprintln!("image {}: {} MB", made.image, bytes / 1_000_000);

    // A service in one container, a caller in another, on a network of
    // the test's own; the service binds its container's DNS name, which
    // is also what it advertises.
    let net = docker(&["network", "create", &made.network]);
    assert!(net.status.success(), "{}", text(&net));
    let srv = format!("zf-srv-{id}");
    made.containers.push(srv.clone());
    let bind = format!("tcp://{srv}:7000");
    let started = docker(&[
        "run",
        "-d",
        "--name",
        &srv,
        "--hostname",
        &srv,
        "--network",
        &made.network,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        &made.image,
        "serve",
        "--bind",
        &bind,
        "--service",
        "echo",
    ]);
    assert!(started.status.success(), "{}", text(&started));
    let call = |count: &str| {
        docker(&[
            "run",
            "--rm",
            "--network",
            &made.network,
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            &made.image,
            "req",
            "--connect",
            &bind,
            "--service",
            "echo",
            "--data",
            "\"hi\"",
            "--count",
            count,
            "--timeout",
            "3000",
        ])
    };
    // The server may still be starting: a bounded number of attempts, each
    // waiting within its own timeout for the member.
    let mut answered = None;
    for _ in 0..10 {
        let o = call("3");
        if o.status.success() {
            answered = Some(o);
            break;
        }
    }
    let o = answered.expect("the caller container never reached the service container");
    let out = text(&o);
    assert_eq!(out.matches("\"hi\"").count(), 3, "{out}");
    assert!(out.contains("3 replies, 0 errors"), "{out}");
    eprintln!("across containers: {}", out.trim().replace('\n', " | "));

    // The server killed: the caller says the endpoint is dead, and fails.
    let killed = docker(&["rm", "-f", &srv]);
    assert!(killed.status.success(), "{}", text(&killed));
    let o = call("1");
    let out = text(&o);
    assert!(
        !o.status.success(),
        "a call to a killed server succeeded: {out}"
    );
    assert!(
        out.contains("no member reachable") || out.contains("failed to lookup"),
        "{out}"
    );
    eprintln!("after the kill: {}", out.trim());
}

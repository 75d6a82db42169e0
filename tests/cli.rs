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

mod commands {
    //! The terminal commands, run as real processes talking to each other.

    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Child, ChildStderr, Command, Stdio};
    use std::time::Duration;

    fn zfabric() -> Command {
        Command::new(env!("CARGO_BIN_EXE_zfabric"))
    }

    /// Kills the child if the test fails before it ends.
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Reads stderr lines until one starts with `prefix`; returns the rest.
    fn stderr_line(err: &mut BufReader<ChildStderr>, prefix: &str) -> String {
        for _ in 0..50 {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Some(rest) = line.trim().strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
        panic!("no stderr line starting with {prefix:?}");
    }

    fn pub_to_sub(bind: &str) {
        let mut sub = Reap(
            zfabric()
                .args([
                    "sub", "--bind", bind, "--topic", "weather.", "--count", "5", "--json",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut err = BufReader::new(sub.0.stderr.take().unwrap());
        let ep = stderr_line(&mut err, "listening on");
        let publ = zfabric()
            .args([
                "pub",
                "--connect",
                &ep,
                "--topic",
                "weather.paris",
                "--data",
                r#"{"t":21}"#,
            ])
            .args(["--count", "3000", "--rate", "1000"])
            .output()
            .unwrap();
        assert!(
            publ.status.success(),
            "{}",
            String::from_utf8_lossy(&publ.stderr)
        );
        let status = sub.0.wait().unwrap();
        assert!(status.success());
        let mut out = String::new();
        sub.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5, "{out}");
        for l in &lines {
            assert_eq!(l["topic"], "weather.paris");
            assert_eq!(l["body"]["t"], 21);
        }
        let mut rest = String::new();
        err.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("received 5 messages"), "{rest}");
    }

    #[test]
    fn pub_reaches_sub_across_processes_over_ipc() {
        let dir = tempfile::tempdir().unwrap();
        pub_to_sub(&format!("ipc://{}/s.sock", dir.path().display()));
    }

    #[test]
    fn pub_reaches_sub_across_processes_over_tcp() {
        pub_to_sub("tcp://127.0.0.1:0");
    }

    #[test]
    fn push_reaches_pull_across_processes() {
        let mut pull = Reap(
            zfabric()
                .args(["pull", "--bind", "tcp://127.0.0.1:0", "--count", "10"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut err = BufReader::new(pull.0.stderr.take().unwrap());
        let ep = stderr_line(&mut err, "listening on");
        let push = zfabric()
            .args(["push", "--connect", &ep, "--size", "100", "--count", "10"])
            .output()
            .unwrap();
        assert!(push.status.success());
        assert!(pull.0.wait().unwrap().success());
        let mut out = String::new();
        pull.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.lines().count(), 10, "{out}");
        assert!(out.lines().all(|l| l.contains("\"pad\"")));
    }

    #[test]
    fn req_calls_serve_and_serve_stops_cleanly_on_sigint_with_metrics_served() {
        let mut serve = Reap(
            zfabric()
                .args(["serve", "--bind", "tcp://127.0.0.1:0", "--service", "echo"])
                .args(["--metrics", "127.0.0.1:0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut err = BufReader::new(serve.0.stderr.take().unwrap());
        let metrics = stderr_line(&mut err, "metrics on");
        let mut first = String::new();
        BufReader::new(serve.0.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let ep = first.split_whitespace().last().unwrap().to_owned();

        let out = zfabric()
            .args([
                "req",
                "--connect",
                &ep,
                "--service",
                "echo",
                "--data",
                r#"{"n":7}"#,
                "--count",
                "3",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().collect::<Vec<_>>(), [r#"{"n":7}"#; 3]);

        // An unknown service: a clear error, exit 1, no panic.
        let out = zfabric()
            .args([
                "req",
                "--connect",
                &ep,
                "--service",
                "nope",
                "--data",
                "1",
                "--timeout",
                "300",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains("serves \"nope\"") && !e.contains("panicked"),
            "{e}"
        );

        // The metrics endpoint answers in Prometheus text format.
        let addr = metrics
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        conn.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("zfabric_node_members"), "{resp}");

        // SIGINT: stops, reports what it did, exit 0.
        let pid = serve.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let status = serve.0.wait().unwrap();
        assert!(status.success(), "{status:?}");
        let mut rest = String::new();
        err.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("served 3 requests"), "{rest}");
    }

    #[test]
    fn bad_endpoints_bad_json_and_unknown_flags_exit_2_with_a_message() {
        for args in [
            &["pub", "--connect", "tcp://nowhere", "--topic", "t"][..],
            &["sub", "--connect", "carrier://pigeon", "--topic", "t"],
            &[
                "pub",
                "--bind",
                "tcp://127.0.0.1:0",
                "--topic",
                "t",
                "--data",
                "{oops",
            ],
            &[
                "req",
                "--connect",
                "tcp://127.0.0.1:1",
                "--service",
                "s",
                "--data",
                "nope",
            ],
            &[
                "serve",
                "--bind",
                "tcp://127.0.0.1:0",
                "--service",
                "s",
                "--fail-rate",
                "3",
            ],
            &["pull", "--bind", "tcp://127.0.0.1:0", "--frobnicate"],
            &["sub", "--topic", "t"],
            &["node", "--config", "/nonexistent/node.toml"],
        ] {
            let out = zfabric().args(args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                !err.is_empty() && !err.contains("panicked"),
                "{args:?}: {err}"
            );
        }
    }

    #[test]
    fn every_command_has_help() {
        for cmd in [
            "run", "tour", "pub", "sub", "push", "pull", "serve", "req", "node",
        ] {
            let out = zfabric().args([cmd, "--help"]).output().unwrap();
            assert!(out.status.success(), "{cmd}");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("Usage"),
                "{cmd}"
            );
        }
    }

    #[test]
    fn a_node_from_a_config_file_serves_and_leaves_on_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("node.toml");
        std::fs::write(
            &cfg,
            "name = \"pricing\"\nbind = [\"tcp://127.0.0.1:0\"]\n[[service]]\nname = \"price\"\nhandler = \"echo\"\n",
        )
        .unwrap();
        // A service naming a bulkhead that does not exist is refused.
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "name = \"x\"\nbind = [\"tcp://127.0.0.1:0\"]\n[[service]]\nname = \"s\"\nhandler = \"echo\"\nbulkhead = \"nope\"\n",
        )
        .unwrap();
        let out = zfabric()
            .args(["node", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

        let mut node = Reap(
            zfabric()
                .args(["node", "--config"])
                .arg(&cfg)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut out = BufReader::new(node.0.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let ep = first.split_whitespace().last().unwrap().to_owned();
        let body = r#"{"item":"tea"}"#;
        let r = zfabric()
            .args([
                "req",
                "--connect",
                &ep,
                "--service",
                "price",
                "--data",
                body,
            ])
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), body);
        let pid = node.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        assert!(node.0.wait().unwrap().success());
        let mut err = String::new();
        node.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(err.contains("price"), "{err}");
    }
}

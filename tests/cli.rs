//! The README's main command, run as a real process.

mod common;

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

    /// `sub --json` prints an opaque body (content type 1) as the string it
    /// is when it is UTF-8, else as `{"hex": …}`; never as MessagePack
    /// (`b"hello"` once printed as `104`, the value of its first byte).
    #[test]
    fn sub_json_prints_opaque_bodies_as_text_or_hex() {
        let mut sub = Reap(
            zfabric()
                .args(["sub", "--bind", "tcp://127.0.0.1:0", "--topic", "raw."])
                .args(["--count", "2", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut err = BufReader::new(sub.0.stderr.take().unwrap());
        let ep = stderr_line(&mut err, "listening on");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(crate::common::watchdog(async {
            let p: zfabric::Publisher<()> = zfabric::Publisher::connect(&ep).await.unwrap();
            p.wait_subscribers(1).await;
            p.publish_bytes(b"raw.text", bytes::Bytes::from_static(b"hello"))
                .await
                .unwrap();
            p.publish_bytes(b"raw.bin", bytes::Bytes::from_static(&[0xff, 0x00, 0x01]))
                .await
                .unwrap();
            let stats = p.close(Duration::from_secs(5)).await;
            assert_eq!(stats.written, 2, "{stats:?}");
        }));
        // Bounded: a sub that never gets its two messages fails the test.
        let status = (0..1500)
            .find_map(|_| {
                let s = sub.0.try_wait().unwrap();
                if s.is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                s
            })
            .expect("sub did not end after its two messages");
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
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["topic"], "raw.text");
        assert_eq!(lines[0]["body"], "hello", "{out}");
        assert_eq!(lines[1]["topic"], "raw.bin");
        assert_eq!(
            lines[1]["body"],
            serde_json::json!({ "hex": "ff0001" }),
            "{out}"
        );
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
            e.contains("serves no service \"nope\"") && !e.contains("panicked"),
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
            "run", "tour", "pub", "sub", "push", "pull", "serve", "req", "node", "gateway",
            "keygen", "emit", "stream", "wait-for",
        ] {
            let out = zfabric().args([cmd, "--help"]).output().unwrap();
            assert!(out.status.success(), "{cmd}");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("Usage"),
                "{cmd}"
            );
        }
    }

    /// Starts `zfabric node --config CFG`; the process and the endpoint
    /// its first line says it listens on.
    fn node_from(cfg: &std::path::Path) -> (Reap, String) {
        let mut node = Reap(
            zfabric()
                .args(["node", "--config"])
                .arg(cfg)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut out = BufReader::new(node.0.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let ep = first.split_whitespace().last().unwrap().to_owned();
        (node, ep)
    }

    /// SIGTERMs a node, asserts it exits 0; everything it wrote on stderr.
    fn stop_node(node: &mut Reap) -> String {
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
        err
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

        let (mut node, ep) = node_from(&cfg);
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
        let err = stop_node(&mut node);
        assert!(err.contains("price"), "{err}");
    }

    /// `zfabric emit` to a node's consumer group: at least once, then
    /// durably through an outbox; the summary says what the group took
    /// and the node handled every event once. A topic no group takes
    /// exits 2 naming the groups there are.
    #[test]
    fn emit_reaches_a_consumer_group_at_least_once_and_through_an_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("node.toml");
        std::fs::write(
            &cfg,
            "name = \"billing-1\"\nbind = [\"tcp://127.0.0.1:0\"]\n\
             [[consumer]]\ngroup = \"billing\"\ntopic = \"order.\"\n",
        )
        .unwrap();
        let (mut node, ep) = node_from(&cfg);
        let emit = |topic: &str, extra: &[&str]| {
            zfabric()
                .args(["emit", "--connect", &ep, "--topic", topic])
                .args(["--count", "20", "--rate", "200", "--json"])
                .args(extra)
                .output()
                .unwrap()
        };
        let json = |o: &std::process::Output| -> serde_json::Value {
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
                panic!(
                    "{e}: {} / {}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
        };

        let once = emit("order.placed", &[]);
        let err = String::from_utf8_lossy(&once.stderr);
        assert!(once.status.success(), "{err}");
        let v = json(&once);
        assert_eq!(v["delivery"], "at least once", "{v}");
        assert_eq!(v["emitted"], 20, "{v}");
        assert_eq!(v["acked"].as_object().map(|m| m.len()), Some(1), "{v}");
        assert_eq!(v["acked"].as_object().unwrap().values().next().unwrap(), 20);
        assert!(err.contains("billing"), "{err}");

        let outbox = dir.path().join("outbox");
        let durable = emit("order.paid", &["--outbox", outbox.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&durable.stderr);
        assert!(durable.status.success(), "{err}");
        let v = json(&durable);
        assert_eq!(v["delivery"], "durable", "{v}");
        assert_eq!(v["emitted"], 20, "{v}");
        assert_eq!(v["outbox_pending"], 0, "{v}");
        assert!(err.contains("relayed"), "{err}");

        let unknown = emit("invoice.sent", &["--wait-ms", "300"]);
        let err = String::from_utf8_lossy(&unknown.stderr);
        assert_eq!(unknown.status.code(), Some(2), "{err}");
        assert!(err.contains("no consumer group takes"), "{err}");
        assert!(err.contains("billing"), "{err}");

        let err = stop_node(&mut node);
        assert!(err.contains("\"consumer:billing\": 40"), "{err}");
    }

    /// A node that joined through a seed leaves gracefully on SIGTERM: its
    /// peer sees it gone at once, never suspect first (which is what an
    /// expiry looks like), so a rolling restart drains instead of failing
    /// calls.
    #[test]
    fn a_node_with_seeds_tells_its_peers_it_leaves_on_sigterm() {
        let mut a = Reap(
            node_with_env(&[("ZFABRIC_NAME", "a"), ("ZFABRIC_BIND", "tcp://127.0.0.1:0")])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut a_out = BufReader::new(a.0.stdout.take().unwrap());
        let mut first = String::new();
        a_out.read_line(&mut first).unwrap();
        let ep = first
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .unwrap_or_else(|| panic!("no endpoint in {first:?}"))
            .to_owned();
        let mut b = Reap(
            node_with_env(&[
                ("ZFABRIC_NAME", "b"),
                ("ZFABRIC_BIND", "tcp://127.0.0.1:0"),
                ("ZFABRIC_SEEDS", &ep),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        );
        // Every line of `a` about `b`, until it is gone (expired or left:
        // either comes within a few heartbeats of b's stop).
        let mut about_b = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(a_out.read_line(&mut line).unwrap() > 0, "a ended");
            if line.contains(": b (") {
                about_b.push(line.split(':').next().unwrap().to_owned());
                if line.starts_with("joined") {
                    let pid = b.0.id().to_string();
                    assert!(Command::new("kill")
                        .args(["-TERM", &pid])
                        .status()
                        .unwrap()
                        .success());
                    assert!(b.0.wait().unwrap().success());
                }
                if line.starts_with("gone") {
                    break;
                }
            }
        }
        assert_eq!(about_b, ["joined", "gone"], "b did not leave gracefully");
    }

    /// `zfabric node` with the environment cleared of zfabric's variables
    /// but those given.
    fn node_with_env(vars: &[(&str, &str)]) -> Command {
        let mut c = zfabric();
        c.arg("node");
        for (k, _) in std::env::vars() {
            if k.starts_with("ZFABRIC_") {
                c.env_remove(k);
            }
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c
    }

    #[test]
    fn check_config_layers_flag_over_env_over_file_and_names_each_source() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("node.toml");
        std::fs::write(
            &cfg,
            "name = \"from-file\"\nbind = [\"tcp://127.0.0.1:7000\"]\ngroups = [\"g\"]\n[[service]]\nname = \"price\"\nhandler = \"echo\"\n",
        )
        .unwrap();
        let out = node_with_env(&[
            ("ZFABRIC_NAME", "from-env"),
            ("ZFABRIC_BIND", "tcp://127.0.0.1:0"),
            ("ZFABRIC_SEEDS", "tcp://127.0.0.1:7999"),
        ])
        .arg("--config")
        .arg(&cfg)
        .args([
            "--check-config",
            "--name",
            "from-flag",
            "--set",
            "groups=a,b",
        ])
        .output()
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in [
            "name = \"from-flag\"",
            "bind = [\"tcp://127.0.0.1:0\"]",
            "groups = [\"a\", \"b\"]",
            "#   name: flag --name",
            "#   bind: env ZFABRIC_BIND",
            "#   seeds: env ZFABRIC_SEEDS",
            "#   groups: flag --set groups",
            "#   service: file",
            "# advertises tcp://127.0.0.1:0",
            "# configuration ok",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }

        // No file at all: the environment is enough, and the name
        // defaults to the host name.
        let out = node_with_env(&[
            ("ZFABRIC_BIND", "tcp://127.0.0.1:0"),
            (
                "ZFABRIC_SERVICE",
                "[{name = \"price\", handler = \"echo\"}]",
            ),
            ("ZFABRIC_SEEED", "typo"),
        ])
        .arg("--check-config")
        .output()
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("#   name: default: the host name"), "{text}");
        assert!(text.contains("ZFABRIC_SEEED is set but"), "{text}");
    }

    #[test]
    fn check_config_exits_2_naming_the_bad_value_and_where_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let inline = dir.path().join("inline.toml");
        std::fs::write(
            &inline,
            "bind = [\"tcp://127.0.0.1:0\"]\n[gateway]\nbind = \"tcp://127.0.0.1:0\"\nexpose = [\"a\"]\nkey = \"hunter2\"\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.key");
        let missing = missing.to_str().unwrap();
        // (environment, arguments, what the error must name)
        type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![
                    ("ZFABRIC_BIND", "tcp://127.0.0.1:0"),
                    ("ZFABRIC_BEACON_PORT", "x"),
                ],
                vec![],
                "ZFABRIC_BEACON_PORT",
            ),
            (vec![("ZFABRIC_BIND", "nope://x")], vec![], "nope://x"),
            (
                vec![],
                vec!["--config", inline.to_str().unwrap()],
                "key_file",
            ),
            (
                vec![
                    ("ZFABRIC_BIND", "tcp://127.0.0.1:0"),
                    ("ZFABRIC_CURVE_SECRET_FILE", missing),
                ],
                vec![],
                missing,
            ),
            (
                vec![
                    ("ZFABRIC_BIND", "tcp://127.0.0.1:0"),
                    ("ZFABRIC_GATEWAY_BIND", "tcp://127.0.0.1:0"),
                    ("ZFABRIC_GATEWAY_EXPOSE", "a"),
                    ("ZFABRIC_GATEWAY_KEY_FILE", missing),
                ],
                vec![],
                missing,
            ),
            (vec![], vec![], "ZFABRIC_BIND"),
            (
                vec![("ZFABRIC_BIND", "tcp://127.0.0.1:0")],
                vec!["--set", "nosuch=1"],
                "no such key",
            ),
        ];
        for (env, args, want) in cases {
            let out = node_with_env(&env)
                .arg("--check-config")
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{env:?} {args:?}: {err}");
            assert!(
                err.contains(want),
                "{env:?} {args:?}: wanted {want:?} in {err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_node_configured_from_the_environment_alone_serves() {
        let mut node = Reap(
            node_with_env(&[
                ("ZFABRIC_NAME", "envnode"),
                ("ZFABRIC_BIND", "tcp://127.0.0.1:0"),
                (
                    "ZFABRIC_SERVICE",
                    "[{name = \"price\", handler = \"echo\"}]",
                ),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        );
        let mut out = BufReader::new(node.0.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(first.starts_with("node \"envnode\""), "{first}");
        let ep = first.split_whitespace().last().unwrap().to_owned();
        let r = zfabric()
            .args(["req", "--connect", &ep, "--service", "price", "--data", "7"])
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "7");
        let pid = node.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        assert!(node.0.wait().unwrap().success());
    }

    #[test]
    fn wait_for_returns_once_a_port_listens_and_fails_after_its_timeout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ok = zfabric()
            .args([
                "wait-for",
                "--dns",
                "localhost",
                "--tcp",
                &format!("127.0.0.1:{port}"),
                "--timeout",
                "10",
            ])
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).contains("localhost (dns)"));
        drop(l);
        let no = zfabric()
            .args([
                "wait-for",
                "--dns",
                "no-such-name.invalid",
                "--timeout",
                "1",
            ])
            .output()
            .unwrap();
        assert_eq!(no.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&no.stderr).contains("no-such-name.invalid"));
    }
}

mod curve {
    //! CURVE from the terminal: `keygen`, `serve` + `req` with keys, the
    //! refusals, and a CURVE fabric of three `zfabric node` processes. Every
    //! process is killed when its handle drops, and every test runs under
    //! a watchdog.

    use crate::common;
    use std::path::{Path, PathBuf};
    use std::process::Stdio;

    use tokio::io::{AsyncBufReadExt, BufReader, Lines};
    use tokio::process::{Child, ChildStdout, Command};

    fn zfabric() -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_zfabric"));
        c.kill_on_drop(true);
        for v in [
            "ZFABRIC_CURVE_SECRET_FILE",
            "ZFABRIC_CURVE_SERVER",
            "ZFABRIC_CURVE_AUTHORIZED_FILE",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// `zfabric keygen --out dir/name`; the public key it printed.
    async fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
        let path = dir.join(name);
        let out = zfabric()
            .args(["keygen", "--out"])
            .arg(&path)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (path, String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A running process and its stdout lines.
    struct Running {
        _child: Child,
        out: Lines<BufReader<ChildStdout>>,
    }

    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Running { _child: child, out }
    }

    impl Running {
        /// The last word of the first stdout line starting with `prefix`.
        async fn endpoint_after(&mut self, prefix: &str) -> String {
            while let Some(line) = self.out.next_line().await.unwrap() {
                if line.starts_with(prefix) {
                    return line.split_whitespace().last().unwrap().to_owned();
                }
            }
            panic!("the process ended before printing {prefix:?}");
        }

        /// Reads stdout until a line contains every one of `words`.
        async fn wait_for_line(&mut self, words: &[&str]) {
            while let Some(line) = self.out.next_line().await.unwrap() {
                if words.iter().all(|w| line.contains(w)) {
                    return;
                }
            }
            panic!("the process ended before a line with {words:?}");
        }
    }

    #[tokio::test]
    async fn keygen_writes_a_private_secret_and_a_public_key_and_never_overwrites_silently() {
        common::watchdog(async {
            let dir = tempfile::tempdir().unwrap();
            let (path, public) = keygen(dir.path(), "node.key").await;
            assert_eq!(public.len(), 40, "{public}");
            let secret = std::fs::read_to_string(&path).unwrap();
            assert_eq!(secret.lines().count(), 1);
            assert_eq!(secret.trim().len(), 40);
            assert_ne!(secret.trim(), public);
            let pub_file = std::fs::read_to_string(dir.path().join("node.key.pub")).unwrap();
            assert_eq!(pub_file.trim(), public);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            // Again without --force: refused, exit 2, nothing changed.
            let out = zfabric()
                .args(["keygen", "--out"])
                .arg(&path)
                .output()
                .await
                .unwrap();
            assert_eq!(out.status.code(), Some(2));
            assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
            assert_eq!(std::fs::read_to_string(&path).unwrap(), secret);
            // With --force: a new pair.
            let out = zfabric()
                .args(["keygen", "--force", "--out"])
                .arg(&path)
                .output()
                .await
                .unwrap();
            assert!(out.status.success());
            assert_ne!(std::fs::read_to_string(&path).unwrap(), secret);
        })
        .await
    }

    #[tokio::test]
    async fn serve_and_req_speak_curve_over_tcp_and_a_wrong_key_fails_clearly() {
        common::watchdog(async {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let (server_key, server_pub) = keygen(d, "server.key").await;
            let (client_key, client_pub) = keygen(d, "client.key").await;
            let (_, other_pub) = keygen(d, "other.key").await;
            let authorized = d.join("authorized");
            std::fs::write(&authorized, format!("# the callers\n{client_pub}\n")).unwrap();

            let mut serve = start(
                zfabric()
                    .args(["serve", "--bind", "tcp://127.0.0.1:0", "--service", "echo"])
                    .arg("--curve-secret")
                    .arg(&server_key)
                    .arg("--curve-authorized")
                    .arg(&authorized),
            );
            let ep = serve.endpoint_after("serving").await;
            let req = |server: String, timeout: &str| {
                let mut c = zfabric();
                c.args(["req", "--connect", &ep, "--service", "echo"])
                    .args(["--data", r#"{"n":1}"#, "--timeout", timeout])
                    .arg("--curve-secret")
                    .arg(&client_key)
                    .args(["--curve-server", &server]);
                c
            };
            // The server's public key given as a file.
            let ok = req(d.join("server.key.pub").display().to_string(), "5000")
                .output()
                .await
                .unwrap();
            assert!(
                ok.status.success(),
                "{}",
                String::from_utf8_lossy(&ok.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), r#"{"n":1}"#);
            // ... and inline.
            let ok = req(server_pub.clone(), "5000").output().await.unwrap();
            assert!(
                ok.status.success(),
                "{}",
                String::from_utf8_lossy(&ok.stderr)
            );

            // The wrong server key: exit 1 and a message saying why.
            let bad = req(other_pub, "800").output().await.unwrap();
            assert_eq!(bad.status.code(), Some(1));
            let e = String::from_utf8_lossy(&bad.stderr);
            assert!(
                e.contains("over CURVE") && e.contains("--curve-server"),
                "{e}"
            );

            // A NULL caller never gets in either.
            let null = zfabric()
                .args(["req", "--connect", &ep, "--service", "echo"])
                .args(["--data", "1", "--timeout", "800"])
                .output()
                .await
                .unwrap();
            assert_eq!(null.status.code(), Some(1));

            // A key file that does not load: a usage error naming it.
            let missing = d.join("missing.key");
            let out = zfabric()
                .args(["req", "--connect", &ep, "--service", "echo", "--data", "1"])
                .arg("--curve-secret")
                .arg(&missing)
                .args(["--curve-server", &server_pub])
                .output()
                .await
                .unwrap();
            assert_eq!(out.status.code(), Some(2));
            let e = String::from_utf8_lossy(&out.stderr);
            assert!(e.contains("missing.key"), "{e}");
            // A world-readable secret key is refused, naming the file.
            let loose = d.join("loose.key");
            std::fs::copy(&client_key, &loose).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
                let out = zfabric()
                    .args(["pull", "--bind", "tcp://127.0.0.1:0", "--count", "1"])
                    .arg("--curve-secret")
                    .arg(&loose)
                    .output()
                    .await
                    .unwrap();
                assert_eq!(out.status.code(), Some(2));
                assert!(String::from_utf8_lossy(&out.stderr).contains("loose.key"));
            }
            // The key from the environment works like the flag.
            let ok = zfabric()
                .args(["req", "--connect", &ep, "--service", "echo", "--data", "2"])
                .env("ZFABRIC_CURVE_SECRET_FILE", &client_key)
                .env("ZFABRIC_CURVE_SERVER", &server_pub)
                .output()
                .await
                .unwrap();
            assert!(
                ok.status.success(),
                "{}",
                String::from_utf8_lossy(&ok.stderr)
            );
            drop(serve);
        })
        .await
    }

    #[tokio::test]
    async fn push_reaches_pull_over_curve_across_processes() {
        common::watchdog(async {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let (server_key, server_pub) = keygen(d, "pull.key").await;
            let (client_key, client_pub) = keygen(d, "push.key").await;
            let authorized = d.join("authorized");
            std::fs::write(&authorized, format!("{client_pub}\n")).unwrap();
            let mut pull = zfabric();
            pull.args(["pull", "--bind", "tcp://127.0.0.1:0", "--count", "3"])
                .arg("--curve-secret")
                .arg(&server_key)
                .arg("--curve-authorized")
                .arg(&authorized)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut pull = pull.spawn().unwrap();
            let mut err = BufReader::new(pull.stderr.take().unwrap()).lines();
            let ep = loop {
                let line = err
                    .next_line()
                    .await
                    .unwrap()
                    .expect("pull printed its endpoint");
                if let Some(ep) = line.strip_prefix("listening on ") {
                    break ep.trim().to_owned();
                }
            };
            let push = zfabric()
                .args([
                    "push",
                    "--connect",
                    &ep,
                    "--data",
                    r#"{"x":1}"#,
                    "--count",
                    "3",
                ])
                .arg("--curve-secret")
                .arg(&client_key)
                .args(["--curve-server", &server_pub])
                .output()
                .await
                .unwrap();
            assert!(
                push.status.success(),
                "{}",
                String::from_utf8_lossy(&push.stderr)
            );
            let out = pull.wait_with_output().await.unwrap();
            assert!(out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
        })
        .await
    }

    /// A node TOML with `[security]` (relative paths).
    fn node_toml(dir: &Path, name: &str, seeds: &[String], service: Option<&str>) -> PathBuf {
        let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
        let mut t = format!(
            "name = {name:?}\nbind = [\"tcp://127.0.0.1:0\"]\nseeds = [{}]\n",
            seeds.join(", ")
        );
        if let Some(s) = service {
            t += &format!("[[service]]\nname = {s:?}\nhandler = \"echo\"\n");
        }
        t += &format!(
            "[security]\ncurve_secret_file = \"{name}.key\"\ncurve_server = \"fabric.keys\"\ncurve_authorized_file = \"fabric.keys\"\n"
        );
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(&p, t).unwrap();
        p
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_curve_nodes_converge_and_answer_a_curve_call_through_the_fabric() {
        common::watchdog(async {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let mut keys = Vec::new();
            for n in ["a", "b", "c", "caller"] {
                keys.push(keygen(d, &format!("{n}.key")).await.1);
            }
            // One file of every fabric key: the allow-list, and the server
            // keys a seed may have.
            std::fs::write(d.join("fabric.keys"), keys.join("\n") + "\n").unwrap();
            let mut a = start(zfabric().args(["node", "--config"]).arg(node_toml(
                d,
                "a",
                &[],
                None,
            )));
            let a_ep = a.endpoint_after("node").await;
            let mut b = start(zfabric().args(["node", "--config"]).arg(node_toml(
                d,
                "b",
                std::slice::from_ref(&a_ep),
                None,
            )));
            let b_ep = b.endpoint_after("node").await;
            a.wait_for_line(&["joined", "b "]).await;
            // c serves `price` and knows only b.
            let mut c = start(zfabric().args(["node", "--config"]).arg(node_toml(
                d,
                "c",
                &[b_ep],
                Some("price"),
            )));
            c.endpoint_after("node").await;
            // Converged: every node sees the other two.
            a.wait_for_line(&["joined", "c ", "price"]).await;
            b.wait_for_line(&["joined", "c ", "price"]).await;
            // A caller that knows only a reaches c's service through the fabric.
            let caller_key = d.join("caller.key");
            let out = zfabric()
                .args([
                    "req",
                    "--connect",
                    &a_ep,
                    "--service",
                    "price",
                    "--data",
                    r#"{"tea":2}"#,
                ])
                .arg("--curve-secret")
                .arg(&caller_key)
                .arg("--curve-server")
                .arg(d.join("fabric.keys"))
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"tea":2}"#);
            drop((a, b, c));
        })
        .await
    }
}

//! A second-language node on a Rust fabric: `tests/interop/node.py`
//! (pyzmq + msgpack, written from docs/PROTOCOL.md) joins Rust nodes over
//! tcp from one seed.
//!
//! Guarantees, each checked here: the Python node first agrees with the
//! shared test vectors (`tests/fixtures/vectors.json`, which
//! `tests/vectors.rs` checks on the Rust side); Rust anycast calls reach
//! the service it serves; its call to a Rust service is answered; fabric
//! publishes are delivered both ways; its graceful leave is seen as a
//! leave (gone at once, never suspect first), and when it is killed,
//! idempotent Rust callers fail over to the Rust member of the same
//! service. On a CURVE fabric it does all of this with its key advertised
//! in its hello, and a Python node whose key the fabric does not authorize
//! never joins. Every wait is bounded, the whole test runs under a
//! watchdog, and the Python process is killed when its guard drops. Does
//! not: test groups and unicast from Python (it answers them with their
//! documented errors), or failover on a CURVE fabric (the same code path
//! as without it).

mod common;

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use zfabric::node::{
    CallOptions, MembershipConfig, MembershipEvent, Node, NodeConfig, PeerId, PeerState,
};
use zfabric::{AllowList, CurveConfig, CurveKeyPair, RemoteError, Request};

const NODE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/node.py");
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vectors.json");

/// Whether python3 with pyzmq and msgpack is there, installing the two
/// from PyPI if needed (once per test binary). `false` (with a SKIP line)
/// only where they are missing and `ZFABRIC_REQUIRE_ALL` is unset.
fn python_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| common::python_with("zmq, msgpack", &["pyzmq", "msgpack"]))
}

/// Rust nodes' timings here: quick heartbeats, slow suspicion, so that a
/// node gone within a second of its leave can only have left.
fn config(suspect: Duration, gone: Duration) -> NodeConfig {
    NodeConfig {
        membership: MembershipConfig {
            heartbeat_interval: Duration::from_millis(100),
            suspect_after: suspect,
            gone_after: gone,
            forget_after: Duration::from_secs(30),
        },
        ..NodeConfig::default()
    }
}

/// The Python node as a child process: commands on its stdin, events
/// (JSON lines) from its stdout. Killed on drop.
struct PyNode {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Events read and not yet taken.
    seen: VecDeque<Value>,
    /// Its node id (from its `ready` event).
    id: PeerId,
}

impl PyNode {
    async fn start(seed: &str, extra: &[&str], env: &[(&str, String)]) -> PyNode {
        let mut args = vec![
            NODE,
            "run",
            VECTORS,
            "--seed",
            seed,
            "--heartbeat-ms",
            "100",
            "--gone-ms",
            "3000",
            "--max-seconds",
            "90",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new("python3")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdin = child.stdin.take();
        let mut py = PyNode {
            child,
            stdin,
            lines,
            seen: VecDeque::new(),
            id: PeerId(0),
        };
        let v = py.event(|e| e["event"] == "vectors").await;
        assert_eq!(
            v["failures"],
            json!([]),
            "the Python node agrees with the vectors"
        );
        let ready = py.event(|e| e["event"] == "ready").await;
        py.id = PeerId(ready["id"].as_u64().unwrap());
        py
    }

    /// The first event (seen before or arriving within 20 s) that `pred`
    /// accepts; it is taken, the others stay.
    async fn event(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i).unwrap();
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let line = tokio::time::timeout_at(end, self.lines.next_line()).await;
            let line = match line {
                Ok(Ok(Some(l))) => l,
                other => panic!(
                    "the Python node gave no such event ({other:?}); seen: {:?}",
                    self.seen
                ),
            };
            let v: Value = serde_json::from_str(&line).expect("the Python node prints JSON");
            if pred(&v) {
                return v;
            }
            self.seen.push_back(v);
        }
    }

    /// Every event of this name seen so far (reading what is already
    /// there, without waiting for more).
    async fn drain(&mut self, name: &str) -> Vec<Value> {
        while let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_millis(50), self.lines.next_line()).await
        {
            self.seen.push_back(serde_json::from_str(&l).unwrap());
        }
        let (take, keep): (Vec<Value>, Vec<Value>) =
            self.seen.drain(..).partition(|e| e["event"] == name);
        self.seen = keep.into();
        take
    }

    async fn send(&mut self, cmd: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }
}

/// Polls `f` every 25 ms for at most 10 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "not reached within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn serves(n: &Node, service: &str, id: PeerId) -> bool {
    n.serving(service).iter().any(|(p, _)| *p == id)
}

/// The keys of a CURVE fabric: two Rust nodes and the Python node, each
/// authorizing all three; the seed's key is the server key every node
/// expects of a seed.
struct Keys {
    a: CurveKeyPair,
    b: CurveKeyPair,
    py: CurveKeyPair,
}

impl Keys {
    fn generate() -> Keys {
        Keys {
            a: CurveKeyPair::generate(),
            b: CurveKeyPair::generate(),
            py: CurveKeyPair::generate(),
        }
    }

    fn config(&self, me: &CurveKeyPair) -> CurveConfig {
        let all = [*self.a.public(), *self.b.public(), *self.py.public()];
        CurveConfig::new(me.clone())
            .server_key(*self.a.public())
            .authorizer(AllowList::from_keys(all))
    }

    /// As [`config`](Self::config), but without the Python node's key in
    /// the allow-list.
    fn config_refusing_py(&self, me: &CurveKeyPair) -> CurveConfig {
        CurveConfig::new(me.clone())
            .server_key(*self.a.public())
            .authorizer(AllowList::from_keys([*self.a.public(), *self.b.public()]))
    }

    /// The Python node's environment (see node.py `--curve`).
    fn py_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ZF_SECRET", self.py.secret().to_z85()),
            ("ZF_PUBLIC", self.py.public().to_z85()),
            ("ZF_SEED_KEY", self.a.public().to_z85()),
        ]
    }
}

async fn echo_node(
    name: &str,
    service: &str,
    seed: Option<String>,
    cfg: NodeConfig,
    curve: Option<CurveConfig>,
) -> Node {
    let me = name.to_string();
    let mut b = Node::builder(name)
        .config(cfg)
        .bind("tcp://127.0.0.1:0")
        .serve(service, move |req: Request<String>| {
            let me = me.clone();
            async move { Ok::<_, RemoteError>(format!("{me}:{}", req.body)) }
        });
    if let Some(s) = seed {
        b = b.seed(s);
    }
    if let Some(c) = curve {
        b = b.curve(c);
    }
    b.start().await.unwrap()
}

#[test]
fn the_python_node_agrees_with_every_test_vector() {
    if !python_ready() {
        return;
    }
    let out = std::process::Command::new("python3")
        .args([NODE, "check", VECTORS])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(VECTORS).unwrap()).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert_eq!(v["checked"], json!(vectors.len()));
    let canonical = vectors.iter().filter(|v| v["canonical"] == true).count();
    assert_eq!(
        v["encoded"],
        json!(canonical),
        "every canonical vector encoded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_node_joins_serves_calls_publishes_and_leaves() {
    if !python_ready() {
        return;
    }
    common::watchdog(joins_serves_calls_publishes_and_leaves(None)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_node_does_all_of_it_on_a_curve_fabric() {
    if !python_ready() {
        return;
    }
    common::watchdog(joins_serves_calls_publishes_and_leaves(Some(
        Keys::generate(),
    )))
    .await
}

async fn joins_serves_calls_publishes_and_leaves(keys: Option<Keys>) {
    {
        let cfg = config(Duration::from_secs(4), Duration::from_secs(8));
        let curve_a = keys.as_ref().map(|k| k.config(&k.a));
        let curve_b = keys.as_ref().map(|k| k.config(&k.b));
        let a = echo_node("rs-a", "rs.echo", None, cfg.clone(), curve_a).await;
        let mut from_py = a.subscribe("py.", 16);
        let seed = a.endpoints()[0].to_string();
        let b = echo_node("rs-b", "rs.echo", Some(seed.clone()), cfg, curve_b).await;
        common::converge(&[&a, &b]).await;

        let mut args = vec!["--name", "py", "--serve", "py.echo", "--topic", "rs."];
        if keys.is_some() {
            args.push("--curve");
        }
        let env = keys.as_ref().map(Keys::py_env).unwrap_or_default();
        let mut py = PyNode::start(&seed, &args, &env).await;
        if let Some(k) = &keys {
            // Its hello came over an authorized CURVE connection and
            // advertises its key, which the other nodes' links expect.
            let want = *k.py.public();
            until("the seed knows the Python node's key", || {
                a.members()
                    .iter()
                    .any(|p| p.id == py.id && p.curve_key == Some(want))
            })
            .await;
        }
        let py_id = py.id;
        // Joined from one seed: the seed learns it from its hello, the
        // other Rust node from gossip (and greets it).
        until("both Rust nodes see the Python service", || {
            serves(&a, "py.echo", py_id) && serves(&b, "py.echo", py_id)
        })
        .await;
        for n in [&a, &b] {
            let id = n.id().0;
            py.event(|e| e["event"] == "member" && e["id"] == id).await;
        }

        // Rust anycast calls reach the Python service.
        for (i, n) in [&a, &b, &a, &b].into_iter().enumerate() {
            let r: String = n
                .request("py.echo", &format!("m{i}"), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(r, format!("py:m{i}"));
        }
        let served = py.drain("served").await;
        assert_eq!(served.len(), 4, "{served:?}");
        for n in [&a, &b] {
            let id = json!(n.id().0);
            assert!(served.iter().any(|e| e["source"] == id), "{served:?}");
        }

        // The Python node calls a Rust service by name.
        for tag in 1..=4 {
            py.send(json!({"cmd": "call", "tag": tag, "service": "rs.echo", "body": "from-py"}))
                .await;
            let r = py.event(|e| e["event"] == "reply" && e["tag"] == tag).await;
            assert_eq!(r["ok"], true, "{r}");
            let body = r["body"].as_str().unwrap();
            assert!(body == "rs-a:from-py" || body == "rs-b:from-py", "{body}");
        }
        // A service nobody serves is refused by name.
        py.send(json!({"cmd": "call", "tag": 9, "service": "nobody", "body": 1}))
            .await;
        let r = py.event(|e| e["event"] == "reply" && e["tag"] == 9).await;
        assert_eq!(r["code"], "no_such_service");

        // Rust publishes to the Python node's topic.
        let n = a
            .publish("rs.news", &"hello py", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(n, 1, "the Python subscription took it");
        let m = py.event(|e| e["event"] == "message").await;
        assert_eq!(
            (&m["topic"], &m["body"]),
            (&json!("rs.news"), &json!("hello py"))
        );

        // The Python node publishes to a Rust subscription.
        py.send(json!({"cmd": "publish", "tag": 2, "topic": "py.news", "body": "hello rs"}))
            .await;
        let p = py.event(|e| e["event"] == "published").await;
        assert_eq!(p["delivered"], 1, "{p}");
        let got = tokio::time::timeout(Duration::from_secs(5), from_py.recv())
            .await
            .expect("the publish arrives")
            .expect("subscription open");
        assert_eq!(got.topic, "py.news");
        assert_eq!(got.decode::<String>().unwrap(), "hello rs");
        assert_eq!(got.header.source, py_id.0);

        // A graceful leave: gone at once on both, never suspect first.
        let (mut ea, mut eb) = (a.events(), b.events());
        let asked = Instant::now();
        py.send(json!({"cmd": "leave"})).await;
        let left = py.event(|e| e["event"] == "left_fabric").await;
        assert_eq!(left["acks"], 2, "{left}");
        for ev in [&mut ea, &mut eb] {
            loop {
                let e = tokio::time::timeout(Duration::from_secs(3), ev.recv())
                    .await
                    .expect("the leave is seen within 3 s (suspect_after is 4 s)")
                    .unwrap();
                assert_ne!(
                    e,
                    MembershipEvent::Suspected(py_id),
                    "a leave, not an expiry"
                );
                if e == MembershipEvent::Gone(py_id) {
                    break;
                }
            }
        }
        assert!(asked.elapsed() < Duration::from_secs(4));
        assert_eq!(a.peer_state(py_id), Some(PeerState::Gone));
        assert!(!serves(&b, "py.echo", py_id) || b.peer_state(py_id) == Some(PeerState::Gone));
        let status = tokio::time::timeout(Duration::from_secs(5), py.child.wait())
            .await
            .expect("the Python node exits after leaving")
            .unwrap();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_node_whose_key_is_not_authorized_does_not_join() {
    if !python_ready() {
        return;
    }
    common::watchdog(async {
        let keys = Keys::generate();
        let cfg = config(Duration::from_secs(4), Duration::from_secs(8));
        let a = echo_node(
            "rs-a",
            "rs.echo",
            None,
            cfg,
            Some(keys.config_refusing_py(&keys.a)),
        )
        .await;
        let seed = a.endpoints()[0].to_string();
        let before = common::counter(zfabric::telemetry::PEERS_DISCONNECTED, "unauthorized");
        let args = ["--name", "py", "--serve", "py.echo", "--curve"];
        let mut py = PyNode::start(&seed, &args, &keys.py_env()).await;
        until("the seed refuses the Python node's key", || {
            common::counter(zfabric::telemetry::PEERS_DISCONNECTED, "unauthorized") > before
        })
        .await;
        assert!(a.members().is_empty(), "{:?}", a.members());
        assert!(a.serving("py.echo").is_empty());
        assert_eq!(py.drain("member").await, Vec::<Value>::new());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_python_member_fails_idempotent_callers_over_to_the_rust_one() {
    if !python_ready() {
        return;
    }
    common::watchdog(async {
        let cfg = config(Duration::from_secs(1), Duration::from_secs(2));
        let caller = Node::builder("caller")
            .config(cfg.clone())
            .bind("tcp://127.0.0.1:0")
            .start()
            .await
            .unwrap();
        let seed = caller.endpoints()[0].to_string();
        let rs = echo_node("rs", "work", Some(seed.clone()), cfg, None).await;
        common::converge(&[&caller, &rs]).await;
        // The Python member answers after 400 ms: calls are in flight on
        // it when it is killed.
        let mut py = PyNode::start(
            &seed,
            &["--name", "py", "--serve", "work", "--delay-ms", "400"],
            &[],
        )
        .await;
        let py_id = py.id;
        until("the caller sees both members", || {
            caller.serving("work").len() == 2 && serves(&caller, "work", py_id)
        })
        .await;
        // Both members answer while both are up.
        let mut by = std::collections::HashSet::new();
        for i in 0..4 {
            let r: String = caller
                .request("work", &i.to_string(), Duration::from_secs(5))
                .await
                .unwrap();
            by.insert(r.split(':').next().unwrap().to_string());
        }
        assert_eq!(by.len(), 2, "round-robin over both members: {by:?}");
        py.drain("served").await;

        let caller = Arc::new(caller);
        let mut calls = Vec::new();
        for i in 0..10u32 {
            let c = caller.clone();
            calls.push(tokio::spawn(async move {
                let opts = CallOptions::default()
                    .timeout(Duration::from_secs(10))
                    .idempotent();
                c.request_with::<String, String>("work", &format!("k{i}"), opts)
                    .await
            }));
        }
        // Kill it once calls have reached it, before it answers them.
        py.event(|e| e["event"] == "served").await;
        py.child.start_kill().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), py.child.wait()).await;
        for (i, h) in calls.into_iter().enumerate() {
            let r = h
                .await
                .unwrap()
                .expect("an idempotent call survives the Python member's death");
            assert_eq!(r, format!("rs:k{i}"), "answered by the Rust member");
        }
        // Calls keep working, and the dead member expires.
        let mut events = caller.events();
        let r: String = caller
            .request_with(
                "work",
                &"after".to_string(),
                CallOptions::default()
                    .timeout(Duration::from_secs(5))
                    .idempotent(),
            )
            .await
            .unwrap();
        assert_eq!(r, "rs:after");
        if caller.peer_state(py_id) != Some(PeerState::Gone) {
            loop {
                let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
                    .await
                    .expect("the killed member expires")
                    .unwrap();
                if e == MembershipEvent::Gone(py_id) {
                    break;
                }
            }
        }
    })
    .await
}

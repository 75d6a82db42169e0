//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub(crate) mod proc;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The transports every conformance test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tp {
    Inproc,
    Ipc,
    Tcp,
}

/// A fresh endpoint to bind on `tp` (unique name, temp path, port 0).
pub(crate) fn endpoint(tp: Tp, dir: &tempfile::TempDir) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    match tp {
        Tp::Inproc => format!("inproc://test-{}-{n}", std::process::id()),
        Tp::Ipc => format!("ipc://{}/s{n}.sock", dir.path().display()),
        Tp::Tcp => "tcp://127.0.0.1:0".to_string(),
    }
}

/// Runs a test body under a watchdog: a hang fails the test instead of
/// blocking the suite. The limit is a safety net, not an assertion on speed.
pub(crate) async fn watchdog<F: Future<Output = ()>>(f: F) {
    watchdog_for(Duration::from_secs(60), f).await
}

/// [`watchdog`] with a limit of the test's own, for tests that drive
/// outside systems (containers) and take minutes. The body is dropped when
/// the limit passes, so guards it owns clean up before the test fails.
pub(crate) async fn watchdog_for<F: Future<Output = ()>>(limit: Duration, f: F) {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("test hung: watchdog fired after {limit:?}"));
}

/// Repeats `attempt` until it returns `Some`, at most `tries` times,
/// waiting `pause` in between. For waiting on background work (a
/// subscription reaching a publisher, a reconnect) by observing behaviour.
pub(crate) async fn eventually<T, F, Fut>(tries: usize, pause: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..tries {
        if let Some(v) = attempt().await {
            return v;
        }
        tokio::time::sleep(pause).await;
    }
    panic!("condition not reached after {tries} tries");
}

/// Declares one test per transport: `name::inproc`, `name::ipc`, `name::tcp`.
#[macro_export]
macro_rules! per_transport {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn inproc() {
                common::watchdog($body(common::Tp::Inproc)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ipc() {
                common::watchdog($body(common::Tp::Ipc)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                common::watchdog($body(common::Tp::Tcp)).await
            }
        }
    };
}

/// Fast failure detection so node tests finish quickly; the tests wait on
/// behaviour (membership reached, events seen), never on elapsed time.
pub(crate) fn fast() -> zfabric::node::NodeConfig {
    zfabric::node::NodeConfig {
        membership: zfabric::node::MembershipConfig {
            heartbeat_interval: Duration::from_millis(50),
            suspect_after: Duration::from_millis(300),
            gone_after: Duration::from_secs(1),
            forget_after: Duration::from_secs(5),
        },
        ..zfabric::node::NodeConfig::default()
    }
}

/// Waits (bounded) until every node sees the other `n - 1`.
pub(crate) async fn converge(nodes: &[&zfabric::node::Node]) {
    for _ in 0..400 {
        if nodes.iter().all(|n| n.members().len() == nodes.len() - 1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen: Vec<usize> = nodes.iter().map(|n| n.members().len()).collect();
    panic!("fabric did not converge: members seen per node {seen:?}");
}

/// Whether an outside tool this test needs is installed. Where it is not,
/// the test says so on stderr and is skipped, unless `ZFABRIC_REQUIRE_ALL`
/// is set (`.ci/run` sets it): then a missing tool fails the test.
pub(crate) fn tool_available(tool: &str, version_arg: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg(version_arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("ZFABRIC_REQUIRE_ALL").is_none(),
            "{tool} is required (ZFABRIC_REQUIRE_ALL is set) but not installed"
        );
        eprintln!("SKIP: {tool} is not installed; this test did not run");
    }
    ok
}

/// Whether python3 can `import` each of `modules`, installing `packages`
/// from PyPI first if it cannot (pip, quietly). Where they are still
/// missing: a SKIP line and `false`, or a failure under
/// `ZFABRIC_REQUIRE_ALL`. Callers cache the answer (one check per test
/// binary).
pub(crate) fn python_with(modules: &str, packages: &[&str]) -> bool {
    if !tool_available("python3", "--version") {
        return false;
    }
    let imports = || {
        std::process::Command::new("python3")
            .args(["-c", &format!("import {modules}")])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if imports() {
        return true;
    }
    if !packages.is_empty() {
        let _ = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages)
            .status();
    }
    let ok = imports();
    if !ok {
        assert!(
            std::env::var_os("ZFABRIC_REQUIRE_ALL").is_none(),
            "python3 with {modules} is required (ZFABRIC_REQUIRE_ALL is set) but missing \
             (pip install {})",
            packages.join(" ")
        );
        eprintln!("SKIP: python3 with {modules} is not installed; this test did not run");
    }
    ok
}

/// The process's metrics recorder for tests that read counters: installed
/// on first use (one per test binary).
fn snapshotter() -> &'static metrics_util::debugging::Snapshotter {
    static S: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
        std::sync::OnceLock::new();
    S.get_or_init(|| {
        let r = metrics_util::debugging::DebuggingRecorder::new();
        let s = r.snapshotter();
        r.install().expect("recorder installed once");
        s
    })
}

/// Current value of counter `name` with the given `reason` label (0 if
/// it was never counted). Installs the test recorder on first use.
pub(crate) fn counter(name: &str, reason: &str) -> u64 {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, _, _, _)| {
            k.key().name() == name
                && k.key()
                    .labels()
                    .any(|l| l.key() == "reason" && l.value() == reason)
        })
        .map(|(_, _, _, v)| match v {
            metrics_util::debugging::DebugValue::Counter(c) => c,
            _ => 0,
        })
        .sum()
}

/// Current value of traffic counter `name` for `pattern` over
/// `transport` (0 if never registered). Installs the test recorder on
/// first use: read a baseline before opening the sockets to count.
pub(crate) fn traffic(name: &str, pattern: &str, transport: &str) -> u64 {
    let has = |k: &metrics_util::CompositeKey, key: &str, value: &str| {
        k.key()
            .labels()
            .any(|l| l.key() == key && l.value() == value)
    };
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, _, _, _)| {
            k.key().name() == name && has(k, "pattern", pattern) && has(k, "transport", transport)
        })
        .map(|(_, _, _, v)| match v {
            metrics_util::debugging::DebugValue::Counter(c) => c,
            _ => 0,
        })
        .sum()
}

/// The greeting and READY command of a raw NULL peer of `socket_type`.
pub(crate) fn zmtp_hello(socket_type: &str) -> Vec<u8> {
    let mut g = vec![0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[12..16].copy_from_slice(b"NULL");
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type.as_bytes());
    g.push(0x04);
    g.push(body.len() as u8);
    g.extend_from_slice(&body);
    g
}

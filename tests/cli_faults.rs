//! Faults and rough edges of the terminal commands, run as real processes:
//! a server killed and restarted under a caller, errors a newcomer meets,
//! what a process leaves behind. Every child is killed when its test ends
//! (pass or fail), and every wait is bounded.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::proc::{Lines, Reap};

fn zfabric() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zfabric"))
}

const WATCHDOG: Duration = Duration::from_secs(60);

/// `zfabric serve --service echo` on `bind`; its endpoint (port resolved)
/// and its stderr.
fn serve(bind: &str) -> (Reap, String, Lines) {
    serve_with(bind, &[])
}

/// `serve` with more arguments (`--delay-us N`, …).
fn serve_with(bind: &str, more: &[&str]) -> (Reap, String, Lines) {
    let mut child = Reap(
        zfabric()
            .args(["serve", "--bind", bind, "--service", "echo"])
            .args(more)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = Lines::of(child.0.stdout.take().unwrap());
    let err = Lines::of(child.0.stderr.take().unwrap());
    let first = out.find("serving", WATCHDOG);
    let ep = first.split_whitespace().last().unwrap().to_owned();
    (child, ep, err)
}

/// Stops a child with SIGINT and waits for it (bounded by the reader).
fn interrupt(child: &mut Reap) {
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
}

/// The figure after `word` in a line such as `served 42 requests`.
fn figure_after(line: &str, word: &str) -> u64 {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == word {
            return it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    panic!("no {word:?} in {line:?}");
}

/// Finding 3 of issue 14: `req` against a `serve` that is SIGKILLed and
/// restarted on the same endpoint 2 s later burnt its whole count on
/// instant `circuit open` failures and never reached the restarted
/// server. Fault: SIGKILL, restart after 2 s. Load: 300 sequential
/// requests with a 1 s deadline each. Expected: the restarted server
/// answers the rest, and the failures are those the outage explains
/// (each bounded by its deadline), not hundreds of instant ones.
#[test]
fn a_caller_reaches_a_server_that_was_killed_and_restarted_on_the_same_endpoint() {
    // The first server answers slowly (50 ms), so that no reply of its
    // slips in between the tenth one and the SIGKILL: every reply after
    // the tenth is then the restarted server's.
    let (mut first, ep, _first_err) = serve_with("tcp://127.0.0.1:0", &["--delay-us", "50000"]);
    let count = 300u64;
    let mut req = Reap(
        zfabric()
            .args(["req", "--connect", &ep, "--service", "echo", "--data", "1"])
            .args(["--count", &count.to_string(), "--timeout", "1000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = Lines::of(req.0.stdout.take().unwrap());
    let req_err = Lines::of(req.0.stderr.take().unwrap());
    // Ten replies from the first server, then the fault.
    for _ in 0..10 {
        assert_eq!(out.next(WATCHDOG).as_deref(), Some("1"));
    }
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2)); // the fault's timing
    let (mut second, ep2, second_err) = serve(&ep);
    assert_eq!(ep2, ep, "restarted on the same endpoint");

    let lines = out.rest(Duration::from_secs(120));
    let status = req.0.wait().unwrap();
    let summary = req_err.find("replies", WATCHDOG);
    interrupt(&mut second);
    let served = figure_after(&second_err.find("served", WATCHDOG), "served");

    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("error")).collect();
    let replies = lines.iter().filter(|l| *l == "1").count() as u64 + 10;
    println!(
        "fault: SIGKILL + restart after 2 s; {count} requests: {replies} replies, {} errors \
         ({summary}); the restarted server served {served}",
        errors.len()
    );
    assert!(
        served > 0,
        "the restarted server got no request: {:?}",
        &errors[..errors.len().min(15)]
    );
    assert_eq!(replies + errors.len() as u64, count, "{lines:?}");
    assert_eq!(served, replies - 10, "every later reply came from it");
    // The outage lasts about 2.5 s (2 s down, then up to a heartbeat to
    // be found): with 1 s deadlines that explains a few failures, plus
    // those that hit the dead member before its breaker opened (the
    // breaker's minimum of 10 calls).
    assert!(
        errors.len() <= 20,
        "{} failures for a 2 s outage: {:?}",
        errors.len(),
        &errors[..errors.len().min(30)]
    );
    assert_eq!(status.code(), Some(1), "some requests failed: exit 1");
}

/// Finding 5b of issue 14: binding an endpoint that another process holds
/// exited 1 (a run-time failure) instead of 2 (bad usage/config), for
/// every command that binds.
#[test]
fn binding_an_address_in_use_exits_2_for_every_command() {
    let (_holder, ep, _err) = serve("tcp://127.0.0.1:0");
    for args in [
        &["serve", "--bind", &ep, "--service", "other"][..],
        &["pull", "--bind", &ep],
        &["sub", "--bind", &ep, "--topic", "t"],
        &["pub", "--bind", &ep, "--topic", "t", "--data", "1"],
    ] {
        let mut child = Reap(
            zfabric()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let err = Lines::of(child.0.stderr.take().unwrap());
        let line = err.find("zfabric:", WATCHDOG);
        let status = child.0.wait().unwrap();
        assert!(line.contains("address in use"), "{args:?}: {line}");
        assert_eq!(status.code(), Some(2), "{args:?}: {line}");
    }
}

/// Writes a `zfabric node` config file.
fn node_config(dir: &std::path::Path, name: &str, seeds: &[&str]) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nbind = [\"tcp://127.0.0.1:0\"]\nseeds = [{}]\n\
             [[service]]\nname = \"{name}-svc\"\nhandler = \"echo\"\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    path
}

/// `zfabric node --config`; its endpoint and stdout.
fn node(config: &std::path::Path) -> (Reap, String, Lines) {
    let mut child = Reap(
        zfabric()
            .args(["node", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = Lines::of(child.0.stdout.take().unwrap());
    let first = out.find("listening on", WATCHDOG);
    assert!(!first.contains("PeerId("), "{first}");
    let ep = first.split_whitespace().last().unwrap().to_owned();
    (child, ep, out)
}

/// Finding 5d of issue 14: membership lines and errors printed
/// `PeerId(5494358391498376780)`; a member is named (its id in hex only
/// to tell members of one name apart), also once it is gone.
#[test]
fn membership_lines_name_members_even_once_they_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (_pricing, ep, out) = node(&node_config(dir.path(), "pricing", &[]));
    let (mut ledger, _, _ledger_out) = node(&node_config(dir.path(), "ledger", &[&ep]));
    let joined = out.find("joined", WATCHDOG);
    ledger.0.kill().unwrap(); // SIGKILL: it is found gone by silence
    ledger.0.wait().unwrap();
    let gone = out.find("gone", WATCHDOG);
    for line in [&joined, &gone] {
        assert!(line.contains("ledger"), "{line}");
        assert!(!line.contains("PeerId("), "{line}");
    }
}

/// Runs `zfabric req` and returns its exit code and stderr.
fn req(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Reap(
        zfabric()
            .arg("req")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let err = Lines::of(child.0.stderr.take().unwrap());
    let line = err.find("zfabric:", WATCHDOG);
    (child.0.wait().unwrap().code(), line)
}

/// Finding 5a of issue 14: `req` said the same thing, after the full
/// timeout, whether nothing listened at the endpoint or the server there
/// served another service. Now each has its own message, and the refused
/// connection and the unknown service are known well before the timeout
/// (not asserted: the messages say what was known).
#[test]
fn req_tells_a_dead_endpoint_from_an_unknown_service() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("tcp://127.0.0.1:{port}");
    let (code, line) = req(&["--connect", &dead, "--service", "echo", "--data", "1"]);
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.contains(&format!("no member reachable at {dead}")) && line.contains("refused"),
        "{line}"
    );
    assert!(!line.contains("serves"), "{line}");

    let dir = tempfile::tempdir().unwrap();
    let gone = format!("ipc://{}/nobody.sock", dir.path().display());
    let (code, line) = req(&["--connect", &gone, "--service", "echo", "--data", "1"]);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("no member reachable at"), "{line}");

    let (_server, ep, _err) = serve("tcp://127.0.0.1:0");
    let (code, line) = req(&["--connect", &ep, "--service", "nope", "--data", "1"]);
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.contains(&format!(
            "{ep} is up (serve-echo) but serves no service \"nope\""
        )) && line.contains("it serves [\"echo\"]"),
        "{line}"
    );
}

/// The `zfabric-PID-XXXXXXXX` private directories in `tmp`.
fn private_dirs(tmp: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("zfabric-"))
        .collect();
    v.sort();
    v
}

/// Finding 5c of issue 14: every process left its private ipc directory
/// (`/tmp/zfabric-PID-*`) behind. A command that exits cleanly leaves
/// none, and a process starting sweeps those of dead processes (same
/// user, the exact name pattern, PID not alive), not those of live ones.
#[test]
fn commands_leave_no_private_directory_and_stale_ones_are_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let with_tmp = |args: &[&str]| {
        let out = zfabric()
            .env("TMPDIR", tmp.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A server in its own temp dir, called, then stopped with SIGINT.
    let mut server = Reap(
        zfabric()
            .env("TMPDIR", tmp.path())
            .args(["serve", "--bind", "tcp://127.0.0.1:0", "--service", "echo"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = Lines::of(server.0.stdout.take().unwrap());
    let err = Lines::of(server.0.stderr.take().unwrap());
    let ep = out
        .find("serving", WATCHDOG)
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    assert_eq!(private_dirs(tmp.path()).len(), 1, "the server's own");

    // A stale directory of a dead process, and one of a live process.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = format!("zfabric-{dead_pid}-0badcafe");
    let live = format!("zfabric-{}-0badcafe", std::process::id());
    let unrelated = format!("zfabric-{dead_pid}-notmine");
    for d in [&stale, &live, &unrelated] {
        std::fs::create_dir(tmp.path().join(d)).unwrap();
    }

    let (code, e) = with_tmp(&["req", "--connect", &ep, "--service", "echo", "--data", "1"]);
    assert_eq!(code, Some(0), "{e}");
    assert!(!e.contains("Could not delete"), "{e}");
    let (code, e) = with_tmp(&["tour", "--round-trips", "5", "--messages", "100"]);
    assert_eq!(code, Some(0), "{e}");
    assert!(!e.contains("Could not delete"), "{e}");
    interrupt(&mut server);
    err.find("served", WATCHDOG);
    server.0.wait().unwrap();

    let left = private_dirs(tmp.path());
    assert_eq!(left, {
        let mut v = vec![live.clone(), unrelated.clone()];
        v.sort();
        v
    });
}

/// Finding 5f of issue 14: `zfabric run --split` was silent for about
/// 10 s per node, starting its child processes one at a time (each child
/// waited to see the whole fabric, which the later ones had not joined
/// yet). Now they start together and each is reported ready; the run
/// leaves no directory behind either (finding 5c).
#[test]
fn a_split_run_reports_its_children_starting_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/patterns/pipeline.toml");
    let mut child = Reap(
        zfabric()
            .env("TMPDIR", tmp.path())
            .args([
                "run",
                file,
                "--transport",
                "tcp",
                "--split",
                "--duration",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let err = Lines::of(child.0.stderr.take().unwrap());
    let starting = err.find("starting", WATCHDOG);
    let total = figure_after(&starting, "starting");
    assert!(starting.contains("one process each"), "{starting}");
    let last = err.find(&format!("({total} of {total})"), WATCHDOG);
    assert!(last.contains("ready"), "{last}");
    let rest = err.rest(Duration::from_secs(60));
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{rest:?}");
    assert!(
        !rest.iter().any(|l| l.contains("Could not delete")),
        "{rest:?}"
    );
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

//! Durable streams across processes, with real SIGKILLs: `zfabric stream
//! serve` killed and restarted on its directory under a consumer group,
//! a group member killed (its partitions move to the others), a member
//! joining (a rebalance). Nothing is lost; the only records handed out
//! twice are the killed member's last uncommitted batch. Every child is
//! killed when the test ends, every wait is bounded.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proc::{Lines, Reap};
use parking_lot::Mutex;

fn zfabric() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zfabric"))
}

const WATCHDOG: Duration = Duration::from_secs(60);

/// `zfabric stream serve` on `bind`; its endpoint.
fn producer(dir: &std::path::Path, bind: &str) -> (Reap, String) {
    let mut child = Reap(
        zfabric()
            .args(["stream", "serve", "--stream", "ev", "--partitions", "4"])
            .args(["--fsync", "always", "--bind", bind])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = Lines::of(child.0.stdout.take().unwrap());
    let first = out.find("serving stream", WATCHDOG);
    let ep = first.split_whitespace().last().unwrap().to_owned();
    (child, ep)
}

/// `(partition, offset)` → who printed it, in order.
type Seen = Arc<Mutex<HashMap<(u64, u64), Vec<&'static str>>>>;

/// A member of group `g`, printing records as JSON; a thread records them.
fn member(ep: &str, name: &'static str, seen: &Seen) -> Reap {
    let mut child = Reap(
        zfabric()
            .args(["stream", "tail", "--connect", ep, "--stream", "ev"])
            .args(["--group", "g", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = child.0.stdout.take().unwrap();
    let seen = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let key = (
                v["partition"].as_u64().unwrap(),
                v["offset"].as_u64().unwrap(),
            );
            seen.lock().entry(key).or_default().push(name);
        }
    });
    child
}

fn append(ep: &str, per_partition: u32) {
    for p in 0..4 {
        let st = zfabric()
            .args(["stream", "append", "--connect", ep, "--stream", "ev"])
            .args(["--partition", &p.to_string(), "--data", "{\"n\":1}"])
            .args(["--count", &per_partition.to_string(), "--batch", "10"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "append to partition {p} failed");
    }
}

fn until(what: &str, f: impl Fn() -> bool) {
    let give_up = Instant::now() + WATCHDOG;
    while !f() {
        assert!(Instant::now() < give_up, "not reached: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &mut Reap) {
    let pid = child.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let give_up = Instant::now() + WATCHDOG;
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < give_up, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_group_loses_nothing_through_a_killed_producer_a_killed_member_and_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("ev");
    let (mut prod, ep) = producer(&sdir, "tcp://127.0.0.1:0");
    let seen: Seen = Arc::default();
    let distinct = || seen.lock().len();
    let mut a = member(&ep, "a", &seen);
    let mut b = member(&ep, "b", &seen);
    append(&ep, 100);
    until("the first 400", || distinct() == 400);

    // The producer is SIGKILLed and restarted on its directory and port.
    prod.0.kill().unwrap();
    prod.0.wait().unwrap();
    let (p2, ep2) = producer(&sdir, &ep);
    assert_eq!(ep2, ep);
    prod = p2;
    append(&ep, 100);
    until("800 after the producer's restart", || distinct() == 800);
    let twice_before_kill = seen.lock().values().filter(|v| v.len() > 1).count();

    // A member is SIGKILLed: its partitions move to b once its lease ends.
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    append(&ep, 100);
    until("1200 after a member died", || distinct() == 1200);

    // A member joins: some partitions move to it.
    let mut c = member(&ep, "c", &seen);
    until("c took a partition", || {
        append(&ep, 5);
        seen.lock().values().any(|v| v.contains(&"c"))
    });
    let expected = {
        append(&ep, 100);
        // What was appended in all: read it back from the host.
        let out = zfabric()
            .args([
                "stream",
                "info",
                "--connect",
                &ep,
                "--stream",
                "ev",
                "--json",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["end"].as_u64().unwrap())
            .sum::<u64>() as usize
    };
    until("everything", || distinct() == expected);
    sigterm(&mut b);
    sigterm(&mut c);
    sigterm(&mut prod);

    let seen = seen.lock();
    assert_eq!(seen.len(), expected, "records lost");
    assert_eq!(
        twice_before_kill, 0,
        "the producer's restart made a record twice"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, v)| v.len() > 1).collect();
    // Handed out twice only where the killed member had processed and not
    // yet committed: once by a, once by its successor.
    for (k, v) in &twice {
        assert_eq!(v.len(), 2, "{k:?} handed out {} times: {v:?}", v.len());
        assert_eq!(
            v[0], "a",
            "{k:?} was handed out twice, not after a's death: {v:?}"
        );
    }
    assert!(
        twice.len() <= 4 * 256,
        "more than one batch per partition redone"
    );
    eprintln!(
        "{} records, 0 lost; {} redone after the SIGKILLed member's last uncommitted batch",
        seen.len(),
        twice.len()
    );
}

//! The members of a run: nodes in this process, or child processes (this
//! same binary in child mode), and the line protocol between the driver
//! and a child over the child's stdin and stdout.
//!
//! The protocol, one line each way:
//! - child → driver: `READY {"gateway":…}` once its node sees the fabric,
//!   `PROBE <n>` when its socket roles have seen `n` probes, `STATS {…}`
//!   (its [`NodeStats`]) when its stdin closes;
//! - driver → child: `slow <ms>`, `fail`, `heal`; closing stdin asks for
//!   the stats and the end. `kill` is the OS's: the driver kills it.
//!
//! Guarantees: a killed member reports `killed` (with the counts it had,
//! in-process); a child that does not say READY within 20 s, or STATS
//! within 10 s of being asked, is an error or reported killed, never a
//! hang. Does not: decide when faults happen (the timeline does).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};

use super::spec::{FaultKind, NodeSpec, Spec};
use super::world::{self, DriverEps, LocalNode, NodeStats};
use super::RunArgs;
use crate::app::{BoxError, UsageError};

/// A line a child prints on its stdout.
#[derive(Debug, Clone, PartialEq)]
enum Said {
    /// Its node is up and sees the fabric.
    Ready(Ready),
    /// Its socket roles have seen this many probes.
    Probes(u64),
    /// Its final counts.
    Stats(Box<NodeStats>),
}

/// What a child says when it is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ready {
    /// Its gateway's endpoint, if it runs one.
    gateway: Option<String>,
}

impl Said {
    fn line(&self) -> Result<String, BoxError> {
        Ok(match self {
            Said::Ready(r) => format!("READY {}", serde_json::to_string(r)?),
            Said::Probes(n) => format!("PROBE {n}"),
            Said::Stats(s) => format!("STATS {}", serde_json::to_string(s)?),
        })
    }

    /// `None` for anything else a child prints.
    fn parse(line: &str) -> Option<Self> {
        if let Some(j) = line.strip_prefix("READY ") {
            serde_json::from_str(j).ok().map(Said::Ready)
        } else if let Some(n) = line.strip_prefix("PROBE ") {
            Some(Said::Probes(n.parse().unwrap_or(0)))
        } else if let Some(j) = line.strip_prefix("STATS ") {
            serde_json::from_str(j)
                .ok()
                .map(|s| Said::Stats(Box::new(s)))
        } else {
            None
        }
    }
}

/// A fault the driver sends a child on its stdin.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    Slow {
        ms: f64,
    },
    Fail,
    Heal,
    /// Drop change events (drop_invalidations; 0: until heal).
    Deaf {
        count: u64,
    },
}

impl Order {
    fn line(self) -> String {
        match self {
            Order::Slow { ms } => format!("slow {ms}\n"),
            Order::Fail => "fail\n".into(),
            Order::Heal => "heal\n".into(),
            Order::Deaf { count } => format!("deaf {count}\n"),
        }
    }

    /// `None` for a line that is not an order.
    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("slow"), Some(ms)) => Some(Order::Slow {
                ms: ms.parse().unwrap_or(0.0),
            }),
            (Some("fail"), _) => Some(Order::Fail),
            (Some("heal"), _) => Some(Order::Heal),
            (Some("deaf"), n) => Some(Order::Deaf {
                count: n.and_then(|n| n.parse().ok()).unwrap_or(0),
            }),
            _ => None,
        }
    }
}

/// A node of the run: here, or a child process.
pub(super) enum Member {
    Local {
        name: String,
        node: Option<LocalNode>,
        killed: Option<NodeStats>,
        /// How to start it again (a `restart` fault).
        again: Option<Box<Again>>,
    },
    Child(ChildProc),
}

/// What it takes to start a local node again.
pub(super) struct Again {
    pub(super) spec: NodeSpec,
    pub(super) transport: String,
    pub(super) dir: std::path::PathBuf,
    pub(super) seed: String,
    pub(super) eps: DriverEps,
    pub(super) restarts: u32,
}

/// A node running as a child process.
pub(super) struct ChildProc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    probes: Arc<AtomicU64>,
    stats: Arc<Mutex<Option<NodeStats>>>,
    stats_seen: Arc<tokio::sync::Notify>,
    gateway: Option<String>,
    killed: bool,
    /// How to start it again (a `restart` fault).
    again: Option<Box<(OwnedLaunch, NodeSpec)>>,
}

/// A [`Launch`] that owns its parts.
#[derive(Clone)]
pub(super) struct OwnedLaunch {
    exe: std::path::PathBuf,
    file: std::path::PathBuf,
    transport: String,
    seed: String,
    eps: DriverEps,
    expect: usize,
    data_dir: std::path::PathBuf,
}

impl OwnedLaunch {
    fn of(how: &Launch<'_>) -> Self {
        OwnedLaunch {
            exe: how.exe.to_path_buf(),
            file: how.file.to_path_buf(),
            transport: how.transport.to_owned(),
            seed: how.seed.to_owned(),
            eps: how.eps.clone(),
            expect: how.expect,
            data_dir: how.data_dir.to_path_buf(),
        }
    }

    fn launch(&self) -> Launch<'_> {
        Launch {
            exe: &self.exe,
            file: &self.file,
            transport: &self.transport,
            seed: &self.seed,
            eps: &self.eps,
            expect: self.expect,
            data_dir: &self.data_dir,
        }
    }
}

impl Member {
    /// A member running in this process, started again by `again` on a
    /// `restart` fault.
    pub(super) fn local(name: &str, node: LocalNode, again: Option<Again>) -> Self {
        Member::Local {
            name: name.to_owned(),
            node: Some(node),
            killed: None,
            again: again.map(Box::new),
        }
    }

    pub(super) fn name(&self) -> &str {
        match self {
            Member::Local { name, .. } => name,
            Member::Child(c) => &c.name,
        }
    }

    /// Its node, when it runs in this process and is alive.
    pub(super) fn here(&self) -> Option<&LocalNode> {
        match self {
            Member::Local { node, .. } => node.as_ref(),
            Member::Child(_) => None,
        }
    }

    /// Probes its socket roles have seen (a dead local member: all of
    /// them).
    pub(super) fn probes(&self) -> u64 {
        match self {
            Member::Local { node: Some(n), .. } => n.counters.probes(),
            Member::Local { .. } => u64::MAX,
            Member::Child(c) => c.probes.load(Ordering::Relaxed),
        }
    }

    pub(super) fn gateway(&self) -> Option<String> {
        match self {
            Member::Local { node: Some(n), .. } => {
                n.gateway.as_ref().map(|g| g.endpoints()[0].to_string())
            }
            Member::Local { .. } => None,
            Member::Child(c) => c.gateway.clone(),
        }
    }

    /// Puts it under fault `kind`.
    pub(super) async fn apply(&mut self, kind: FaultKind, delay_ms: f64, count: u64) {
        match self {
            Member::Local {
                name,
                node,
                killed,
                again,
            } => match kind {
                FaultKind::Kill => {
                    if let Some(n) = node.take() {
                        *killed = Some(n.counters.snapshot(name, true));
                        drop(n);
                    }
                }
                FaultKind::Restart => {
                    let (Some(n), Some(a)) = (node.take(), again.as_mut()) else {
                        return;
                    };
                    let counters = n.counters.clone();
                    drop(n);
                    a.restarts += 1;
                    let life = world::Life {
                        restarts: a.restarts,
                        counters: counters.clone(),
                        data_dir: &a.dir,
                    };
                    match world::start_node(&a.spec, &a.transport, &a.dir, &a.seed, &a.eps, life)
                        .await
                    {
                        Ok(n) => *node = Some(n),
                        Err(e) => {
                            eprintln!("node {name} did not start again: {e}");
                            *killed = Some(counters.snapshot(name, true));
                        }
                    }
                }
                FaultKind::Slow => node.iter().for_each(|n| n.fault.slow(delay_ms)),
                FaultKind::Fail => node.iter().for_each(|n| n.fault.fail()),
                FaultKind::Heal => node.iter().for_each(|n| n.fault.heal()),
                FaultKind::DropInvalidations => {
                    node.iter().for_each(|n| n.fault.drop_invalidations(count))
                }
            },
            Member::Child(c) => {
                let order = match kind {
                    FaultKind::Kill => {
                        c.killed = true;
                        let _ = c.child.start_kill();
                        return;
                    }
                    FaultKind::Restart => {
                        let _ = c.child.start_kill();
                        let _ = tokio::time::timeout(Duration::from_secs(5), c.child.wait()).await;
                        let Some(again) = c.again.take() else {
                            c.killed = true;
                            return;
                        };
                        match spawn_child(&again.0.launch(), &again.1).await {
                            Ok(Member::Child(mut fresh)) => {
                                fresh.again = Some(again);
                                *c = fresh;
                            }
                            Ok(_) => c.killed = true,
                            Err(e) => {
                                eprintln!("node {} did not start again: {e}", c.name);
                                c.killed = true;
                            }
                        }
                        return;
                    }
                    FaultKind::Slow => Order::Slow { ms: delay_ms },
                    FaultKind::Fail => Order::Fail,
                    FaultKind::Heal => Order::Heal,
                    FaultKind::DropInvalidations => Order::Deaf { count },
                };
                if let Some(stdin) = c.stdin.as_mut() {
                    let _ = stdin.write_all(order.line().as_bytes()).await;
                    let _ = stdin.flush().await;
                }
            }
        }
    }

    /// Stops it and returns its final counts.
    pub(super) async fn finish(self) -> NodeStats {
        let killed = |name| NodeStats {
            name,
            killed: true,
            ..NodeStats::default()
        };
        match self {
            Member::Local {
                name,
                node,
                killed: k,
                ..
            } => match (node, k) {
                (Some(n), _) => n.counters.snapshot(&name, false),
                (None, Some(k)) => k,
                (None, None) => killed(name),
            },
            Member::Child(mut c) => {
                if c.killed {
                    let _ = c.child.wait().await;
                    return killed(c.name);
                }
                drop(c.stdin.take());
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), c.stats_seen.notified()).await;
                let stats = c.stats.lock().ok().and_then(|s| s.clone());
                let _ = tokio::time::timeout(Duration::from_secs(5), c.child.wait()).await;
                let _ = c.child.start_kill();
                stats.unwrap_or_else(|| killed(c.name))
            }
        }
    }
}

/// How a child is started.
pub(super) struct Launch<'a> {
    pub(super) exe: &'a Path,
    pub(super) file: &'a Path,
    pub(super) transport: &'a str,
    pub(super) seed: &'a str,
    pub(super) eps: &'a DriverEps,
    /// Members it must see before it says READY.
    pub(super) expect: usize,
    /// Where data files are kept (the run's directory, kept across
    /// restarts).
    pub(super) data_dir: &'a Path,
}

/// Starts `node` as a child process and waits until it is READY.
pub(super) async fn spawn_child(how: &Launch<'_>, node: &NodeSpec) -> Result<Member, BoxError> {
    let mut child = tokio::process::Command::new(how.exe)
        .arg("run")
        .arg(how.file)
        .args([
            "--transport",
            how.transport,
            "--child",
            &node.name,
            "--seed",
            how.seed,
        ])
        .args(["--driver-eps", &serde_json::to_string(how.eps)?])
        .args(["--expect", &how.expect.to_string()])
        .arg("--data-dir")
        .arg(how.data_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    let stdin = child.stdin.take();
    let probes = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new(None));
    let stats_seen = Arc::new(tokio::sync::Notify::new());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Ready>();
    {
        let (probes, stats, stats_seen) = (probes.clone(), stats.clone(), stats_seen.clone());
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match Said::parse(&line) {
                    Some(Said::Ready(r)) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(r);
                        }
                    }
                    Some(Said::Probes(n)) => probes.store(n, Ordering::Relaxed),
                    Some(Said::Stats(s)) => {
                        if let Ok(mut slot) = stats.lock() {
                            *slot = Some(*s);
                        }
                        stats_seen.notify_one();
                    }
                    None if line.starts_with("STATS ") => stats_seen.notify_one(),
                    None => {}
                }
            }
        });
    }
    let ready = tokio::time::timeout(Duration::from_secs(20), ready_rx)
        .await
        .map_err(|_| format!("node {} did not start within 20 s", node.name))?
        .map_err(|_| format!("node {} exited before it was ready", node.name))?;
    Ok(Member::Child(ChildProc {
        name: node.name.clone(),
        child,
        stdin,
        probes,
        stats,
        stats_seen,
        gateway: ready.gateway,
        killed: false,
        again: Some(Box::new((OwnedLaunch::of(how), node.clone()))),
    }))
}

fn say(said: &Said) -> Result<(), BoxError> {
    let line = said.line()?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    Ok(())
}

/// Child mode: start one node, say READY, obey orders on stdin, say
/// STATS when stdin closes.
pub(super) async fn child(args: &RunArgs, spec: &Spec, name: &str) -> Result<(), BoxError> {
    let node_spec = spec
        .nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| UsageError(format!("no node named {name:?}")))?;
    let seed = args
        .seed
        .clone()
        .ok_or_else(|| UsageError("--child needs --seed".into()))?;
    let eps: DriverEps = match &args.driver_eps {
        Some(j) => serde_json::from_str(j)?,
        None => DriverEps::default(),
    };
    // Inside the driver's directory when it gives one, so that what a
    // killed child leaves there goes when the run ends.
    let dir = match &args.data_dir {
        Some(d) => {
            let mine = d.join(format!("{name}-{}", std::process::id()));
            std::fs::create_dir_all(&mine)?;
            super::TempDir(mine)
        }
        None => super::tempfile_dir()?,
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(|| dir.to_path_buf());
    let local = world::start_node(
        node_spec,
        &args.transport,
        &dir,
        &seed,
        &eps,
        world::Life::first(&data_dir),
    )
    .await?;
    for _ in 0..1000 {
        if local.node.members().len() >= args.expect {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gateway = local.gateway.as_ref().map(|g| g.endpoints()[0].to_string());
    say(&Said::Ready(Ready { gateway }))?;
    let counters = local.counters.clone();
    let probes = tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let now = counters.probes();
            if now != seen {
                seen = now;
                let _ = say(&Said::Probes(now));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match Order::parse(&line) {
            Some(Order::Slow { ms }) => local.fault.slow(ms),
            Some(Order::Fail) => local.fault.fail(),
            Some(Order::Heal) => local.fault.heal(),
            Some(Order::Deaf { count }) => local.fault.drop_invalidations(count),
            None => {}
        }
    }
    probes.abort();
    say(&Said::Stats(Box::new(local.counters.snapshot(name, false))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_child_says_reads_back_the_same() {
        let stats = NodeStats {
            name: "w".into(),
            lost: 3,
            latency_us: vec![(5, 2)],
            ..NodeStats::default()
        };
        for said in [
            Said::Ready(Ready { gateway: None }),
            Said::Ready(Ready {
                gateway: Some("tcp://127.0.0.1:1".into()),
            }),
            Said::Probes(7),
            Said::Stats(Box::new(stats)),
        ] {
            let line = said.line().unwrap();
            assert_eq!(Said::parse(&line), Some(said), "{line}");
        }
        assert_eq!(
            Said::Ready(Ready { gateway: None }).line().unwrap(),
            r#"READY {"gateway":null}"#
        );
        assert_eq!(Said::parse("something else"), None);
    }

    #[test]
    fn orders_read_back_the_same_and_junk_is_ignored() {
        for o in [
            Order::Slow { ms: 12.5 },
            Order::Fail,
            Order::Heal,
            Order::Deaf { count: 7 },
            Order::Deaf { count: 0 },
        ] {
            assert_eq!(Order::parse(&o.line()), Some(o));
        }
        assert_eq!(Order::parse("slow"), None);
        assert_eq!(Order::parse("dance"), None);
        assert_eq!(Order::parse("slow x"), Some(Order::Slow { ms: 0.0 }));
        assert_eq!(Order::parse("deaf"), Some(Order::Deaf { count: 0 }));
    }
}

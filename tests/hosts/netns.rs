//! Several hosts on one machine: Linux network namespaces joined by veth
//! pairs to a bridge, each with its own address in a private /24. A host
//! runs the release `zfabric` binary via `ip netns exec`; it can be cut
//! off (nftables drop rules in its namespace), healed, given random loss,
//! and its processes killed. Everything a [`Hosts`] made (processes,
//! namespaces, the bridge) is removed in `Drop`, also when a test panics,
//! and by the watchdog if a scenario hangs.
//!
//! Guarantees: names carry the test process id, so parallel runs do not
//! collide. Not guaranteed: delay (this kernel has no `netem`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether hosts can be made here: root, `ip netns` and `nft`. Where not,
/// says so on stderr (SKIP); under `ZFABRIC_REQUIRE_ALL` it panics.
pub(crate) fn available() -> bool {
    let why = if !is_root() {
        Some("not running as root".to_string())
    } else if !ok(Command::new("ip").args(["netns", "list"])) {
        Some("`ip netns` (iproute2) is unavailable".to_string())
    } else if !ok(Command::new("nft").arg("--version")) {
        Some("`nft` (nftables) is not installed".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            assert!(
                std::env::var_os("ZFABRIC_REQUIRE_ALL").is_none(),
                "the host fault tests need root, iproute2 and nftables (ZFABRIC_REQUIRE_ALL is set): {why}"
            );
            eprintln!("SKIP: host fault tests did not run: {why}");
            false
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn ok(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nft_in(ns: &str, script: &str) {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft runs");
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft in {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the teardown needs, shared with the watchdog.
#[derive(Default)]
struct Owned {
    pids: Vec<u32>,
    namespaces: Vec<String>,
    bridge: Option<String>,
}

impl Owned {
    fn teardown(&mut self) {
        for pid in self.pids.drain(..) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        for ns in self.namespaces.drain(..) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if let Some(b) = self.bridge.take() {
            let _ = Command::new("ip").args(["link", "del", &b]).status();
        }
    }
}

/// One host: a namespace with an address.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// The namespace's name.
    pub(crate) ns: String,
    /// Its address on the bridge.
    pub(crate) ip: String,
}

/// A bridge and `n` hosts on it; torn down on drop.
pub(crate) struct Hosts {
    /// The hosts, in order.
    pub(crate) hosts: Vec<Host>,
    /// The test's own address on the switch (for reading metrics).
    pub(crate) gateway: String,
    owned: Arc<Mutex<Owned>>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Hosts {
    /// Makes `n` hosts; a watchdog tears everything down and exits the
    /// test process (failing it) if the scenario is not over in `limit`.
    pub(crate) fn new(n: usize, limit: Duration) -> Hosts {
        let pid = std::process::id();
        let net = 10 + pid % 240; // a /24 per test process
        let owned = Arc::new(Mutex::new(Owned::default()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bridge = format!("zfg{}", pid % 1_000_000);
        let gateway = format!("10.77.{net}.1");
        // Leftovers of an earlier run with the same pid.
        let _ = Command::new("ip")
            .args(["link", "del", &bridge])
            .stderr(Stdio::null())
            .status();
        let mut me = Hosts {
            hosts: Vec::new(),
            gateway: gateway.clone(),
            owned: owned.clone(),
            done: done.clone(),
        };
        // The bridge lives in a namespace of its own (the "switch"): the
        // host's firewall (e.g. Docker's FORWARD policy of drop, applied
        // to bridged frames by br_netfilter) does not see its traffic.
        let sw = format!("zf-{pid}-sw");
        let _ = Command::new("ip")
            .args(["netns", "del", &sw])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &sw]);
        owned.lock().unwrap().namespaces.push(sw.clone());
        let in_sw = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &sw];
            v.extend_from_slice(args);
            run(&v);
        };
        in_sw(&["ip", "link", "add", "br0", "type", "bridge"]);
        in_sw(&["ip", "link", "set", "br0", "up"]);
        // The test's own port on the switch, to read the hosts' metrics.
        run(&[
            "ip", "link", "add", &bridge, "type", "veth", "peer", "name", "up0", "netns", &sw,
        ]);
        owned.lock().unwrap().bridge = Some(bridge.clone());
        in_sw(&["ip", "link", "set", "up0", "master", "br0", "up"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            &bridge,
        ]);
        run(&["ip", "link", "set", &bridge, "up"]);
        for k in 0..n {
            let ns = format!("zf-{pid}-{k}");
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
            run(&["ip", "netns", "add", &ns]);
            owned.lock().unwrap().namespaces.push(ns.clone());
            let veth = format!("zfv{}x{k}", pid % 1_000_000);
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            run(&["ip", "link", "set", &veth, "netns", &sw]);
            in_sw(&["ip", "link", "set", &veth, "master", "br0", "up"]);
            let ip = format!("10.77.{net}.{}", 11 + k);
            let exec = |args: &[&str]| {
                let mut v = vec!["ip", "netns", "exec", &ns];
                v.extend_from_slice(args);
                run(&v);
            };
            exec(&["ip", "link", "set", "lo", "up"]);
            exec(&["ip", "link", "set", "eth0", "up"]);
            exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            me.hosts.push(Host { ns, ip });
        }
        let (o, d) = (owned, done);
        std::thread::spawn(move || {
            let until = Instant::now() + limit;
            while Instant::now() < until {
                if d.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("watchdog: scenario hung for {limit:?}; tearing the hosts down");
            o.lock().unwrap().teardown();
            std::process::exit(101);
        });
        me
    }

    /// Starts `zfabric ARGS` on host `k`.
    pub(crate) fn spawn(&self, k: usize, args: &[&str]) -> Proc {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[k].ns])
            .arg(env!("CARGO_BIN_EXE_zfabric"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("zfabric starts in the namespace");
        self.owned.lock().unwrap().pids.push(child.id());
        let out = Lines::of(child.stdout.take().unwrap());
        let err = Lines::of(child.stderr.take().unwrap());
        Proc {
            child,
            out,
            err,
            started: Instant::now(),
        }
    }

    /// Cuts host `k` off: every packet in or out of its link is dropped.
    pub(crate) fn partition(&self, k: usize) {
        nft_in(
            &self.hosts[k].ns,
            "table inet zfpart {\n chain i { type filter hook input priority 0; iifname \"eth0\" drop; }\n \
             chain o { type filter hook output priority 0; oifname \"eth0\" drop; }\n}\n",
        );
    }

    /// Undoes [`Hosts::partition`].
    pub(crate) fn heal(&self, k: usize) {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.hosts[k].ns,
            "nft",
            "delete",
            "table",
            "inet",
            "zfpart",
        ]);
    }

    /// Drops `percent`% of the packets arriving at every host, at random.
    pub(crate) fn random_loss(&self, percent: u32) {
        for h in &self.hosts {
            nft_in(
                &h.ns,
                &format!(
                    "table inet zfloss {{\n chain i {{ type filter hook input priority 0; \
                     iifname \"eth0\" numgen random mod 100 < {percent} drop; }}\n}}\n"
                ),
            );
        }
    }

    /// Undoes [`Hosts::random_loss`].
    pub(crate) fn no_loss(&self) {
        for h in &self.hosts {
            run(&[
                "ip", "netns", "exec", &h.ns, "nft", "delete", "table", "inet", "zfloss",
            ]);
        }
    }

    /// Writes a file for host configs (in a temp dir that lives as long
    /// as the caller keeps it).
    pub(crate) fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.owned.lock().unwrap().teardown();
    }
}

/// A `zfabric` process on a host.
pub(crate) struct Proc {
    /// The child (`ip netns exec` execs zfabric: same pid).
    pub(crate) child: Child,
    /// Its stdout, line by line.
    pub(crate) out: Lines,
    /// Its stderr, line by line.
    pub(crate) err: Lines,
    /// When it was started.
    pub(crate) started: Instant,
}

impl Proc {
    /// SIGKILL, and reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `sig` (e.g. "INT", "TERM").
    pub(crate) fn signal(&self, sig: &str) {
        run(&["kill", &format!("-{sig}"), &self.child.id().to_string()]);
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub(crate) fn wait(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        panic!("process did not exit within {within:?}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A line and when it was read.
pub(crate) type Stamped = (Instant, String);

/// The lines a child prints on one stream, read on a thread so waiting
/// for one is bounded.
pub(crate) struct Lines(mpsc::Receiver<Stamped>);

impl Lines {
    fn of(stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// Skips lines until one contains `needle`; panics after `within`.
    pub(crate) fn find(&self, needle: &str, within: Duration) -> Stamped {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok((t, l)) if l.contains(needle) => return (t, l),
                Ok(_) => continue,
                Err(_) => panic!("no line containing {needle:?} within {within:?}"),
            }
        }
    }

    /// The lines read so far, without waiting.
    pub(crate) fn drain(&self) -> Vec<Stamped> {
        self.0.try_iter().collect()
    }

    /// Every line until the stream ends (bounded by `within`).
    pub(crate) fn rest(&self, within: Duration) -> Vec<Stamped> {
        let until = Instant::now() + within;
        let mut v = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(l) => v.push(l),
                Err(_) => return v,
            }
        }
    }
}

/// Sum of the metric lines at `http://addr/metrics` whose name is `name`
/// and that contain every `labels` fragment (e.g. `side="server"`);
/// `None` when the endpoint does not answer within half a second.
pub(crate) fn metric(addr: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

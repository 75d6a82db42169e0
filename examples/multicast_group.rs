//! Multicast to a group: members join `config`, a sender pushes updates
//! to every member and learns who got each one. Each its own process.
//!
//! In one command (three members and a sender):
//! ```sh
//! cargo run --example multicast_group -- all tcp
//! cargo run --example multicast_group -- all ipc
//! ```
//! Or by hand, one terminal each:
//! ```sh
//! cargo run --example multicast_group -- member m1 tcp://127.0.0.1:7201
//! cargo run --example multicast_group -- member m2 tcp://127.0.0.1:7202 tcp://127.0.0.1:7201
//! cargo run --example multicast_group -- send tcp://127.0.0.1:7201 5
//! ```
//! (`member NAME BIND [SEED]`, `send SEED COUNT`.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zfabric::node::Node;
use zfabric::{RemoteError, Request};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Update {
    version: u32,
    log_level: String,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("member") => {
            let (Some(name), Some(bind)) = (arg(1), arg(2)) else {
                return Err("usage: member NAME BIND [SEED]".into());
            };
            let me = name.to_string();
            let mut b =
                Node::builder(name)
                    .bind(bind)
                    .group("config", move |req: Request<Update>| {
                        let me = me.clone();
                        async move {
                            println!(
                                "{me}: config v{} log_level={}",
                                req.body.version, req.body.log_level
                            );
                            Ok::<_, RemoteError>(())
                        }
                    });
            if let Some(seed) = arg(3) {
                b = b.seed(seed);
            }
            let node = b.start().await?;
            println!("member {name} on {}", node.endpoints()[0]);
            std::future::pending::<()>().await;
            Ok(())
        }
        Some("send") => {
            let seed = arg(1).ok_or("usage: send SEED COUNT")?;
            let count: u32 = arg(2).unwrap_or("5").parse()?;
            let expect: usize = arg(3).unwrap_or("1").parse()?;
            let own = if seed.starts_with("ipc://") {
                format!(
                    "ipc://{}/zfabric-mc-send-{}.sock",
                    std::env::temp_dir().display(),
                    std::process::id()
                )
            } else {
                "tcp://127.0.0.1:0".to_string()
            };
            let node = Node::builder("sender").bind(own).seed(seed).start().await?;
            // Wait (bounded) until the expected members are known.
            for _ in 0..500 {
                if node
                    .members()
                    .iter()
                    .filter(|m| m.groups.iter().any(|g| g == "config"))
                    .count()
                    >= expect
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for version in 1..=count {
                let u = Update {
                    version,
                    log_level: if version % 2 == 0 { "debug" } else { "info" }.into(),
                };
                let r = node.multicast("config", &u, Duration::from_secs(2)).await?;
                println!(
                    "update v{version}: delivered to {} members, failed {}",
                    r.delivered.len(),
                    r.failed.len()
                );
            }
            node.shutdown(Duration::from_millis(500)).await;
            Ok(())
        }
        Some("all") => all(arg(1).unwrap_or("tcp")),
        _ => Err("usage: multicast_group member|send|all ...".into()),
    }
}

fn all(transport: &str) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("zfabric-mc-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ep = |name: &str| match transport {
        "ipc" => format!("ipc://{}/{name}.sock", dir.display()),
        _ => "tcp://127.0.0.1:0".to_string(),
    };
    let mut members = Vec::new();
    let mut seed: Option<String> = None;
    for name in ["m1", "m2", "m3"] {
        let mut cmd = Command::new(&exe);
        cmd.args(["member", name, &ep(name)]);
        if let Some(s) = &seed {
            cmd.arg(s);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        out.read_line(&mut line)?;
        let bound = line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        seed.get_or_insert(bound);
        members.push((child, out));
    }
    let seed = seed.ok_or("no member started")?;
    let out = Command::new(&exe)
        .args(["send", &seed, "3", "3"])
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    for (mut child, _) in members {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!("sender failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

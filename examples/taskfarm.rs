//! A push/pull task farm: a ventilator deals tasks to workers, workers
//! send results to a sink, each its own process.
//!
//! In one command (a sink, a ventilator and three workers):
//! ```sh
//! cargo run --example taskfarm -- all tcp
//! cargo run --example taskfarm -- all ipc
//! ```
//! Or by hand, one terminal each (start the sink and the workers, then
//! press Enter in the ventilator's terminal):
//! ```sh
//! cargo run --example taskfarm -- sink tcp://127.0.0.1:5558 100
//! cargo run --example taskfarm -- ventilator tcp://127.0.0.1:5557 100
//! cargo run --example taskfarm -- worker tcp://127.0.0.1:5557 tcp://127.0.0.1:5558
//! cargo run --example taskfarm -- worker tcp://127.0.0.1:5557 tcp://127.0.0.1:5558
//! ```
//! The ventilator deals tasks round-robin over the workers connected when
//! it starts; the sink prints who did how much and how long it took.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zfabric::{Puller, Pusher};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Serialize, Deserialize)]
struct Task {
    id: u32,
    work_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Done {
    id: u32,
    worker: u32,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("ventilator") => {
            let bind = arg(1).ok_or("usage: ventilator BIND COUNT")?;
            let count: u32 = arg(2).unwrap_or("100").parse()?;
            let push: Pusher<Task> = Pusher::bind(bind).await?;
            println!("ventilator on {}", push.endpoints()[0]);
            // Wait for Enter: the workers must be connected first.
            let mut go = String::new();
            std::io::stdin().read_line(&mut go)?;
            for id in 0..count {
                push.send(&Task {
                    id,
                    work_ms: 1 + u64::from(id % 5),
                })
                .await?;
            }
            // Let the last tasks leave before exiting.
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(())
        }
        Some("worker") => {
            let (Some(tasks), Some(sink)) = (arg(1), arg(2)) else {
                return Err("usage: worker VENTILATOR SINK".into());
            };
            let me = std::process::id();
            let mut pull: Puller<Task> = Puller::connect(tasks).await?;
            let push: Pusher<Done> = Pusher::connect(sink).await?;
            pull.wait_connected().await;
            push.wait_connected().await;
            println!("worker {me} ready");
            loop {
                let t = pull.recv().await?.decode()?;
                tokio::time::sleep(Duration::from_millis(t.work_ms)).await;
                push.send(&Done {
                    id: t.id,
                    worker: me,
                })
                .await?;
            }
        }
        Some("sink") => {
            let bind = arg(1).ok_or("usage: sink BIND COUNT")?;
            let count: u32 = arg(2).unwrap_or("100").parse()?;
            let mut pull: Puller<Done> = Puller::bind(bind).await?;
            println!("sink on {}", pull.endpoints()[0]);
            let mut by_worker: BTreeMap<u32, u32> = BTreeMap::new();
            let mut started = None;
            for _ in 0..count {
                let d = pull.recv().await?.decode()?;
                started.get_or_insert_with(Instant::now);
                *by_worker.entry(d.worker).or_default() += 1;
            }
            let took = started.map(|s| s.elapsed()).unwrap_or_default();
            println!(
                "sink: {count} results in {took:.2?} from {} workers: {by_worker:?}",
                by_worker.len()
            );
            Ok(())
        }
        Some("all") => all(arg(1).unwrap_or("tcp")),
        _ => Err("usage: taskfarm ventilator|worker|sink|all ...".into()),
    }
}

/// Runs the whole farm as separate processes and prints the sink's report.
fn all(transport: &str) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("zfabric-taskfarm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ep = |name: &str| match transport {
        "ipc" => format!("ipc://{}/{name}.sock", dir.display()),
        _ => "tcp://127.0.0.1:0".to_string(),
    };
    let first_line = |child: &mut std::process::Child, prefix: &str| -> Result<String, BoxError> {
        let mut line = String::new();
        let out = child.stdout.as_mut().ok_or("no stdout")?;
        BufReader::new(out).read_line(&mut line)?;
        Ok(line.trim().trim_start_matches(prefix).to_string())
    };
    let count = "60";
    let mut sink = Command::new(&exe)
        .args(["sink", &ep("sink"), count])
        .stdout(Stdio::piped())
        .spawn()?;
    let sink_ep = first_line(&mut sink, "sink on ")?;
    let mut vent = Command::new(&exe)
        .args(["ventilator", &ep("vent"), count])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let vent_ep = first_line(&mut vent, "ventilator on ")?;
    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut w = Command::new(&exe)
            .args(["worker", &vent_ep, &sink_ep])
            .stdout(Stdio::piped())
            .spawn()?;
        first_line(&mut w, "")?;
        workers.push(w);
    }
    vent.stdin.take().ok_or("no stdin")?.write_all(b"go\n")?;
    let out = sink.wait_with_output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let _ = vent.wait();
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err("the sink failed".into());
    }
    Ok(())
}

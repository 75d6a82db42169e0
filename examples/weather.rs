//! Pub/sub across two processes: a weather feed and a subscriber that
//! filters by topic prefix and reports lost messages.
//!
//! Terminal 1 (publisher):
//! ```sh
//! cargo run --example weather -- pub tcp://127.0.0.1:5556
//! ```
//! Terminal 2 (subscriber to one city):
//! ```sh
//! cargo run --example weather -- sub tcp://127.0.0.1:5556 weather.paris
//! ```
//! Start them in either order; the subscriber connects in the background
//! and reconnects if the publisher restarts.
//!
//! In one command (a publisher and two subscribers, each its own process):
//! ```sh
//! cargo run --example weather -- all tcp
//! cargo run --example weather -- all ipc
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zfabric::{Publisher, Subscriber};

#[derive(Debug, Serialize, Deserialize)]
struct Reading {
    city: String,
    celsius: f32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("pub") => {
            let ep = args
                .get(1)
                .map(String::as_str)
                .unwrap_or("tcp://127.0.0.1:5556");
            let publisher: Publisher<Reading> = Publisher::bind(ep).await?;
            println!("publishing on {}", publisher.endpoints()[0]);
            let cities = ["paris", "oslo", "lima"];
            for i in 0..100_000u32 {
                let city = cities[i as usize % cities.len()];
                let reading = Reading {
                    city: city.into(),
                    celsius: (i % 40) as f32 - 5.0,
                };
                publisher
                    .publish(&format!("weather.{city}"), &reading)
                    .await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Some("sub") => {
            let ep = args
                .get(1)
                .map(String::as_str)
                .unwrap_or("tcp://127.0.0.1:5556");
            let prefix = args.get(2).map(String::as_str).unwrap_or("weather.");
            let count: usize = args.get(3).map(|c| c.parse()).transpose()?.unwrap_or(50);
            let mut sub: Subscriber<Reading> = Subscriber::connect(ep, &[prefix]).await?;
            for _ in 0..count {
                let d = sub.recv().await?;
                let r = d.decode()?;
                println!(
                    "{} {:>5.1} C  (seq {}, lost so far {})",
                    r.city,
                    r.celsius,
                    d.header().seq,
                    sub.lost()
                );
            }
            println!("summary {prefix}: received {count}, lost {}", sub.lost());
        }
        Some("all") => all(args.get(1).map(String::as_str).unwrap_or("tcp"))?,
        _ => eprintln!("usage: weather pub|sub [ENDPOINT] [PREFIX] [COUNT] | all [tcp|ipc]"),
    }
    Ok(())
}

/// Spawns a publisher and two subscribers (this same program) and prints
/// the subscribers' summaries.
fn all(transport: &str) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("zfabric-weather-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bind = match transport {
        "ipc" => format!("ipc://{}/weather.sock", dir.display()),
        _ => "tcp://127.0.0.1:0".to_string(),
    };
    let mut publisher = Command::new(&exe)
        .args(["pub", &bind])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(publisher.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let ep = line.trim().trim_start_matches("publishing on ").to_string();
    let subs: Vec<_> = ["weather.paris", "weather."]
        .iter()
        .map(|prefix| {
            Command::new(&exe)
                .args(["sub", &ep, prefix, "20"])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut failed = false;
    for s in subs {
        let out = s.wait_with_output()?;
        failed |= !out.status.success();
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(summary) = text.lines().find(|l| l.starts_with("summary")) {
            println!("{summary}");
        }
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if failed {
        return Err("a subscriber failed".into());
    }
    Ok(())
}

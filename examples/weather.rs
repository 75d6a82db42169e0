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
            let mut sub: Subscriber<Reading> = Subscriber::connect(ep, &[prefix]).await?;
            for _ in 0..50 {
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
        }
        _ => eprintln!("usage: weather pub|sub [ENDPOINT] [PREFIX]"),
    }
    Ok(())
}

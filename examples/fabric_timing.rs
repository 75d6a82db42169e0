//! Measures the fabric's discovery and failure detection on loopback tcp,
//! with the default timings (heartbeat 500 ms, suspect 1.5 s, gone 3 s).
//!
//! ```sh
//! cargo run --release --example fabric_timing            # 10 nodes
//! cargo run --release --example fabric_timing -- 20      # 20 nodes
//! ```
//! Prints how long after the last node started every node saw all the
//! others (every node is given only the first node as seed), and how long
//! after a node was killed every survivor had dropped it from its routes.

use std::time::{Duration, Instant};

use zfabric::node::Node;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let first = Node::builder("n0")
        .bind("tcp://127.0.0.1:0")
        .start()
        .await?;
    let seed = first.endpoints()[0].to_string();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(
            Node::builder(format!("n{i}"))
                .bind("tcp://127.0.0.1:0")
                .seed(seed.clone())
                .start()
                .await?,
        );
    }
    let started = Instant::now();
    while !nodes.iter().all(|x| x.members().len() == n - 1) {
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the fabric did not converge within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let discovery = started.elapsed();
    println!(
        "discovery: {n} nodes fully connected {:.0} ms after the last one started",
        discovery.as_secs_f64() * 1e3
    );

    let victim = nodes.pop().expect("at least one node");
    let dead = victim.id();
    drop(victim);
    let killed = Instant::now();
    while nodes
        .iter()
        .any(|x| x.members().iter().any(|m| m.id == dead))
    {
        if killed.elapsed() > Duration::from_secs(60) {
            return Err("the dead node was never dropped".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "failure detection: a killed node was out of every route after {:.0} ms (gone_after 2500 ms, checked twice per 500 ms heartbeat)",
        killed.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

//! Overload: what a bulkhead does to latency when offered twice what it
//! can serve.
//!
//! ```sh
//! cargo run --release --example overload             # over inproc
//! cargo run --release --example overload -- tcp      # over tcp
//! ```
//!
//! A node serves `work` (2 ms of waiting per request) twice: in a bulkhead
//! of 8 slots with no queue, and in one of 8 slots and 2 queue places. A second node calls it open-loop (requests
//! start on a fixed schedule, whether or not earlier ones finished):
//! 1. at a quarter of capacity, for the unloaded latency;
//! 2. at twice the capacity measured in step 1 (8 / mean service time).
//!
//! For each, it prints the p50/p99 of accepted requests in both runs and their ratio
//! (target: loaded p99 within 2x of unloaded p99), how many requests were
//! refused, and how fast a refusal came back. The queue bound is what
//! bounds the latency: a queued request waits at most `max_queued /
//! max_concurrent` service times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zfabric::node::{CallError, Node, NodeConfig, ServeOptions};
use zfabric::resilience::{Bulkhead, BulkheadConfig};
use zfabric::{RemoteError, Request};

const SLOTS: usize = 8;
const QUEUES: [usize; 2] = [0, 2];
const SERVICE: Duration = Duration::from_millis(2);

struct Run {
    accepted: Vec<Duration>,
    rejected: Vec<Duration>,
    other: usize,
    elapsed: Duration,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Offers `rate` requests per second for `length`, open-loop.
async fn offer(client: &Arc<Node>, service: &'static str, rate: f64, length: Duration) -> Run {
    let total = (rate * length.as_secs_f64()) as u64;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c
                .request::<_, u32>(service, &(i as u32), Duration::from_secs(2))
                .await;
            (r, t.elapsed())
        }));
    }
    let mut run = Run {
        accepted: Vec::new(),
        rejected: Vec::new(),
        other: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        match t.await {
            Ok((Ok(_), d)) => run.accepted.push(d),
            Ok((Err(CallError::Rejected { .. }), d)) => run.rejected.push(d),
            _ => run.other += 1,
        }
    }
    run.elapsed = start.elapsed();
    run
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let transport = std::env::args().nth(1).unwrap_or_else(|| "inproc".into());
    let ep = |name: &str| match transport.as_str() {
        "tcp" => "tcp://127.0.0.1:0".to_string(),
        _ => format!("inproc://overload-{name}"),
    };
    let bulkheads =
        QUEUES.map(|q| Bulkhead::new(format!("work-q{q}"), BulkheadConfig::new(SLOTS, q)));
    let mut builder = Node::builder("server").bind(ep("server"));
    for (service, bulkhead) in ["work-q0", "work-q2"].into_iter().zip(&bulkheads) {
        builder = builder.serve_with(
            service,
            ServeOptions::new().bulkhead(bulkhead.clone()),
            |req: Request<u32>| async move {
                tokio::time::sleep(SERVICE).await;
                Ok::<_, RemoteError>(req.body)
            },
        );
    }
    let server = builder.start().await?;
    let client = Arc::new(
        Node::builder("client")
            // Breakers off: refusals are what is being measured.
            .config(NodeConfig {
                breaker: None,
                ..NodeConfig::default()
            })
            .bind(ep("client"))
            .seed(server.endpoints()[0].to_string())
            .start()
            .await?,
    );
    for _ in 0..500 {
        if client.members().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Capacity from the service time as this machine delivers it.
    let warm = offer(&client, "work-q0", 200.0, Duration::from_millis(500)).await;
    let mean = warm.accepted.iter().sum::<Duration>() / warm.accepted.len().max(1) as u32;
    let capacity = SLOTS as f64 / mean.as_secs_f64();
    println!("transport {transport}; bulkhead {SLOTS} slots; service {SERVICE:?}");
    println!("capacity ~{capacity:.0} req/s ({SLOTS} / mean latency {mean:.2?})");
    println!(
        "{:<6} {:<18} {:>8} {:>8} {:>8} {:>10} {:>10} {:>12} {:>12}",
        "queue", "run", "offered", "accepted", "rejected", "p50", "p99", "reject p50", "reject p99"
    );
    for ((service, queue), bulkhead) in ["work-q0", "work-q2"]
        .into_iter()
        .zip(QUEUES)
        .zip(&bulkheads)
    {
        let unloaded = offer(&client, service, capacity / 4.0, Duration::from_secs(2)).await;
        let loaded = offer(&client, service, capacity * 2.0, Duration::from_secs(2)).await;
        for (name, r, rate) in [
            ("unloaded (0.25x)", &unloaded, capacity / 4.0),
            ("overload (2x)", &loaded, capacity * 2.0),
        ] {
            println!(
                "{:<6} {:<18} {:>8.0} {:>8} {:>8} {:>10.2?} {:>10.2?} {:>12.2?} {:>12.2?}",
                queue,
                name,
                rate,
                r.accepted.len(),
                r.rejected.len(),
                pct(&r.accepted, 0.5),
                pct(&r.accepted, 0.99),
                pct(&r.rejected, 0.5),
                pct(&r.rejected, 0.99),
            );
            if r.other > 0 {
                println!("  ({} ended otherwise: timeout or error)", r.other);
            }
        }
        let ratio = pct(&loaded.accepted, 0.99).as_secs_f64()
            / pct(&unloaded.accepted, 0.99).as_secs_f64().max(1e-9);
        println!(
            "queue {queue}: p99 overload/unloaded {ratio:.2}x (target <= 2x); accepted {:.0} req/s under overload; {} refusals counted",
            loaded.accepted.len() as f64 / loaded.elapsed.as_secs_f64(),
            bulkhead.rejected()
        );
    }
    Ok(())
}

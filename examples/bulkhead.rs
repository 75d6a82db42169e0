//! Bulkheads and a circuit breaker keeping a failing dependency's damage
//! local.
//!
//! ```sh
//! cargo run --release --example bulkhead            # over inproc
//! cargo run --release --example bulkhead -- tcp     # the same over tcp
//! ```
//!
//! An `api` node serves two routes: `stock` calls a healthy dependency
//! (`inventory`, ~1 ms) and `pay` calls a failing one (`payments`: it hangs
//! for 500 ms, then errors). A client offers both routes the same load.
//! The run is made twice:
//! - **shared**: both routes run in one bulkhead of 16 slots and 16 queue
//!   places, and the api's breakers are off. `pay` handlers wait on the
//!   hung dependency and hold the shared slots: `stock` requests are
//!   refused although inventory is fine.
//! - **isolated**: each route has its own bulkhead (8 + 8) and the api's
//!   breaker towards `payments` is on. `pay` is shed (refused at once, then
//!   failed fast by the open breaker) and `stock` is served in full.
//!
//! It prints one line per route and run, and exits non-zero if the
//! isolated run did not serve every `stock` request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zfabric::node::{CallError, Node, NodeConfig, ServeOptions};
use zfabric::resilience::{BreakerConfig, Bulkhead, BulkheadConfig};
use zfabric::{RemoteError, Request, RequestError};

/// Concurrent callers of `stock` (within its own bulkhead's 8 slots).
const STOCK_WORKERS: usize = 8;
/// Concurrent callers of `pay`: more than any bulkhead here holds (its
/// callers keep trying).
const PAY_WORKERS: usize = 32;
const PER_WORKER: usize = 40;
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Tally {
    ok: Vec<Duration>,
    rejected: Vec<Duration>,
    circuit_open: usize,
    timeout: usize,
    failed: usize,
}

fn endpoint(transport: &str, name: &str, run: &str) -> String {
    match transport {
        "tcp" => "tcp://127.0.0.1:0".into(),
        _ => format!("inproc://bulkhead-{run}-{name}"),
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

async fn scenario(
    transport: &str,
    isolated: bool,
) -> Result<[Tally; 2], Box<dyn std::error::Error>> {
    let run = if isolated { "isolated" } else { "shared" };
    let deps = Node::builder("deps")
        .bind(endpoint(transport, "deps", run))
        .serve("inventory", |req: Request<u32>| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, RemoteError>(req.body)
        })
        .serve("payments", |_: Request<u32>| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Err::<u32, _>(RemoteError::new("unavailable", "payments is down"))
        })
        .start()
        .await?;
    let seed = deps.endpoints()[0].to_string();
    // The api's own client side: breakers only in the isolated run.
    let onward_cfg = NodeConfig {
        breaker: isolated.then_some(BreakerConfig {
            window: 10,
            minimum_calls: 5,
            open_for: Duration::from_secs(10),
            ..BreakerConfig::default()
        }),
        ..NodeConfig::default()
    };
    let onward = Arc::new(
        Node::builder("api-out")
            .config(onward_cfg)
            .bind(endpoint(transport, "out", run))
            .seed(seed.clone())
            .start()
            .await?,
    );
    let (stock_bh, pay_bh) = if isolated {
        (
            Bulkhead::new("stock", BulkheadConfig::new(8, 8)),
            Bulkhead::new("pay", BulkheadConfig::new(8, 8)),
        )
    } else {
        let shared = Bulkhead::new("shared", BulkheadConfig::new(16, 16));
        (shared.clone(), shared)
    };
    let route = |dep: &'static str| {
        let o = onward.clone();
        move |req: Request<u32>| {
            let o = o.clone();
            async move {
                o.request::<_, u32>(dep, &req.body, Duration::from_millis(800))
                    .await
                    .map_err(|e| RemoteError::new("dependency", e.to_string()))
            }
        }
    };
    let api = Node::builder("api")
        .bind(endpoint(transport, "api", run))
        .seed(seed.clone())
        .serve_with(
            "stock",
            ServeOptions::new().bulkhead(stock_bh),
            route("inventory"),
        )
        .serve_with(
            "pay",
            ServeOptions::new().bulkhead(pay_bh),
            route("payments"),
        )
        .start()
        .await?;
    let client = Arc::new(
        Node::builder("client")
            .config(NodeConfig {
                breaker: None,
                ..NodeConfig::default()
            })
            .bind(endpoint(transport, "client", run))
            .seed(seed)
            .start()
            .await?,
    );
    for _ in 0..500 {
        if [&deps, &*onward, &api, &*client]
            .iter()
            .all(|n| n.members().len() == 3)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut tasks = Vec::new();
    for w in 0..STOCK_WORKERS + PAY_WORKERS {
        let route = if w < STOCK_WORKERS { "stock" } else { "pay" };
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            for i in 0..PER_WORKER {
                let start = Instant::now();
                let r = c.request::<_, u32>(route, &(i as u32), CALL_TIMEOUT).await;
                let took = start.elapsed();
                match r {
                    Ok(_) => t.ok.push(took),
                    Err(CallError::Rejected { .. }) => t.rejected.push(took),
                    Err(CallError::Request(RequestError::Remote(e)))
                        if e.message.contains("circuit open") =>
                    {
                        t.circuit_open += 1
                    }
                    Err(CallError::Request(RequestError::Timeout(_))) => t.timeout += 1,
                    Err(_) => t.failed += 1,
                }
                // Offered load: one request per worker every 5 ms at most.
                tokio::time::sleep(Duration::from_millis(5).saturating_sub(took)).await;
            }
            (route, t)
        }));
    }
    let mut out = [Tally::default(), Tally::default()];
    for task in tasks {
        let (route, t) = task.await?;
        let slot = &mut out[usize::from(route == "pay")];
        slot.ok.extend(t.ok);
        slot.rejected.extend(t.rejected);
        slot.circuit_open += t.circuit_open;
        slot.timeout += t.timeout;
        slot.failed += t.failed;
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let transport = std::env::args().nth(1).unwrap_or_else(|| "inproc".into());
    println!(
        "{:<9} {:<6} {:>5} {:>5} {:>8} {:>7} {:>7} {:>6} {:>9} {:>9} {:>12}",
        "run",
        "route",
        "sent",
        "ok",
        "rejected",
        "circuit",
        "timeout",
        "failed",
        "ok p50",
        "ok p99",
        "reject p99"
    );
    let mut stock_ok_isolated = 0;
    for isolated in [false, true] {
        let mut tallies = scenario(&transport, isolated).await?;
        for (route, t) in ["stock", "pay"].iter().zip(tallies.iter_mut()) {
            let sent = t.ok.len() + t.rejected.len() + t.circuit_open + t.timeout + t.failed;
            println!(
                "{:<9} {:<6} {:>5} {:>5} {:>8} {:>7} {:>7} {:>6} {:>9.2?} {:>9.2?} {:>12.2?}",
                if isolated { "isolated" } else { "shared" },
                route,
                sent,
                t.ok.len(),
                t.rejected.len(),
                t.circuit_open,
                t.timeout,
                t.failed,
                pct(&mut t.ok, 0.5),
                pct(&mut t.ok, 0.99),
                pct(&mut t.rejected, 0.99),
            );
            if isolated && *route == "stock" {
                stock_ok_isolated = t.ok.len();
            }
        }
    }
    let expected = STOCK_WORKERS * PER_WORKER;
    println!("isolated stock served: {stock_ok_isolated}/{expected}");
    if stock_ok_isolated != expected {
        std::process::exit(1);
    }
    Ok(())
}

//! A stream's end-to-end latency per fsync policy: a record appended on
//! the producer's node until a consumer on another node has it in its
//! handler, over tcp on this machine, with a floor measured in the same
//! run (a plain fabric publish of the same body to a subscriber: the
//! latency without the log). Rounds alternate the policies and the floor
//! so that drift hits all alike; prints each one's p50 and p99 per round
//! and the median over the rounds.
//!
//! ```sh
//! cargo build --release --example stream_latency
//! target/release/examples/stream_latency 5 400
//! ```
//! (rounds, records per policy per round)

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use zfabric::node::Node;
use zfabric::stream::{
    consumer, ConsumerConfig, FsyncPolicy, LogConfig, NewRecord, Stream, StreamConfig, StreamHost,
};

fn quantiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let q = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (q(0.5), q(0.99))
}

struct Case {
    name: &'static str,
    stream: Stream,
    node: Node,
    rx: mpsc::UnboundedReceiver<u64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(5);
    let per = args.get(1).copied().unwrap_or(400);
    let dir = tempfile::tempdir()?;
    let consumer_node = Node::builder("consumer")
        .bind("tcp://127.0.0.1:0")
        .start()
        .await?;
    let seed = consumer_node.endpoints()[0].to_string();
    let policies = [
        ("always", FsyncPolicy::Always),
        (
            "group:2ms",
            FsyncPolicy::GroupCommit {
                interval: Duration::from_millis(2),
            },
        ),
        ("os", FsyncPolicy::Os),
    ];
    let mut cases = Vec::new();
    let mut handles = Vec::new();
    for (name, fsync) in policies {
        let (stream, _) = Stream::open(
            &dir.path().join(name),
            &name.replace(':', "-"),
            StreamConfig {
                partitions: 1,
                log: LogConfig {
                    fsync,
                    ..LogConfig::default()
                },
            },
        )?;
        let host = StreamHost::new(stream.clone(), Default::default())?;
        let node = host
            .serve_on(
                Node::builder(format!("producer-{name}"))
                    .bind("tcp://127.0.0.1:0")
                    .seed(seed.clone()),
            )
            .start()
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let h = consumer(stream.name())
            .config(ConsumerConfig {
                poll: Duration::from_millis(100),
                ..ConsumerConfig::default()
            })
            .run(&consumer_node, move |r| {
                let _ = tx.send(r.offset);
                std::future::ready(Ok(()))
            })?;
        handles.push(h);
        cases.push(Case {
            name,
            stream,
            node,
            rx,
        });
    }
    // The floor: a fabric publish of the same body to a subscriber.
    let mut sub = consumer_node.subscribe("floor", 1024);
    let pubnode = Node::builder("publisher")
        .bind("tcp://127.0.0.1:0")
        .seed(seed.clone())
        .start()
        .await?;
    for _ in 0..500 {
        if pubnode
            .members()
            .iter()
            .any(|m| m.topics.iter().any(|t| t == "floor"))
            && cases.iter().all(|c| {
                consumer_node
                    .serving(&format!("@stream/{}", c.stream.name()))
                    .len()
                    == 1
            })
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = Bytes::from(vec![7u8; 256]);
    // (case, round, p50, p99)
    let mut results: Vec<(String, usize, Duration, Duration)> = Vec::new();
    for round in 0..rounds {
        for c in cases.iter_mut() {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                let off = c
                    .stream
                    .append(
                        0,
                        NewRecord {
                            id: i as u64 + 1,
                            body: body.clone(),
                            ..NewRecord::default()
                        },
                    )
                    .await?;
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), c.rx.recv()).await {
                        Ok(Some(o)) if o == off => break,
                        Ok(Some(_)) => continue,
                        _ => return Err(format!("{}: record {off} did not arrive", c.name).into()),
                    }
                }
                lat.push(t.elapsed());
            }
            let (p50, p99) = quantiles(lat);
            results.push((c.name.to_string(), round, p50, p99));
        }
        let mut lat = Vec::with_capacity(per);
        for _ in 0..per {
            let t = Instant::now();
            pubnode
                .publish(
                    "floor",
                    &serde_bytes::Bytes::new(&body),
                    Duration::from_secs(1),
                )
                .await?;
            tokio::time::timeout(Duration::from_secs(5), sub.recv()).await?;
            lat.push(t.elapsed());
        }
        let (p50, p99) = quantiles(lat);
        results.push(("floor (publish)".into(), round, p50, p99));
    }
    println!(
        "{:<18} {:>28} {:>28}",
        "case", "p50 median (min..max)", "p99 median (min..max)"
    );
    for name in ["always", "group:2ms", "os", "floor (publish)"] {
        let mut p50: Vec<Duration> = results
            .iter()
            .filter(|r| r.0 == name)
            .map(|r| r.2)
            .collect();
        let mut p99: Vec<Duration> = results
            .iter()
            .filter(|r| r.0 == name)
            .map(|r| r.3)
            .collect();
        p50.sort();
        p99.sort();
        let f = |v: &Vec<Duration>| {
            format!(
                "{:.1?} ({:.1?}..{:.1?})",
                v[v.len() / 2],
                v[0],
                v[v.len() - 1]
            )
        };
        println!("{name:<18} {:>28} {:>28}", f(&p50), f(&p99));
    }
    for h in handles {
        h.stop().await;
    }
    for c in cases {
        c.node.shutdown(Duration::from_secs(1)).await;
    }
    pubnode.shutdown(Duration::from_secs(1)).await;
    consumer_node.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

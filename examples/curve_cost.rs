//! What CURVE costs: request/reply round-trip p50 and 1 KiB push/pull
//! throughput over tcp on loopback, with and without CURVE, in the same
//! process and the same run (rounds interleaved, medians reported).
//!
//! ```sh
//! cargo run --release --example curve_cost            # 5 rounds
//! cargo run --release --example curve_cost -- 3       # 3 rounds
//! ```
//!
//! Both ends run in this process on a 2-worker runtime, so the numbers are
//! for comparing the two settings against each other, not absolute
//! figures (see `../shared/BASELINE.md` on wake-up costs). Nothing is
//! asserted: it prints what it measured.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zfabric::{
    AllowList, Client, CurveConfig, CurveKeyPair, Puller, Pusher, RemoteError, Server,
    SocketBuilder, SocketConfig,
};

const REQUESTS: usize = 3_000;
const MESSAGES: usize = 100_000;

fn configs(curve: bool) -> (SocketConfig, SocketConfig) {
    if !curve {
        return (SocketConfig::default(), SocketConfig::default());
    }
    let (s, c) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let server = SocketConfig::default()
        .curve(CurveConfig::new(s.clone()).authorizer(AllowList::from_keys([*c.public()])));
    let client = SocketConfig::default().curve(CurveConfig::new(c).server_key(*s.public()));
    (server, client)
}

/// Median round trip of `REQUESTS` sequential 64-byte requests.
async fn round_trip_p50(curve: bool) -> Duration {
    let (scfg, ccfg) = configs(curve);
    let server: Server<String, String> = SocketBuilder::new()
        .config(scfg)
        .bind("tcp://127.0.0.1:0")
        .server()
        .await
        .unwrap();
    let ep = server.endpoints()[0].to_string();
    let _h = server.spawn(|req| async move { Ok::<_, RemoteError>(req.body) });
    let client: Client<String, String> = SocketBuilder::new()
        .config(ccfg)
        .connect(ep)
        .client()
        .await
        .unwrap();
    client.wait_connected().await;
    let body = "x".repeat(64);
    for _ in 0..200 {
        client.request(&body).await.unwrap(); // warm up
    }
    let mut rtts = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        client.request(&body).await.unwrap();
        rtts.push(t.elapsed());
    }
    rtts.sort();
    rtts[rtts.len() / 2]
}

/// Messages per second at the puller, 1 KiB bodies.
async fn throughput_1k(curve: bool) -> f64 {
    let (scfg, ccfg) = configs(curve);
    let mut pl: Puller<Vec<u8>> = SocketBuilder::new()
        .config(scfg)
        .bind("tcp://127.0.0.1:0")
        .puller()
        .await
        .unwrap();
    let push: Pusher<Vec<u8>> = SocketBuilder::new()
        .config(ccfg)
        .connect(pl.endpoints()[0].to_string())
        .pusher()
        .await
        .unwrap();
    push.wait_connected().await;
    let body = Bytes::from(vec![1u8; 1024]);
    let sender = tokio::spawn(async move {
        for _ in 0..MESSAGES {
            push.send_bytes(body.clone()).await.unwrap();
        }
        push
    });
    let first = pl.recv().await.unwrap();
    drop(first);
    let t = Instant::now();
    for _ in 1..MESSAGES {
        pl.recv().await.unwrap();
    }
    let rate = (MESSAGES - 1) as f64 / t.elapsed().as_secs_f64();
    drop(sender.await.unwrap());
    rate
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let (mut p50, mut p50c, mut thr, mut thrc) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        p50.push(round_trip_p50(false).await);
        p50c.push(round_trip_p50(true).await);
        thr.push(throughput_1k(false).await);
        thrc.push(throughput_1k(true).await);
        eprintln!(
            "round {}: p50 {:?} / {:?} (curve), 1 KiB {:.0} / {:.0} msg/s (curve)",
            r + 1,
            p50[r],
            p50c[r],
            thr[r],
            thrc[r]
        );
    }
    let (p, pc, t, tc) = (median(p50), median(p50c), median(thr), median(thrc));
    println!("| tcp, same process, median of {rounds} rounds | NULL | CURVE | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| request/reply p50, 64 B | {:.1} µs | {:.1} µs | {:.2}x |",
        p.as_secs_f64() * 1e6,
        pc.as_secs_f64() * 1e6,
        pc.as_secs_f64() / p.as_secs_f64()
    );
    println!(
        "| push/pull 1 KiB, msg/s | {:.0} | {:.0} | {:.2}x |",
        t,
        tc,
        tc / t
    );
}

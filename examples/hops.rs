//! Drives one guarded path with zfabric only, a fixed amount of work, so
//! that a profiler sees nothing else: the workload behind the per-hop
//! table in docs/DESIGN.md ("Where the time goes, hop by hop").
//!
//! ```sh
//! cargo build --release --example hops
//! # PATTERN: pushpull | pubsub | reqrep; TRANSPORT: ipc | tcp
//! target/release/examples/hops pushpull tcp 64 200000
//! # instructions and copies, deterministic on a loaded machine:
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/release/examples/hops pushpull tcp 64 50000
//! # time, kernel included:
//! perf record -e cpu-clock -g -o perf.data target/release/examples/hops reqrep tcp 64 20000
//! ```
//!
//! Streams (push/pull, pub/sub) send COUNT messages of SIZE bytes and wait
//! for the last; request/reply makes COUNT round trips one at a time.
//! Prints messages per second (or the mean round trip) and how many
//! arrived, so a run that lost messages is visible.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_bytes::ByteBuf;
use zfabric::{Client, Publisher, Puller, Pusher, RemoteError, Server, Subscriber};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn endpoint(tp: &str, dir: &std::path::Path, tag: &str) -> String {
    match tp {
        "ipc" => format!("ipc://{}/{tag}.sock", dir.display()),
        _ => "tcp://127.0.0.1:0".into(),
    }
}

async fn pushpull(tp: &str, dir: &std::path::Path, size: usize, n: u64) -> Result<u64, BoxError> {
    let mut pull: Puller<ByteBuf> = Puller::bind(&endpoint(tp, dir, "pp")).await?;
    let push: Pusher<ByteBuf> = Pusher::connect(&pull.endpoints()[0].to_string()).await?;
    push.wait_connected().await;
    let body = Bytes::from(vec![7u8; size]);
    let sender = tokio::spawn(async move {
        for _ in 0..n {
            push.send_bytes(body.clone()).await?;
        }
        // Keep the socket (and what it holds) until the receiver is done.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, BoxError>(())
    });
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(2), pull.recv()).await {
            Ok(Ok(_)) => got += 1,
            _ => break,
        }
    }
    sender.abort();
    Ok(got)
}

async fn pubsub(tp: &str, dir: &std::path::Path, size: usize, n: u64) -> Result<u64, BoxError> {
    let publisher: Publisher<ByteBuf> = Publisher::bind(&endpoint(tp, dir, "ps")).await?;
    let mut sub: Subscriber<ByteBuf> =
        Subscriber::connect(&publisher.endpoints()[0].to_string(), &["b."]).await?;
    let body = Bytes::from(vec![7u8; size]);
    // Subscriptions travel to the publisher: probe until one arrives.
    let mut ready = false;
    for _ in 0..500 {
        publisher.publish_bytes(b"b.probe", body.clone()).await?;
        if sub.recv_timeout(Duration::from_millis(10)).await.is_ok() {
            ready = true;
            break;
        }
    }
    if !ready {
        return Err("the subscription never arrived".into());
    }
    while sub.recv_timeout(Duration::from_millis(50)).await.is_ok() {}
    let sender = tokio::spawn(async move {
        for _ in 0..n {
            publisher.publish_bytes(b"b.x", body.clone()).await?;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, BoxError>(())
    });
    let mut got = 0;
    while got < n {
        match sub.recv_timeout(Duration::from_secs(2)).await {
            Ok(_) => got += 1,
            Err(_) => break,
        }
    }
    sender.abort();
    Ok(got)
}

async fn reqrep(tp: &str, dir: &std::path::Path, size: usize, n: u64) -> Result<u64, BoxError> {
    let server: Server<ByteBuf, ByteBuf> = Server::bind(&endpoint(tp, dir, "rr")).await?;
    let ep = server.endpoints()[0].to_string();
    let _serving = server.spawn(|req| async move { Ok::<_, RemoteError>(req.body) });
    let client: Client<ByteBuf, ByteBuf> = Client::connect(&ep).await?;
    client.wait_connected().await;
    let body = ByteBuf::from(vec![7u8; size]);
    let mut got = 0;
    for _ in 0..n {
        client.request_within(&body, Duration::from_secs(5)).await?;
        got += 1;
    }
    Ok(got)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let pattern = args.get(1).map_or("pushpull", String::as_str);
    let tp = args.get(2).map_or("tcp", String::as_str);
    let size: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let n: u64 = args.get(4).map_or(Ok(100_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    let got = match pattern {
        "pushpull" => pushpull(tp, dir.path(), size, n).await?,
        "pubsub" => pubsub(tp, dir.path(), size, n).await?,
        "reqrep" => reqrep(tp, dir.path(), size, n).await?,
        other => return Err(format!("unknown pattern {other}").into()),
    };
    let secs = start.elapsed().as_secs_f64();
    if pattern == "reqrep" {
        println!(
            "{pattern} {tp} {size} B: {got} round trips, mean {:.1} µs",
            secs * 1e6 / got.max(1) as f64
        );
    } else {
        println!(
            "{pattern} {tp} {size} B: {got}/{n} delivered, {:.0} msgs/s (setup included)",
            got as f64 / secs
        );
    }
    Ok(())
}

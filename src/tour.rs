//! `zfabric tour`: every core pattern on every transport, measured.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zfabric::{Client, Publisher, Puller, Pusher, RemoteError, Server, Subscriber};

use crate::app::histogram::{histogram, Percentiles, Unit};
use crate::app::BoxError;

/// Options of `zfabric tour`.
#[derive(Debug, clap::Args)]
pub(crate) struct TourArgs {
    /// Request/reply round trips per transport.
    #[arg(long, default_value_t = 5_000)]
    round_trips: usize,
    /// Messages per throughput run.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Body size in bytes for the throughput runs.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Only these transports (comma separated: inproc,ipc,tcp).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = ["inproc", "ipc", "tcp"],
        default_values_t = vec!["inproc".to_string(), "ipc".to_string(), "tcp".to_string()]
    )]
    transports: Vec<String>,
}

fn endpoint(transport: &str, dir: &std::path::Path, name: &str) -> Result<String, BoxError> {
    Ok(match transport {
        "inproc" => format!("inproc://tour-{name}"),
        "ipc" => format!("ipc://{}/{name}.sock", dir.display()),
        "tcp" => "tcp://127.0.0.1:0".to_string(),
        other => return Err(format!("unknown transport {other:?} (inproc, ipc, tcp)").into()),
    })
}

pub(crate) async fn run(args: TourArgs) -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!("zfabric-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "zfabric tour: {} round trips, {} x {} B messages per run\n",
        args.round_trips, args.messages, args.size
    );
    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>14} {:>14} {:>10}",
        "", "req p50", "req p99", "req max", "push/pull", "pub/sub", "pub lost"
    );
    for t in &args.transports {
        let rr = reqrep(t, &dir, args.round_trips).await?;
        let pp = pipeline(t, &dir, args.messages, args.size).await?;
        let (ps, lost) = pubsub(t, &dir, args.messages, args.size).await?;
        println!(
            "{:<8} {:>10.1}us {:>10.1}us {:>10.1}us {:>10.0} k/s {:>10.0} k/s {:>10}",
            t,
            rr.0.as_secs_f64() * 1e6,
            rr.1.as_secs_f64() * 1e6,
            rr.2.as_secs_f64() * 1e6,
            pp / 1e3,
            ps / 1e3,
            lost
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nreq: request/reply round trip of a u64, one in flight. push/pull, pub/sub: messages/s at the receiver.");
    println!("pub lost: messages the subscriber detected as missing from the sequence (counted, never silent).");
    Ok(())
}

async fn reqrep(
    t: &str,
    dir: &std::path::Path,
    n: usize,
) -> Result<(Duration, Duration, Duration), BoxError> {
    let server: Server<u64, u64> = Server::bind(&endpoint(t, dir, "rr")?).await?;
    let ep = server.endpoints()[0].to_string();
    let _running = server.spawn(|req| async move { Ok::<_, RemoteError>(req.body + 1) });
    let client: Client<u64, u64> = Client::connect(&ep).await?;
    client.wait_connected().await;
    for i in 0..100 {
        client.request(&i).await?;
    }
    let mut lat = histogram(Unit::Nanos);
    for i in 0..n as u64 {
        let t0 = Instant::now();
        let r = client.request(&i).await?;
        let _ = lat.record((t0.elapsed().as_nanos() as u64).max(1));
        if r != i + 1 {
            return Err(format!("wrong reply {r} to {i}").into());
        }
    }
    let p = Percentiles::of(&lat);
    let ns = |f: fn(&Percentiles) -> u64| Duration::from_nanos(p.as_ref().map_or(0, f));
    Ok((ns(|p| p.p50), ns(|p| p.p99), ns(|p| p.max)))
}

async fn pipeline(t: &str, dir: &std::path::Path, n: usize, size: usize) -> Result<f64, BoxError> {
    let mut puller: Puller<()> = Puller::bind(&endpoint(t, dir, "pp")?).await?;
    let ep = puller.endpoints()[0].to_string();
    let pusher: Pusher<()> = Pusher::connect(&ep).await?;
    pusher.wait_connected().await;
    let body = Bytes::from(vec![7u8; size]);
    let sender = tokio::spawn(async move {
        for _ in 0..n {
            pusher.send_bytes(body.clone()).await?;
        }
        Ok::<_, zfabric::SendError>(pusher)
    });
    let t0 = Instant::now();
    for _ in 0..n {
        puller.recv_timeout(Duration::from_secs(10)).await?;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    drop(sender.await??);
    Ok(rate)
}

async fn pubsub(
    t: &str,
    dir: &std::path::Path,
    n: usize,
    size: usize,
) -> Result<(f64, u64), BoxError> {
    // The publisher's queue per subscriber holds the whole burst (as the
    // bench configures it, and as libzmq does with raised high-water
    // marks): an unpaced burst larger than the default queue would have
    // its overflow dropped (counted `slow_subscriber`), and the figure
    // would measure survivors instead of a rate.
    let burst = n + 1024;
    let config = zfabric::SocketConfig::default()
        .queue_capacity(burst)
        .publisher_queue_bytes(burst * (size + 128));
    let publisher: Publisher<()> = zfabric::SocketBuilder::new()
        .config(config.clone())
        .bind(endpoint(t, dir, "ps")?)
        .publisher()
        .await?;
    let ep = publisher.endpoints()[0].to_string();
    let mut sub: Subscriber<()> = zfabric::SocketBuilder::new()
        .config(config)
        .connect(ep)
        .subscriber(&["data"])
        .await?;
    // Wait until the subscription has reached the publisher.
    let mut ready = false;
    for _ in 0..500 {
        publisher.publish_bytes(b"data.sync", Bytes::new()).await?;
        if sub.recv_timeout(Duration::from_millis(10)).await.is_ok() {
            ready = true;
            break;
        }
    }
    if !ready {
        return Err("subscription never reached the publisher".into());
    }
    while sub.recv_timeout(Duration::from_millis(20)).await.is_ok() {}
    let lost_before = sub.lost();
    let body = Bytes::from(vec![7u8; size]);
    let sender = tokio::spawn(async move {
        for _ in 0..n {
            publisher.publish_bytes(b"data.x", body.clone()).await?;
        }
        // A final marker tells the receiver the run is over.
        publisher.publish_bytes(b"data.end", Bytes::new()).await?;
        Ok::<_, zfabric::SendError>(publisher)
    });
    let t0 = Instant::now();
    let mut got = 0usize;
    loop {
        match sub.recv_timeout(Duration::from_secs(2)).await {
            Ok(d) if d.topic.as_ref() == b"data.end" => break,
            Ok(_) => got += 1,
            Err(_) => break,
        }
    }
    let elapsed = t0.elapsed();
    let stats = sender.await??.close(Duration::from_secs(1)).await;
    let lost = (n - got) as u64;
    if lost > 0 {
        eprintln!(
            "{t} pub/sub: {lost} of {n} not received; the publisher dropped {} (slow subscriber), {} (link down), {} unaccounted",
            stats.dropped_slow,
            stats.dropped_link,
            stats.unaccounted()
        );
    }
    // Every loss but a tail after the last delivered message shows up as a
    // sequence gap at the subscriber.
    let detected = sub.lost() - lost_before;
    if detected > lost {
        return Err(format!("subscriber counted {detected} lost but {lost} were").into());
    }
    Ok((got as f64 / elapsed.as_secs_f64(), lost))
}

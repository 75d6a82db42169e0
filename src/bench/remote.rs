//! `--remote`: the serving side in a second process (this binary in
//! peer mode), for request/reply and push/pull over ipc/tcp.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::baseline;
use super::measure::{self, Budget, Stats};
use crate::app::BoxError;

/// Peer mode: serve or receive, say `READY <endpoint>`, and for pull
/// kinds print `GOT <count> <seconds>` when done.
pub(super) async fn peer(kind: &str, bind: Option<&str>, messages: u64) -> Result<(), BoxError> {
    let bind = bind.ok_or("--peer needs --bind")?;
    match kind {
        "zf-echo" => {
            let (ep, _h) = measure::zf_echo_server(bind).await?;
            println!("READY {ep}");
            wait_stdin().await;
        }
        "raw-echo" => {
            let (ep, _t) = baseline::raw_echo_server(bind).await?;
            println!("READY {ep}");
            wait_stdin().await;
        }
        "zf-pull" | "raw-pull" => {
            let (ep, mut next): (
                String,
                Box<dyn FnMut() -> futures_util::future::BoxFuture<'static, bool> + Send>,
            ) = if kind == "zf-pull" {
                let pull: zfabric::Puller<serde_bytes::ByteBuf> =
                    zfabric::Puller::bind(bind).await?;
                let ep = pull.endpoints()[0].to_string();
                let pull = std::sync::Arc::new(tokio::sync::Mutex::new(pull));
                (
                    ep,
                    Box::new(move || {
                        let p = pull.clone();
                        Box::pin(async move { p.lock().await.recv().await.is_ok() })
                    }),
                )
            } else {
                use zeromq::{Socket, SocketRecv};
                let mut pull = zeromq::PullSocket::new();
                let ep = pull.bind(bind).await?.to_string();
                let pull = std::sync::Arc::new(tokio::sync::Mutex::new(pull));
                (
                    ep,
                    Box::new(move || {
                        let p = pull.clone();
                        Box::pin(async move { p.lock().await.recv().await.is_ok() })
                    }),
                )
            };
            println!("READY {ep}");
            let mut got = 0u64;
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            while got < messages {
                match tokio::time::timeout(Duration::from_secs(3), next()).await {
                    Ok(true) => {
                        got += 1;
                        last = Instant::now();
                        first.get_or_insert(last);
                    }
                    _ => break,
                }
            }
            let secs = first
                .map(|f| last.duration_since(f).as_secs_f64())
                .unwrap_or(0.0);
            println!("GOT {got} {secs}");
        }
        other => return Err(format!("unknown peer kind {other}").into()),
    }
    Ok(())
}

async fn wait_stdin() {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {}
}

struct Peer {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

async fn spawn(kind: &str, bind: &str, messages: u64) -> Result<(Peer, String), BoxError> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "bench",
            "--peer",
            kind,
            "--bind",
            bind,
            "--messages",
            &messages.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "the peer did not start")??
        .ok_or("the peer exited")?;
    let ep = ready
        .strip_prefix("READY ")
        .ok_or("the peer said something else")?
        .to_string();
    Ok((Peer { child, lines }, ep))
}

async fn remote_stream(
    kind: &str,
    bind: &str,
    size: usize,
    n: u64,
    zfabric: bool,
) -> Result<Stats, BoxError> {
    let (mut peer, ep) = spawn(kind, bind, n).await?;
    let body = bytes::Bytes::from(vec![7u8; size]);
    if zfabric {
        let push: zfabric::Pusher<serde_bytes::ByteBuf> = zfabric::Pusher::connect(&ep).await?;
        push.wait_connected().await;
        for _ in 0..n {
            push.send_bytes(body.clone()).await?;
        }
        report(&mut peer, size, n, "zfabric").await
    } else {
        use zeromq::{Socket, SocketSend};
        let mut push = zeromq::PushSocket::new();
        push.connect(&ep).await?;
        for _ in 0..n {
            push.send(zeromq::ZmqMessage::from(body.clone())).await?;
        }
        report(&mut peer, size, n, "zeromq").await
    }
}

async fn report(peer: &mut Peer, size: usize, n: u64, name: &str) -> Result<Stats, BoxError> {
    let line = tokio::time::timeout(Duration::from_secs(60), peer.lines.next_line())
        .await
        .map_err(|_| "the peer never reported")??
        .ok_or("the peer exited early")?;
    let mut parts = line.split_whitespace().skip(1);
    let got: u64 = parts.next().ok_or("bad GOT")?.parse()?;
    let secs: f64 = parts.next().ok_or("bad GOT")?.parse()?;
    let _ = peer.child.wait().await;
    let thr = got as f64 / secs.max(1e-9);
    Ok(Stats::stream(name, size, thr, n, n.saturating_sub(got)))
}

/// One side of a remote cell: zfabric (`zfabric == true`) or the raw
/// `zeromq` baseline, its serving side in a new peer process.
pub(super) async fn side(
    zfabric: bool,
    pattern: &str,
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    budget: Budget,
) -> Result<Stats, BoxError> {
    let tag = format!(
        "{}-{}",
        if zfabric { "zf" } else { "raw" },
        measure::random_tag()
    );
    let bind = measure::endpoint(tp, dir, &format!("remote-{pattern}-{tag}-{size}"));
    match (pattern, zfabric) {
        ("reqrep", true) => {
            let (mut peer, ep) = spawn("zf-echo", &bind, 0).await?;
            let z = measure::zf_reqrep(&ep, size, budget).await;
            drop(peer.child.stdin.take());
            z
        }
        ("reqrep", false) => {
            let (mut peer, ep) = spawn("raw-echo", &bind, 0).await?;
            let b = baseline::raw_reqrep(&ep, size, budget).await;
            drop(peer.child.stdin.take());
            b
        }
        (_, true) => remote_stream("zf-pull", &bind, size, budget.messages, true).await,
        (_, false) => remote_stream("raw-pull", &bind, size, budget.messages, false).await,
    }
}

//! Baselines through NATS core, with the `peers` feature: the
//! `async-nats` client against a `nats-server` that the bench starts on
//! loopback ([`NatsServer`]) and stops at the end of the run.
//!
//! Cells: request/reply (one responder, [`reqrep`]), anycast (a queue
//! group of [`QUEUE_RESPONDERS`] responders, [`anycast`]) and pub/sub
//! ([`pubsub`]). Every client is its own connection to the server, as
//! separate services would be; request/reply is timed by the same loops
//! as zfabric's side ([`super::measure::rtt_loop`],
//! [`super::measure::inflight_loop`]), pub/sub by the same stream
//! ([`super::measure::stream`]).
//!
//! Guarantees: the server is started with `-a 127.0.0.1 -p -1` (a free
//! port it picks itself, read back from its log, [`client_port`]), is
//! waited for (bounded, [`READY_TIMEOUT`]) and is killed and reaped when
//! its [`NatsServer`] drops, also on an error or a panic. Where
//! `nats-server` is not on PATH, [`NatsServer::start`] says so
//! ([`skip_message`]) and the NATS cells are left out, never silently.
//! Pub/sub is as lossless as NATS core can be made from the client: the
//! subscriber's client-side queue holds the whole burst (as libzmq's
//! high-water marks do, [`super::libzmq`]); what the server still cuts off
//! (its slow-consumer limit) is counted as lost and said on stderr.
//! Does not: measure JetStream, TLS or a cluster; configure the server
//! beyond its address and port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use super::measure::{count_until, inflight_loop, rtt_loop, stream, Budget, Recv, Stats};
use crate::app::BoxError;

/// How long the server may take to say it listens.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Responders in the anycast cell's queue group.
pub(super) const QUEUE_RESPONDERS: usize = 2;

/// The name of the server's binary, looked up on PATH.
const BINARY: &str = "nats-server";

/// The message printed when the NATS cells are skipped because `why`.
pub(super) fn skip_message(why: &str) -> String {
    format!("NATS baselines skipped: {why}")
}

/// The client port in one line of `nats-server`'s log, e.g.
/// `[1] 2026/01/01 00:00:00.000000 [INF] Listening for client connections on 127.0.0.1:46201`.
pub(super) fn client_port(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("Listening for client connections on ")?;
    let (_, port) = rest.trim().rsplit_once(':')?;
    port.parse().ok().filter(|&p| p != 0)
}

/// Whether a file named `name` is in one of the directories on PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(name);
            std::fs::metadata(&p).is_ok_and(|m| m.is_file())
        })
    })
}

/// A `nats-server` child process on 127.0.0.1, killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct NatsServer {
    child: Child,
    url: String,
}

impl NatsServer {
    /// Starts `nats-server` on a free loopback port and waits (at most
    /// [`READY_TIMEOUT`]) until its log says it listens and the port
    /// accepts. `Err` carries the reason, for [`skip_message`].
    pub(crate) fn start() -> Result<Self, String> {
        if !on_path(BINARY) {
            return Err(format!(
                "{BINARY} is not on PATH (e.g. `apt-get install nats-server`)"
            ));
        }
        let mut child = Command::new(BINARY)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{BINARY} did not start: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        // The guard owns the child from here: any early return kills it.
        let mut server = NatsServer {
            child,
            url: String::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log until the server exits (it keeps logging, e.g.
        // slow consumers, and a full pipe would stall it).
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = client_port(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                } else if line.contains("Slow Consumer") {
                    eprintln!("      nats-server: {line}");
                }
            }
        });
        let port = rx
            .recv_timeout(READY_TIMEOUT)
            .map_err(|_| format!("{BINARY} did not listen within {READY_TIMEOUT:?}"))?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + READY_TIMEOUT;
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{BINARY} did not accept on {addr}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        server.url = format!("nats://{addr}");
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to `url` whose subscriptions hold `capacity` messages
/// client-side; counts the slow-consumer events it sees in `slow`.
async fn connect(
    url: &str,
    capacity: usize,
    slow: Option<Arc<AtomicU64>>,
) -> Result<async_nats::Client, BoxError> {
    let mut opts = async_nats::ConnectOptions::new()
        .subscription_capacity(capacity.max(1024))
        .request_timeout(Some(Duration::from_secs(10)));
    if let Some(slow) = slow {
        opts = opts.event_callback(move |e| {
            let slow = slow.clone();
            async move {
                if matches!(e, async_nats::Event::SlowConsumer(_)) {
                    slow.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    Ok(opts.connect(url).await?)
}

/// Responders on `subject` (in `queue`, when given), each on its own
/// connection, echoing each request's payload; abort the tasks to stop.
async fn responders(
    url: &str,
    subject: &str,
    queue: Option<&str>,
    count: usize,
) -> Result<Vec<tokio::task::JoinHandle<()>>, BoxError> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let client = connect(url, 65_536, None).await?;
        let mut sub = match queue {
            Some(q) => client.queue_subscribe(subject.to_owned(), q.into()).await?,
            None => client.subscribe(subject.to_owned()).await?,
        };
        // The server has the subscription once this returns.
        client.flush().await?;
        tasks.push(tokio::spawn(async move {
            while let Some(m) = StreamExt::next(&mut sub).await {
                if let Some(reply) = m.reply {
                    if client.publish(reply, m.payload).await.is_err() {
                        break;
                    }
                }
            }
        }));
    }
    Ok(tasks)
}

/// Request/reply against `count` responders on `subject`.
async fn round_trips(
    url: &str,
    subject: &str,
    queue: Option<&str>,
    count: usize,
    size: usize,
    budget: Budget,
) -> Result<Stats, BoxError> {
    let tasks = responders(url, subject, queue, count).await?;
    let measured = async {
        let client = connect(url, 65_536, None).await?;
        let body = Bytes::from(vec![7u8; size]);
        let subject = subject.to_owned();
        let (c, b, s) = (client.clone(), body.clone(), subject.clone());
        let h = rtt_loop(budget, || {
            let (c, b, s) = (&c, &b, &s);
            async move {
                c.request(s.clone(), b.clone()).await?;
                Ok(())
            }
        })
        .await?;
        let thr = inflight_loop(budget, 16, move || {
            let (c, b, s) = (client.clone(), body.clone(), subject.clone());
            async move {
                c.request(s, b).await?;
                Ok(())
            }
        })
        .await?;
        Ok::<_, BoxError>(Stats::new("nats", size, Some(thr), Some(&h)))
    }
    .await;
    for t in tasks {
        t.abort();
    }
    measured
}

/// Request/reply: one responder.
pub(super) async fn reqrep(url: &str, size: usize, budget: Budget) -> Result<Stats, BoxError> {
    let subject = format!("bench.rr.{}", super::measure::random_tag());
    round_trips(url, &subject, None, 1, size, budget).await
}

/// Anycast: [`QUEUE_RESPONDERS`] responders in one queue group, each
/// request going to one of them.
pub(super) async fn anycast(url: &str, size: usize, budget: Budget) -> Result<Stats, BoxError> {
    let subject = format!("bench.ac.{}", super::measure::random_tag());
    round_trips(url, &subject, Some("echo"), QUEUE_RESPONDERS, size, budget).await
}

impl Recv for async_nats::Subscriber {
    async fn next(&mut self) -> bool {
        StreamExt::next(self).await.is_some()
    }
}

/// Pub/sub: `n` messages from one connection to a subscriber on another.
pub(super) async fn pubsub(url: &str, size: usize, n: u64) -> Result<Stats, BoxError> {
    let subject = format!("bench.ps.{}", super::measure::random_tag());
    let slow = Arc::new(AtomicU64::new(0));
    let burst = usize::try_from(n)
        .unwrap_or(usize::MAX)
        .saturating_add(1024);
    let sub_client = connect(url, burst, Some(slow.clone())).await?;
    let mut sub = sub_client.subscribe(subject.clone()).await?;
    sub_client.flush().await?;
    let publisher = connect(url, 1024, None).await?;
    let body = Bytes::from(vec![7u8; size]);
    let (thr, lost) = stream(
        n,
        move |n, done| async move {
            for _ in 0..n {
                publisher.publish(subject.clone(), body.clone()).await?;
            }
            publisher.flush().await?;
            let _ = done.await;
            Ok(())
        },
        |n| count_until(n, &mut sub),
    )
    .await?;
    let slow = slow.load(Ordering::Relaxed);
    if lost > 0 || slow > 0 {
        eprintln!(
            "      nats pub/sub {size} B: {lost} of {n} lost; {slow} slow-consumer event(s) at the subscriber"
        );
    }
    Ok(Stats::stream("nats", size, thr, n, lost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_port_is_read_from_the_servers_log_line() {
        let line = "[12380] 2026/12/04 18:53:27.686385 [INF] Listening for client connections on 127.0.0.1:46201";
        assert_eq!(client_port(line), Some(46201));
        assert_eq!(
            client_port("[1] [INF] Listening for client connections on [::1]:4222\n"),
            Some(4222)
        );
        assert_eq!(client_port("[12380] [INF] Server is ready"), None);
        assert_eq!(
            client_port("[1] [INF] Listening for client connections on 0.0.0.0:0"),
            None
        );
        assert_eq!(
            client_port("[1] [INF] Listening for client connections on host:port"),
            None
        );
    }

    #[test]
    fn a_skip_names_nats_and_the_reason() {
        let m = skip_message("nats-server is not on PATH");
        assert_eq!(m, "NATS baselines skipped: nats-server is not on PATH");
    }

    #[test]
    fn a_missing_binary_is_not_found_on_path() {
        assert!(!on_path("zfabric-no-such-binary-on-any-path"));
    }
}

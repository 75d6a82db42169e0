//! `zfabric pub|sub|push|pull`: the socket patterns from a terminal.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zfabric::{Delivery, RecvError};

use super::security::CurveArgs;
use super::{json_arg, stop_signal, Place};
use crate::app::metrics::Common;
use crate::app::{BoxError, Incomplete, UsageError};

/// What to send.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Send {
    #[command(flatten)]
    place: Place,
    /// The body, as JSON (sent as MessagePack).
    #[arg(long, conflicts_with = "size")]
    data: Option<String>,
    /// Instead of --data: a generated body of about this many bytes
    /// (`{"seq": N, "pad": "xxx…"}`).
    #[arg(long)]
    size: Option<usize>,
    /// Messages to send (default: until SIGINT/SIGTERM).
    #[arg(long)]
    count: Option<u64>,
    /// Messages per second (default: as fast as the socket takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// At the end, wait up to this many milliseconds for the last messages
    /// to leave (then say what did not).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    linger: u64,
    #[command(flatten)]
    curve: CurveArgs,
    #[command(flatten)]
    common: Common,
}

/// `zfabric pub` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PubArgs {
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Before publishing, wait (up to --wait-ms) until this many
    /// subscribers are subscribed: pub/sub delivers only to subscriptions
    /// that exist when a message is published. Default: 1 with --connect,
    /// 0 with --bind.
    #[arg(long, value_name = "N")]
    subscribers: Option<usize>,
    /// How long to wait for --subscribers, in milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    wait_ms: u64,
    /// Start a trace: every message goes out in it (W3C `traceparent`),
    /// and its trace id is printed on stderr (`trace <32 hex digits>`).
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    send: Send,
}

/// `zfabric sub` / `zfabric pull` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RecvArgs {
    #[command(flatten)]
    place: Place,
    /// Stop after this many messages (default: until SIGINT/SIGTERM).
    #[arg(long)]
    count: Option<u64>,
    /// One JSON object per line instead of `topic seq body`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    curve: CurveArgs,
    #[command(flatten)]
    common: Common,
}

/// `zfabric sub` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SubArgs {
    /// Topic prefix to subscribe to (repeatable; "" for everything).
    #[arg(long, required = true)]
    topic: Vec<String>,
    #[command(flatten)]
    recv: RecvArgs,
}

impl Send {
    fn body(&self, seq: u64) -> Result<Value, BoxError> {
        match (&self.data, self.size) {
            (Some(d), _) => json_arg(d),
            (None, Some(n)) => Ok(json!({ "seq": seq, "pad": "x".repeat(n.saturating_sub(24)) })),
            (None, None) => Ok(json!({ "seq": seq })),
        }
    }

    /// Sends with `one` as the options say; returns how many were sent.
    async fn drive<F, Fut>(&self, mut one: F) -> Result<u64, BoxError>
    where
        F: FnMut(Value) -> Fut,
        Fut: std::future::Future<Output = Result<(), zfabric::SendError>>,
    {
        // Validate the body once, up front: a bad --data is exit code 2.
        self.body(0)?;
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return Err(UsageError("--rate must be positive".into()).into());
        }
        let start = tokio::time::Instant::now();
        let mut sent = 0u64;
        let stop = stop_signal();
        tokio::pin!(stop);
        while self.count.is_none_or(|c| sent < c) {
            if let Some(rate) = self.rate {
                let at = start + Duration::from_secs_f64(sent as f64 / rate);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = &mut stop => break,
                }
            }
            let body = self.body(sent)?;
            tokio::select! {
                r = one(body) => r?,
                _ = &mut stop => break,
            }
            sent += 1;
        }
        Ok(sent)
    }
}

/// `zfabric pub`.
pub(crate) async fn publish(args: PubArgs) -> Result<(), BoxError> {
    args.send.common.start().await?;
    let p: zfabric::Publisher<Value> = args
        .send
        .place
        .builder(&args.send.curve)?
        .publisher()
        .await?;
    listening(p.endpoints());
    let want = args
        .subscribers
        .unwrap_or(usize::from(args.send.place.connect.is_some()));
    if want > 0 {
        let wait = Duration::from_millis(args.wait_ms);
        if tokio::time::timeout(wait, p.wait_subscribers(want))
            .await
            .is_err()
        {
            eprintln!(
                "{} of {want} subscribers subscribed after {wait:?}; publishing anyway",
                p.subscribers()
            );
        }
    }
    let started = Instant::now();
    let topic = args.topic.clone();
    let drive = args.send.drive(|v| {
        let (p, topic) = (&p, &topic);
        async move { p.publish(topic, &v).await }
    });
    let sent = if args.trace {
        let cx = zfabric::trace::TraceContext::new_trace();
        eprintln!("trace {}", cx.trace_id_hex());
        zfabric::trace::with_context(cx, drive).await?
    } else {
        drive.await?
    };
    let elapsed = started.elapsed();
    let stats = p.close(Duration::from_millis(args.send.linger)).await;
    eprintln!(
        "published {sent} messages on {:?} in {elapsed:.2?}",
        args.topic
    );
    eprint!("{}", publish_report(&stats));
    if sent > 0 && stats.written == 0 {
        return Err(Incomplete(format!("none of the {sent} messages reached a subscriber")).into());
    }
    Ok(())
}

/// What `zfabric pub` says at the end: what it knows was delivered, what
/// was dropped and why, and what it cannot know.
fn publish_report(s: &zfabric::PublishStats) -> String {
    let mut out = format!(
        "  {} subscriber connection(s) at the end; deliveries owed {} (one per matching subscriber per message): \
         written {}, dropped {} (slow subscriber {}, link down {}), unaccounted {}\n",
        s.subscribers,
        s.owed,
        s.written,
        s.dropped_slow + s.dropped_link,
        s.dropped_slow,
        s.dropped_link,
        s.unaccounted()
    );
    if s.unaccounted() > 0 {
        out.push_str(&format!(
            "  {} deliveries still queued (e.g. for a subscriber whose link is down) or in flight \
             when the linger ran out: lost at exit (counted linger_expired)\n",
            s.unaccounted()
        ));
    }
    if s.no_subscriber > 0 {
        out.push_str(&format!(
            "  {} published while no subscriber was subscribed: dropped (no_subscriber)\n",
            s.no_subscriber
        ));
    }
    out.push_str(
        "  pub/sub is at-most-once without acknowledgements: \"written\" means handed to a \
         subscriber's connection; whether its process read them is not known here\n",
    );
    out
}

/// `zfabric push`.
pub(crate) async fn push(args: Send) -> Result<(), BoxError> {
    args.common.start().await?;
    let p: zfabric::Pusher<Value> = args.place.builder(&args.curve)?.pusher().await?;
    listening(p.endpoints());
    let started = Instant::now();
    let sent = args
        .drive(|v| {
            let p = &p;
            async move { p.send(&v).await }
        })
        .await?;
    let elapsed = started.elapsed();
    let linger = Duration::from_millis(args.linger);
    let stats = p.close(linger).await;
    eprintln!(
        "pushed {sent} messages in {elapsed:.2?}: {} written to a puller's connection, {} not",
        stats.written, stats.unsent
    );
    eprintln!(
        "  push/pull has no acknowledgements: what a puller that dies holds unread \
         (its queue, the socket buffers) is lost without a count here"
    );
    if stats.unsent > 0 {
        return Err(Incomplete(format!(
            "{} messages (estimated from bytes) had not left for a puller after the {linger:?} linger; \
             they are lost when this process exits (is a puller listening?)",
            stats.unsent
        ))
        .into());
    }
    Ok(())
}

/// Says where a bound socket listens (ports resolved), on stderr.
/// Says where the socket listens; it is open, so the command is ready.
fn listening(eps: &[zfabric::Endpoint]) {
    for ep in eps {
        eprintln!("listening on {ep}");
    }
    crate::app::health::set_ready();
}

/// Prints one message on stdout; `false` once stdout is closed (`sub |
/// head`), so the command stops receiving instead of panicking.
fn print(d: &Delivery<Value>, json_lines: bool) -> bool {
    use std::io::Write;
    let topic = d.topic_str().unwrap_or("");
    let seq = d.header().seq;
    let body = body_json(d);
    let mut out = std::io::stdout().lock();
    let written = if json_lines {
        writeln!(
            out,
            "{}",
            json!({ "topic": topic, "seq": seq, "missed_before": d.missed_before, "body": body })
        )
    } else {
        let gap = if d.missed_before > 0 {
            writeln!(out, "# {} messages lost before this one", d.missed_before)
        } else {
            Ok(())
        };
        gap.and_then(|_| writeln!(out, "{topic} {seq} {body}"))
    };
    written.and_then(|_| out.flush()).is_ok()
}

/// A message's body as JSON: MessagePack (content type 0) decoded; an
/// opaque body (content type 1) as a string when it is UTF-8, else as
/// `{"hex": "…"}`, never decoded as MessagePack.
fn body_json(d: &Delivery<Value>) -> Value {
    match d.header().content_type {
        zfabric::wire::ContentType::Raw => opaque_json(d.body()),
        zfabric::wire::ContentType::MsgPack => d
            .decode()
            .unwrap_or_else(|e| json!({ "undecodable": e.to_string() })),
    }
}

/// Opaque bytes as JSON: a string when they are UTF-8, else their hex.
fn opaque_json(body: &[u8]) -> Value {
    match std::str::from_utf8(body) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => {
            let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
            json!({ "hex": hex })
        }
    }
}

/// A receiving socket.
enum Rx {
    Sub(zfabric::Subscriber<Value>),
    Pull(zfabric::Puller<Value>),
}

impl Rx {
    async fn next(&mut self) -> Result<Delivery<Value>, RecvError> {
        match self {
            Rx::Sub(s) => s.recv().await,
            Rx::Pull(p) => p.recv().await,
        }
    }
}

/// Receives until the count or a signal; returns how many.
async fn receive(args: &RecvArgs, rx: &mut Rx) -> u64 {
    let mut got = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    while args.count.is_none_or(|c| got < c) {
        tokio::select! {
            d = rx.next() => match d {
                Ok(d) => {
                    got += 1;
                    if !print(&d, args.json) {
                        eprintln!("stdout closed; stopping");
                        break;
                    }
                }
                Err(_) => break,
            },
            _ = &mut stop => break,
        }
    }
    got
}

/// `zfabric sub`.
pub(crate) async fn subscribe(args: SubArgs) -> Result<(), BoxError> {
    args.recv.common.start().await?;
    let prefixes: Vec<&str> = args.topic.iter().map(String::as_str).collect();
    let s: zfabric::Subscriber<Value> = args
        .recv
        .place
        .builder(&args.recv.curve)?
        .subscriber(&prefixes)
        .await?;
    listening(s.endpoints());
    let started = Instant::now();
    let mut rx = Rx::Sub(s);
    let got = receive(&args.recv, &mut rx).await;
    let lost = match &rx {
        Rx::Sub(s) => s.lost(),
        Rx::Pull(_) => 0,
    };
    eprintln!(
        "received {got} messages in {:.2?}; lost {lost} (sequence gaps)",
        started.elapsed()
    );
    Ok(())
}

/// `zfabric pull`.
pub(crate) async fn pull(args: RecvArgs) -> Result<(), BoxError> {
    args.common.start().await?;
    let p: zfabric::Puller<Value> = args.place.builder(&args.curve)?.puller().await?;
    listening(p.endpoints());
    let started = Instant::now();
    let got = receive(&args, &mut Rx::Pull(p)).await;
    eprintln!("pulled {got} messages in {:.2?}", started.elapsed());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_bodies_print_as_text_or_hex_never_as_messagepack() {
        // b"hello" would decode as MessagePack 104 (its first byte, 'h').
        assert_eq!(opaque_json(b"hello"), json!("hello"));
        assert_eq!(opaque_json(b""), json!(""));
        assert_eq!(opaque_json(&[0xff, 0x00, 0x7f]), json!({ "hex": "ff007f" }));
    }
}

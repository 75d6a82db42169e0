//! Distributed traces: the W3C trace context in every message, and a
//! `tracing` span per operation, named and attributed after
//! OpenTelemetry's messaging conventions.
//!
//! # What it guarantees
//! - **Propagation.** A message sent from inside a trace carries it: the
//!   envelope header's `traceparent` (and `tracestate`, when there is one).
//!   A request handler, group handler or event consumer runs with its
//!   message's context in a task-local, the way its deadline is
//!   ([`resilience::deadline`](crate::resilience::deadline)), so its own
//!   calls, publishes and sends continue the caller's trace with nothing
//!   passed by hand: through chains ([`chain::forward`](crate::topology::chain::forward)),
//!   branches, the aggregator, events, the gateway and the forwarder.
//! - **Spans.** Each operation of a traced message is one span on the
//!   `zfabric::trace` target at `INFO` level: its tracing name is the
//!   operation, and it carries the fields an OpenTelemetry bridge reads
//!   (`otel.name` such as `call pricing` or `publish orders.created`,
//!   `otel.kind`, `messaging.system = "zeromq"`,
//!   `messaging.destination.name`, `messaging.operation.name` and
//!   `.type`), and the W3C ids (`trace_id`, `span_id`, `parent_span_id`,
//!   lower-case hex) that the messages it sends name as their parent.
//!   | operation | kind | span name | made by |
//!   |---|---|---|---|
//!   | call | client | `call <service or endpoint>` | node calls, [`Client`](crate::Client) requests |
//!   | serve | server | `serve <service or endpoint>` | node services, [`Server`](crate::Server) handlers |
//!   | publish | producer | `publish <topic>` | [`Publisher`](crate::Publisher), node publish |
//!   | emit | producer | `emit <topic>` | [`events::emit`](crate::topology::events::emit) |
//!   | send | producer | `send <endpoint, group, peer or event service>` | [`Pusher`](crate::Pusher), multicast, unicast, event delivery |
//!   | receive | consumer | `receive <topic, endpoint or inbox>` | [`Subscriber`](crate::Subscriber), [`Puller`](crate::Puller), node subscriptions and inbox |
//!   | process | consumer | `process <group or event service>` | group handlers, event consumers |
//! - **Cost when off.** With no trace in the task and no subscriber that
//!   wants `zfabric::trace` spans, an operation costs one task-local look-up
//!   and one cached callsite check: no span, no id, no allocation. A
//!   message that arrives with a context but meets no such subscriber
//!   passes the context on as it came (shared, not copied).
//!
//! # When a trace starts
//! A call, node publish, multicast, unicast or emit made outside any trace
//! starts one when [`set_sampling`] is on and a subscriber wants the spans
//! (the `zfabric` commands turn it on when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set). Socket-level publishes and pushes never start one: they only
//! continue the trace of the task they are made in, so a pub/sub hot loop
//! costs nothing unless it runs inside a trace. Start a trace by hand with
//! [`with_context`]`(`[`TraceContext::new_trace`]`(), …)` (what
//! `zfabric req --trace` does).
//!
//! # Not guaranteed
//! Export is not the library's: it only makes `tracing` spans (the
//! `zfabric` binary bridges them to OpenTelemetry and exports over OTLP).
//! Work spawned with `tokio::spawn` from a handler leaves the task and its
//! trace behind: wrap it in [`with_context`]`(`[`current`]`()…)`. A
//! subscriber or puller hands the context on in the delivery's header
//! ([`Delivery::trace_context`](crate::Delivery::trace_context)): what the
//! application does after `recv` continues the trace only inside
//! [`with_context`]. Control traffic (heartbeats, joins, leaves) is not
//! traced. A retried call is one span, whatever its attempts.

mod context;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::Instrument;

pub use context::TraceContext;
pub(crate) use context::{random_span_id, random_trace_id};

use crate::wire::Header;

/// The `tracing` target of every span this module makes.
pub const TARGET: &str = "zfabric::trace";

/// The `messaging.system` of every span.
pub const MESSAGING_SYSTEM: &str = "zeromq";

tokio::task_local! {
    static CURRENT: TraceContext;
}

static SAMPLING: AtomicBool = AtomicBool::new(false);

/// Whether calls (and node publishes, multicasts, unicasts and emits) made
/// outside any trace start a new one. Off by default; an application that
/// exports traces turns it on.
pub fn set_sampling(on: bool) {
    SAMPLING.store(on, Ordering::Relaxed);
}

/// Whether new traces are started ([`set_sampling`]).
pub fn sampling() -> bool {
    SAMPLING.load(Ordering::Relaxed)
}

/// The trace this task works in: the context of the message its handler
/// serves, or the one given to [`with_context`]. `None` outside both.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `fut` in trace `cx`: every call, publish and send it makes
/// continues it.
pub async fn with_context<F: Future>(cx: TraceContext, fut: F) -> F::Output {
    CURRENT.scope(cx, fut).await
}

/// Whether this task works in a trace (cheaper than [`current`]: no
/// clone).
pub(crate) fn in_trace() -> bool {
    CURRENT.try_with(|_| ()).is_ok()
}

/// Whether an operation that may start a trace could be traced at all:
/// inside a trace, or with sampling on.
pub(crate) fn may_trace() -> bool {
    sampling() || in_trace()
}

/// The trace context a header carries, if it carries a valid one.
pub fn from_header(header: &Header) -> Option<TraceContext> {
    TraceContext::from_fields(header.traceparent.as_ref()?, header.tracestate.as_ref())
}

/// An operation, as its span names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Call,
    Serve,
    Publish,
    Emit,
    Send,
    Receive,
    Process,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Call => "call",
            Op::Serve => "serve",
            Op::Publish => "publish",
            Op::Emit => "emit",
            Op::Send => "send",
            Op::Receive => "receive",
            Op::Process => "process",
        }
    }

    /// The OpenTelemetry span kind.
    fn kind(self) -> &'static str {
        match self {
            Op::Call => "client",
            Op::Serve => "server",
            Op::Publish | Op::Emit | Op::Send => "producer",
            Op::Receive | Op::Process => "consumer",
        }
    }

    /// `messaging.operation.type` of the conventions.
    fn operation_type(self) -> &'static str {
        match self {
            Op::Call | Op::Publish | Op::Emit | Op::Send => "send",
            Op::Serve | Op::Process => "process",
            Op::Receive => "receive",
        }
    }
}

/// Lower-case hex of an id, formatted when a subscriber records it.
struct Hex<const W: usize>(u128);

impl<const W: usize> fmt::Display for Hex<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0w$x}", self.0, w = W)
    }
}

/// `<operation> <destination>`, the span's OpenTelemetry name.
struct SpanName<'a>(&'static str, &'a dyn fmt::Display);

impl fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// One operation's span and the context the messages it sends carry.
#[derive(Debug)]
pub(crate) struct Traced {
    span: tracing::Span,
    cx: Option<TraceContext>,
}

impl Traced {
    /// Untraced: no span, no context.
    pub(crate) fn none() -> Self {
        Traced {
            span: tracing::Span::none(),
            cx: None,
        }
    }

    /// Whether messages of this operation carry a context.
    pub(crate) fn is_traced(&self) -> bool {
        self.cx.is_some()
    }

    /// The context messages of this operation carry.
    #[cfg(test)]
    pub(crate) fn context(&self) -> Option<&TraceContext> {
        self.cx.as_ref()
    }

    /// Writes the context into an outgoing header.
    pub(crate) fn stamp(&self, header: &mut Header) {
        if let Some(cx) = &self.cx {
            header.traceparent = cx.header().cloned();
            header.tracestate = cx.state().cloned();
        }
    }

    /// The `traceparent` and `tracestate` outgoing messages carry.
    pub(crate) fn fields(&self) -> (Option<Arc<str>>, Option<Arc<str>>) {
        match &self.cx {
            Some(cx) => (cx.header().cloned(), cx.state().cloned()),
            None => (None, None),
        }
    }

    /// Records the service hop (server spans).
    pub(crate) fn hop(&self, hops: u8) {
        self.span.record("zfabric.hop", hops);
    }

    /// Marks the span failed, with `outcome` as `error.type`.
    pub(crate) fn failed(&self, outcome: &str) {
        self.span.record("otel.status_code", "error");
        self.span.record("error.type", outcome);
    }

    /// `fut` inside the span, with the context as the task's trace (so
    /// that what it sends continues it). Untraced, `fut` runs as it is.
    /// The future owns what it needs (it may be moved to a bulkhead's
    /// threads).
    pub(crate) fn bind<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        let (cx, span) = (self.cx.clone(), self.span.clone());
        async move {
            match cx {
                None => fut.await,
                Some(cx) => CURRENT.scope(cx, fut).instrument(span).await,
            }
        }
    }

    /// Runs `fut` inside the span only: the task's trace is left as it is.
    pub(crate) async fn within<F: Future>(&self, fut: F) -> F::Output {
        if self.span.is_none() {
            fut.await
        } else {
            fut.instrument(self.span.clone()).await
        }
    }
}

/// Whether a subscriber wants this module's spans.
fn spans_wanted() -> bool {
    tracing::span_enabled!(target: "zfabric::trace", tracing::Level::INFO)
}

/// An operation that sends (call, publish, emit, send): it continues the
/// task's trace; outside one it starts a new trace only if `may_start`
/// and sampling is on (and a subscriber wants the spans).
pub(crate) fn outgoing(op: Op, dest: &dyn fmt::Display, may_start: bool) -> Traced {
    let parent = current();
    if parent.is_none() && !may_start {
        return Traced::none();
    }
    start(op, dest, parent, may_start)
}

/// An operation on a received message (serve, receive, process): it
/// continues the trace the message carries; untraced messages stay so.
pub(crate) fn incoming(op: Op, dest: &dyn fmt::Display, header: &Header) -> Traced {
    if header.traceparent.is_none() {
        return Traced::none();
    }
    match from_header(header) {
        Some(parent) => start(op, dest, Some(parent), false),
        None => Traced::none(),
    }
}

fn start(op: Op, dest: &dyn fmt::Display, parent: Option<TraceContext>, may_start: bool) -> Traced {
    let wanted = spans_wanted();
    let cx = match (&parent, wanted) {
        (None, true) if may_start && sampling() => {
            TraceContext::of_span(random_trace_id(), random_span_id(), 0x01, None)
        }
        (None, _) => return Traced::none(),
        // Nobody records spans here, or the trace is not sampled (its
        // caller records none): pass the trace on as it came.
        (Some(p), _) if !wanted || !p.sampled() => {
            return Traced {
                span: tracing::Span::none(),
                cx: Some(p.passed_on()),
            }
        }
        (Some(p), _) => p.child(random_span_id()),
    };
    let parent_span = parent.as_ref().and_then(TraceContext::span_id);
    let span = make_span(op, dest, &cx, parent_span);
    Traced { span, cx: Some(cx) }
}

/// The span of `op`: one callsite per operation, so that its tracing name
/// is the operation.
fn make_span(
    op: Op,
    dest: &dyn fmt::Display,
    cx: &TraceContext,
    parent: Option<u64>,
) -> tracing::Span {
    macro_rules! span {
        ($name:literal) => {
            tracing::info_span!(
                target: "zfabric::trace",
                $name,
                otel.name = %SpanName(op.name(), dest),
                otel.kind = op.kind(),
                otel.status_code = tracing::field::Empty,
                messaging.system = MESSAGING_SYSTEM,
                messaging.operation.name = op.name(),
                messaging.operation.type = op.operation_type(),
                messaging.destination.name = %dest,
                trace_id = %Hex::<32>(cx.trace_id()),
                span_id = %Hex::<16>(cx.span_id().unwrap_or(0) as u128),
                parent_span_id = parent.map(|p| tracing::field::display(Hex::<16>(p as u128))),
                tracestate = cx.tracestate(),
                zfabric.hop = tracing::field::Empty,
                error.type = tracing::field::Empty,
            )
        };
    }
    match op {
        Op::Call => span!("call"),
        Op::Serve => span!("serve"),
        Op::Publish => span!("publish"),
        Op::Emit => span!("emit"),
        Op::Send => span!("send"),
        Op::Receive => span!("receive"),
        Op::Process => span!("process"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outside_a_trace_nothing_is_made() {
        assert!(current().is_none());
        for op in [Op::Call, Op::Publish, Op::Send, Op::Emit] {
            let t = outgoing(op, &"x", true);
            assert!(!t.is_traced(), "no subscriber, no sampling: untraced");
        }
        let h = Header::new(crate::wire::Kind::Request, crate::wire::MessageId(1), 1, 0);
        assert!(!incoming(Op::Serve, &"x", &h).is_traced());
    }

    #[tokio::test]
    async fn a_trace_in_the_task_is_passed_on_and_continued_by_handlers() {
        let t = TraceContext::new_trace();
        let sent = with_context(t.clone(), async {
            assert_eq!(current(), Some(t.clone()));
            let op = outgoing(Op::Publish, &"orders.created", false);
            let mut h = Header::new(crate::wire::Kind::Event, crate::wire::MessageId(1), 1, 0);
            op.stamp(&mut h);
            h
        })
        .await;
        assert!(current().is_none(), "the scope ends with the future");
        let cx = from_header(&sent).expect("the header carries the trace");
        assert_eq!(cx.trace_id(), t.trace_id());
        assert!(cx.span_id().is_some());
        // The receiving side continues it: its handler's sends carry it on
        // (no subscriber here: unchanged).
        let serve = incoming(Op::Serve, &"svc", &sent);
        let onward = serve
            .bind(async { outgoing(Op::Call, &"next", true).context().cloned() })
            .await
            .unwrap();
        assert_eq!(onward, cx);
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let mut h = Header::new(crate::wire::Kind::Request, crate::wire::MessageId(1), 1, 0);
        h.traceparent = Some("00-nothex".into());
        assert!(from_header(&h).is_none());
        assert!(!incoming(Op::Serve, &"x", &h).is_traced());
    }
}

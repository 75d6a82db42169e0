//! The call path: from a request to the member that answers it.
//!
//! Guarantees: an anycast call picks a member through [`Routing`] (alive
//! first, breakers honoured), is judged by that member's breaker exactly
//! once per attempt, and is retried on another member only if idempotent,
//! after a member failure, with jittered backoff, within the attempts,
//! the deadline and the retry budget; every attempt carries the same call
//! id. A member whose link is known to be down is skipped for another
//! (once per call, idempotent or not: nothing was sent to it, and its
//! breaker counts a failure). A call to this node's own service runs in the caller's task, with
//! no socket, through the same service path (hop limit, dedup, bulkhead,
//! deadline). A member whose link is down fails at once (`PeerGone`); a
//! link still connecting gets two heartbeats; a member declared gone by
//! expiry (silent) while a call to it is out fails that call then
//! (`PeerGone`), not at its deadline; one that left gracefully drains and
//! answers it. A call that finds no member
//! to take it (none serves the service, or every breaker is open) fails
//! at once, or, with [`CallOptions::wait_for_member`], waits within its
//! deadline for a membership change or the first breaker's trial. Does not: encode or decode
//! bodies (they stay the caller's `Bytes`), or know the message format
//! (the [`Link`](super::links::Link) does).

use std::time::Duration;

use bytes::Bytes;

use super::error::{from_remote, CallError};
use super::links::Failed;
use super::membership::{MembershipEvent, PeerId, PeerState};
use super::options::CallOptions;
use super::protocol::{Call, TraceFields};
use super::routing::Pick;
use super::shared::Shared;
use crate::resilience::deadline;
use crate::telemetry::RequestTimer;
use crate::trace;
use crate::wire;
use crate::RequestError;

/// Records a call's calling-side metrics (in flight, outcome, duration).
async fn measured(
    s: &Shared,
    service: &str,
    work: impl std::future::Future<Output = Result<Bytes, CallError>>,
) -> Result<Bytes, CallError> {
    let timer = RequestTimer::start(s.routing.client_metrics(service));
    let r = work.await;
    timer.finish(match &r {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    });
    r
}

/// The span a call to `service` makes: a call, or for the service of an
/// event consumer group (`@ev/…`) the send of an event to it.
fn call_op(service: &str) -> trace::Op {
    if service.starts_with(crate::topology::events::EVENT_SERVICE_PREFIX) {
        trace::Op::Send
    } else {
        trace::Op::Call
    }
}

/// A call's future, boxed.
type Boxed<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, CallError>> + Send + 'a>>;

/// Runs a call in its client span (one for all its attempts), the span's
/// context going into every attempt's header.
async fn traced(
    op: trace::Traced,
    work: impl std::future::Future<Output = Result<Bytes, CallError>>,
) -> Result<Bytes, CallError> {
    let r = op.within(work).await;
    if let Err(e) = &r {
        op.failed(e.outcome());
    }
    r
}

/// The traced path, made and boxed out of line: the untraced call's
/// future and stack frames stay what they were (a call to this node's own
/// service nests in its caller's task, and a forwarding loop nests up to
/// the hop limit).
#[inline(never)]
fn anycast_traced<'a>(
    s: &'a Shared,
    service: &'a str,
    body: Bytes,
    opts: CallOptions,
    op: trace::Traced,
) -> Boxed<'a> {
    let fields = op.fields();
    Box::pin(traced(
        op,
        measured(
            s,
            service,
            anycast_unmeasured(s, service, body, opts, fields),
        ),
    ))
}

/// Calls `service` on one member serving it, as `opts` say.
pub(super) async fn anycast(
    s: &Shared,
    service: &str,
    body: Bytes,
    opts: CallOptions,
) -> Result<Bytes, CallError> {
    if trace::may_trace() {
        let op = trace::outgoing(call_op(service), &service, true);
        if op.is_traced() {
            return anycast_traced(s, service, body, opts, op).await;
        }
    }
    measured(
        s,
        service,
        anycast_unmeasured(s, service, body, opts, (None, None)),
    )
    .await
}

async fn anycast_unmeasured(
    s: &Shared,
    service: &str,
    body: Bytes,
    opts: CallOptions,
    trace: TraceFields,
) -> Result<Bytes, CallError> {
    let timeout = deadline::budget(opts.timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let call_id = opts.call_id.unwrap_or_else(|| wire::random_u64() | 1);
    if opts.idempotent {
        s.routing.deposit(service);
    }
    let mut tried: Vec<PeerId> = Vec::new();
    let mut attempt = 1u32;
    // Interned once a member is found: no allocation of the name per call.
    let mut name = None;
    // Membership changes, for a call that waits for a member.
    let mut changes = opts.wait_for_member.then(|| s.view.subscribe());
    loop {
        let mut members = s.view.serving(service);
        // This node is a member too when it serves the service itself.
        if s.services.contains(service) {
            members.push((s.view.me().id, PeerState::Alive));
        }
        let id = match s
            .routing
            .choose(service, &members, &tried, opts.balance, |id| {
                s.links.in_flight(id)
            }) {
            Pick::Member(id) => id,
            unroutable => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if let (Some(changes), false) = (changes.as_mut(), left.is_zero()) {
                    wait_for_member(changes, unroutable, left).await;
                    continue;
                }
                return Err(match unroutable {
                    Pick::AllOpen(retry_in) => CallError::CircuitOpen {
                        service: service.to_owned(),
                        retry_in,
                    },
                    _ => CallError::NoSuchService(service.to_owned()),
                });
            }
        };
        // A member whose link is known to be down would not be sent the
        // call: skip it, once, for another member, idempotent or not
        // (nothing is processed), and tell its breaker. Once every member
        // has been tried the call goes ahead and fails as it would.
        if !tried.contains(&id) && s.links.known_down(id) {
            drop(s.routing.judge(id, service));
            tried.push(id);
            continue;
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let call = Call {
            service: name.get_or_insert_with(|| s.routing.name(service)).clone(),
            body: body.clone(),
            call_id,
            priority: opts.priority,
            trace: trace.clone(),
        };
        match guarded(s, id, call, remaining).await {
            Err(e)
                if opts.idempotent
                    && e.is_member_failure()
                    && attempt < opts.retry.max_attempts =>
            {
                let backoff = opts.retry.backoff(attempt, wire::random_u64());
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if backoff >= left {
                    return Err(e);
                }
                if !s.routing.withdraw(service) {
                    metrics::counter!(crate::resilience::RETRY_BUDGET_EXHAUSTED,
                        "node" => s.routing.node_label().clone(), "service" => service.to_owned())
                    .increment(1);
                    return Err(e);
                }
                metrics::counter!(crate::resilience::RETRIES,
                    "node" => s.routing.node_label().clone(), "service" => service.to_owned())
                .increment(1);
                tracing::debug!(peer = %id, error = %e, attempt, "retrying an idempotent request");
                tried.push(id);
                tokio::time::sleep(backoff).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Waits, at most `left`, until a call that found no member to take it
/// may find one: a membership change, or (every breaker open) the end of
/// the first open interval. A half-open breaker whose trial slots are
/// taken is asked again after a short pause.
async fn wait_for_member(
    changes: &mut tokio::sync::broadcast::Receiver<super::membership::MembershipEvent>,
    found: Pick,
    left: Duration,
) {
    const TRIAL_PAUSE: Duration = Duration::from_millis(10);
    let pause = match found {
        Pick::AllOpen(retry_in) => retry_in.max(TRIAL_PAUSE).min(left),
        _ => left,
    };
    // Any change (or a lagged receiver, or a closed one) is worth a look.
    let _ = tokio::time::timeout(pause, changes.recv()).await;
}

/// Calls `service` on the named peer, once, through its breaker.
pub(super) async fn to_peer(
    s: &Shared,
    peer: PeerId,
    service: &str,
    body: Bytes,
    opts: CallOptions,
) -> Result<Bytes, CallError> {
    if trace::may_trace() {
        let op = trace::outgoing(call_op(service), &service, true);
        if op.is_traced() {
            return to_peer_traced(s, peer, service, body, opts, op).await;
        }
    }
    measured(
        s,
        service,
        to_peer_unmeasured(s, peer, service, body, opts, (None, None)),
    )
    .await
}

/// [`anycast_traced`] for a call to a named peer.
#[inline(never)]
fn to_peer_traced<'a>(
    s: &'a Shared,
    peer: PeerId,
    service: &'a str,
    body: Bytes,
    opts: CallOptions,
    op: trace::Traced,
) -> Boxed<'a> {
    let fields = op.fields();
    Box::pin(traced(
        op,
        measured(
            s,
            service,
            to_peer_unmeasured(s, peer, service, body, opts, fields),
        ),
    ))
}

async fn to_peer_unmeasured(
    s: &Shared,
    peer: PeerId,
    service: &str,
    body: Bytes,
    opts: CallOptions,
    trace: TraceFields,
) -> Result<Bytes, CallError> {
    let timeout = deadline::budget(opts.timeout);
    if peer != s.view.me().id && !s.view.knows(peer) {
        return Err(CallError::UnknownPeer(peer));
    }
    if let Err(retry_in) = s.routing.admit(peer, service) {
        return Err(CallError::CircuitOpen {
            service: service.to_owned(),
            retry_in,
        });
    }
    let call = Call {
        service: s.routing.name(service),
        body,
        call_id: opts.call_id.unwrap_or_else(|| wire::random_u64() | 1),
        priority: opts.priority,
        trace,
    };
    guarded(s, peer, call, timeout).await
}

/// A call to one member, judged by its breaker (already admitted): a
/// success or a caller error counts as a success, anything else as a
/// failure.
async fn guarded(
    s: &Shared,
    peer: PeerId,
    call: Call,
    timeout: Duration,
) -> Result<Bytes, CallError> {
    let mut judge = s.routing.judge(peer, &call.service);
    let r = one(s, peer, &call, timeout).await;
    // A caller error (bad_request, not_found, …) is a healthy member's
    // answer.
    if r.as_ref().map_or_else(CallError::is_caller_error, |_| true) {
        judge.success();
    }
    r
}

/// One attempt on one member: locally if it is this node.
async fn one(s: &Shared, peer: PeerId, call: &Call, timeout: Duration) -> Result<Bytes, CallError> {
    if peer == s.view.me().id {
        return local(s, call, timeout).await;
    }
    let link = s
        .links
        .to_member(peer, || s.view.endpoints(peer))
        .await
        .ok_or(CallError::UnknownPeer(peer))?;
    // A member whose connection broke is unreachable until it is back:
    // fail now (a member failure, retried elsewhere if idempotent)
    // instead of queueing the request for a process that may be dead.
    if link.is_down() {
        return Err(CallError::Request(RequestError::PeerGone));
    }
    // A link still making its first connection gets two heartbeats.
    let patience = (s.config.membership.heartbeat_interval * 2).min(timeout);
    if tokio::time::timeout(patience, link.wait_connected())
        .await
        .is_err()
    {
        return Err(CallError::Request(RequestError::PeerGone));
    }
    let hops = deadline::current_hops().saturating_add(1);
    // A member declared gone while the call is out (it went silent: a
    // partition, a host that died without closing its connections) will
    // not answer: fail the call then (`PeerGone`, retried elsewhere if
    // idempotent) instead of at its deadline.
    let mut events = s.view.subscribe();
    let declared_gone = async {
        loop {
            match events.recv().await {
                // Gone by expiry only: a member that left gracefully
                // drains, and answers what it has in progress.
                Ok(MembershipEvent::Gone(id)) if id == peer && s.view.expired(peer) => return,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if s.view.state(peer).is_none() || s.view.expired(peer) {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await
                }
            }
        }
    };
    let answer = tokio::select! {
        r = link.call(call, hops, timeout) => r,
        () = declared_gone => return Err(CallError::Request(RequestError::PeerGone)),
    };
    match answer {
        Ok(b) => Ok(b),
        Err(Failed::Request(RequestError::Remote(e))) => Err(from_remote(peer, e, timeout)),
        Err(f) => Err(f.at(peer)),
    }
}

/// Runs a call to one of this node's own services in the caller's task.
/// The handler sees the header a remote caller would have sent (source,
/// deadline, service, call id, priority, hops, op) and the caller's body
/// itself.
async fn local(s: &Shared, call: &Call, timeout: Duration) -> Result<Bytes, CallError> {
    let me = s.view.me().id;
    let svc = s
        .services
        .get(&call.service)
        .ok_or_else(|| CallError::NoSuchService(call.service.to_string()))?;
    let hops = deadline::current_hops().saturating_add(1);
    let id = wire::MessageId(((wire::random_u64() as u128) << 64) | call.call_id as u128);
    let mut header = wire::Header::new(wire::Kind::Request, id, me.0, 0);
    header.deadline = Some(wire::Deadline::after(timeout));
    header.service = Some(call.service.clone());
    header.call_id = call.call_id;
    header.priority = call.priority;
    header.hops = hops;
    header.op = Some(wire::NodeOp::Call);
    (header.traceparent, header.tracestate) = call.trace.clone();
    let work = svc.call(
        &call.service,
        call.call_id,
        call.priority,
        hops,
        call.body.clone(),
        header,
    );
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(from_remote(me, e, timeout)),
        Err(_) => Err(CallError::Request(RequestError::Timeout(timeout))),
    }
}

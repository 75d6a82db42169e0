//! How a node runs one of its services: in which bulkhead, with what
//! deduplication, within which hop limit.
//!
//! A call arriving for a service (from a peer or from this node itself)
//! goes through, in order:
//! 1. the hop limit ([`MAX_HOPS`]): a deeper call is refused with
//!    `too_many_hops` and counted (this is the one place it is checked);
//! 2. the deadline check (work already late is not started);
//! 3. the idempotent-consumer window, if configured: a duplicate of a call
//!    that succeeded gets the cached reply and takes no slot;
//! 4. the bulkhead chosen for the call ([`ServeOptions::bulkhead`],
//!    [`ServeOptions::partitioned`]): a full one refuses at once with the
//!    remote error `rejected`, which the caller sees as
//!    [`CallError::Rejected`](super::CallError::Rejected);
//! 5. the handler, with the call's deadline inherited by its onward calls.
//!
//! Also here: the type-erased handler every service and group runs
//! ([`Handler`]), made from typed or raw handlers. Does not: know
//! membership, links or how calls travel.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::Either;
use tracing::Instrument;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::membership::PeerId;
use crate::messaging::reqrep::Request;
use crate::resilience::{Bulkhead, DedupConfig, DedupKey, IdempotentConsumer, Rejected};
use crate::telemetry::{remote_outcome, RequestMetrics, RequestTimer, Side};
use crate::trace;
use crate::wire::{self, Header, RemoteError};

/// Calls deeper than this many service hops are refused (`too_many_hops`):
/// a forwarding loop ends instead of running until the deadline.
pub const MAX_HOPS: u8 = 32;

/// The future a handler returns: the reply's encoded body.
pub(super) type BoxFut = Pin<Box<dyn Future<Output = Result<Bytes, RemoteError>> + Send>>;
/// A service call's future, boxed.
type BoxCall<'a> = Pin<Box<dyn Future<Output = Result<Bytes, RemoteError>> + Send + 'a>>;
/// A handler on encoded bodies, as services and groups run it: the
/// request's header and body as they arrived.
pub(super) type Handler = Arc<dyn Fn(Request<Bytes>) -> BoxFut + Send + Sync>;

/// Wraps a typed handler as one on raw MessagePack bodies.
pub(super) fn typed_handler<Req, Rep, H, Fut>(handler: H) -> Handler
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    H: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Rep, RemoteError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |req: Request<Bytes>| {
        let handler = handler.clone();
        Box::pin(async move {
            let body: Req = wire::decode_body(&req.body).map_err(|e| {
                RemoteError::new(crate::wire::RemoteCode::BadRequest, e.to_string())
            })?;
            let rep = handler(Request {
                body,
                header: req.header,
            })
            .await?;
            wire::encode_body(&rep)
                .map_err(|e| RemoteError::new(crate::wire::RemoteCode::BadReply, e.to_string()))
        }) as BoxFut
    })
}

/// Wraps a handler on [`Bytes`] bodies (proxies, forwarders): it gets the
/// request as it arrived and its reply goes back as it returns it.
pub(super) fn raw_handler<H, Fut>(handler: H) -> Handler
where
    H: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
{
    Arc::new(move |req: Request<Bytes>| Box::pin(handler(req)) as BoxFut)
}

/// The span serving `service` makes: a server span, or for the service of
/// an event consumer group (`@ev/…`) the processing of the event.
fn serve_op(service: &str) -> trace::Op {
    if service.starts_with(crate::topology::events::EVENT_SERVICE_PREFIX) {
        trace::Op::Process
    } else {
        trace::Op::Serve
    }
}

/// The refusal of a call deeper than [`MAX_HOPS`], counted.
fn check_hops(hops: u8) -> Result<(), RemoteError> {
    if hops > MAX_HOPS {
        crate::telemetry::dropped(crate::telemetry::DropReason::TooManyHops, 1);
        return Err(RemoteError::new(
            crate::wire::RemoteCode::TooManyHops,
            format!("{hops} service hops (limit {MAX_HOPS}): a forwarding loop?"),
        ));
    }
    Ok(())
}

/// What a partitioning rule sees of a call.
#[derive(Debug, Clone, Copy)]
pub struct CallInfo<'a> {
    /// The calling node.
    pub caller: PeerId,
    /// The priority the caller gave ([`CallOptions::priority`](super::CallOptions::priority)).
    pub priority: u8,
    /// The service called.
    pub service: &'a str,
}

type PartitionFn = Arc<dyn Fn(&CallInfo<'_>) -> usize + Send + Sync>;
type KeyFn = Arc<dyn Fn(&Header, u64, &[u8]) -> Option<DedupKey> + Send + Sync>;

/// How a service is run: bulkhead placement and deduplication. The default
/// runs every call directly on the node's runtime, with no dedup.
#[derive(Clone, Default)]
pub struct ServeOptions {
    bulkheads: Vec<Bulkhead>,
    partition: Option<PartitionFn>,
    dedup: Option<(DedupConfig, KeyFn)>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("bulkheads", &self.bulkheads)
            .field("partitioned", &self.partition.is_some())
            .field("dedup", &self.dedup.as_ref().map(|d| d.0))
            .finish()
    }
}

impl ServeOptions {
    /// No bulkhead, no dedup.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs every call in `bulkhead` (which other services may share).
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkheads = vec![bulkhead];
        self.partition = None;
        self
    }

    /// Runs each call in one of `bulkheads`, chosen by `rule` (an index,
    /// taken modulo the number of bulkheads), e.g. by caller or priority.
    pub fn partitioned(
        mut self,
        bulkheads: Vec<Bulkhead>,
        rule: impl Fn(&CallInfo<'_>) -> usize + Send + Sync + 'static,
    ) -> Self {
        self.bulkheads = bulkheads;
        self.partition = Some(Arc::new(rule));
        self
    }

    /// Partitions by priority: priority `p` runs in `bulkheads[p]` (the
    /// last one for higher priorities).
    pub fn by_priority(self, bulkheads: Vec<Bulkhead>) -> Self {
        let last = bulkheads.len().saturating_sub(1);
        self.partitioned(bulkheads, move |c| (c.priority as usize).min(last))
    }

    /// Partitions by calling node: each caller always lands in the same
    /// bulkhead, so one noisy caller fills only its own.
    pub fn by_caller(self, bulkheads: Vec<Bulkhead>) -> Self {
        self.partitioned(bulkheads, |c| {
            // Fibonacci hashing spreads random ids evenly.
            (c.caller.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
        })
    }

    /// Deduplicates by the caller's logical call id (natural key): a call
    /// retried or redelivered is processed once and the cached reply
    /// returned.
    pub fn dedup(mut self, config: DedupConfig) -> Self {
        self.dedup = Some((
            config,
            Arc::new(|h: &Header, call: u64, _: &[u8]| {
                (call != 0).then_some(DedupKey::Natural(h.source, call))
            }),
        ));
        self
    }

    /// Deduplicates by a business key taken from the request body (e.g. an
    /// e-mail address): two calls with the same key are processed once,
    /// whoever sent them. A body that does not decode as `Req` is not
    /// deduplicated (the handler refuses it).
    pub fn dedup_by<Req, F>(mut self, config: DedupConfig, key: F) -> Self
    where
        Req: DeserializeOwned,
        F: Fn(&Req) -> String + Send + Sync + 'static,
    {
        self.dedup = Some((
            config,
            Arc::new(move |_: &Header, _: u64, body: &[u8]| {
                wire::decode_body::<Req>(body)
                    .ok()
                    .map(|r| DedupKey::Business(key(&r)))
            }),
        ));
        self
    }
}

/// A service as the node runs it.
pub(super) struct Service {
    handler: Handler,
    /// Its serving-side request metrics.
    metrics: Arc<RequestMetrics>,
    bulkheads: Vec<Bulkhead>,
    partition: Option<PartitionFn>,
    dedup: Option<(IdempotentConsumer<Bytes>, KeyFn)>,
}

/// Refusals travel back as remote errors the caller can type.
pub(super) fn rejected_to_remote(r: Rejected) -> RemoteError {
    match r {
        Rejected::Expired { .. } => {
            RemoteError::new(crate::wire::RemoteCode::DeadlineExpired, r.to_string())
        }
        Rejected::Full { .. } | Rejected::Closed { .. } => {
            RemoteError::new(crate::wire::RemoteCode::Rejected, r.to_string())
        }
    }
}

impl Service {
    /// `name` served by the node called `node` (its `node` label).
    pub(super) fn new(node: &str, name: &str, handler: Handler, opts: ServeOptions) -> Self {
        Service {
            handler,
            metrics: RequestMetrics::new(Arc::from(node), Arc::from(name), Side::Server),
            bulkheads: opts.bulkheads,
            partition: opts.partition,
            dedup: opts
                .dedup
                .map(|(cfg, key)| (IdempotentConsumer::new(name, cfg), key)),
        }
    }

    fn bulkhead(&self, info: &CallInfo<'_>) -> Option<&Bulkhead> {
        match (&self.partition, self.bulkheads.len()) {
            (_, 0) => None,
            (None, _) => self.bulkheads.first(),
            (Some(rule), n) => self.bulkheads.get(rule(info) % n),
        }
    }

    /// Runs one call: hop limit, dedup, bulkhead, handler.
    pub(super) async fn call(
        &self,
        name: &Arc<str>,
        call: u64,
        priority: u8,
        hops: u8,
        body: Bytes,
        header: Header,
    ) -> Result<Bytes, RemoteError> {
        if header.traceparent.is_some() {
            return self
                .call_traced(name, call, priority, hops, body, header)
                .await;
        }
        // Untraced: metrics and the run inline, as before tracing.
        let timer = RequestTimer::start(self.metrics.clone());
        let untraced = trace::Traced::none();
        let r = self
            .run(name, call, priority, hops, body, header, &untraced)
            .await;
        timer.finish(match &r {
            Ok(_) => "ok",
            Err(e) => remote_outcome(&e.code),
        });
        r
    }

    /// A call that carries a trace: in its server span, whose context its
    /// handler runs in (so that its own calls continue the trace). Made
    /// and boxed out of line, so that an untraced call's future and stack
    /// frames stay what they were (calls to a node's own service nest).
    #[inline(never)]
    fn call_traced<'a>(
        &'a self,
        name: &'a Arc<str>,
        call: u64,
        priority: u8,
        hops: u8,
        body: Bytes,
        header: Header,
    ) -> BoxCall<'a> {
        Box::pin(async move {
            let op = trace::incoming(serve_op(name), &name, &header);
            op.hop(hops);
            self.measured(name, call, priority, hops, body, header, &op)
                .await
        })
    }

    /// Serving-side request metrics around a call: in flight from here,
    /// one outcome.
    #[allow(clippy::too_many_arguments)]
    async fn measured(
        &self,
        name: &Arc<str>,
        call: u64,
        priority: u8,
        hops: u8,
        body: Bytes,
        header: Header,
        op: &trace::Traced,
    ) -> Result<Bytes, RemoteError> {
        let timer = RequestTimer::start(self.metrics.clone());
        let r = self.run(name, call, priority, hops, body, header, op).await;
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => remote_outcome(&e.code),
        };
        if r.is_err() {
            op.failed(outcome);
        }
        timer.finish(outcome);
        r
    }

    // The call's parts, as the dispatcher and the local path hand them over.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        name: &str,
        call: u64,
        priority: u8,
        hops: u8,
        body: Bytes,
        header: Header,
        op: &trace::Traced,
    ) -> Result<Bytes, RemoteError> {
        check_hops(hops)?;
        let info = CallInfo {
            caller: PeerId(header.source),
            priority,
            service: name,
        };
        let bulkhead = self.bulkhead(&info).cloned();
        let deadline = header.deadline;
        let key = self
            .dedup
            .as_ref()
            .and_then(|(_, key)| key(&header, call, &body));
        let fut = crate::resilience::deadline::with_context(
            deadline,
            hops,
            (self.handler)(Request { body, header }),
        );
        // No box either way: untraced, the call costs what it did.
        let fut = if op.is_traced() {
            Either::Left(op.bind(fut))
        } else {
            Either::Right(fut.instrument(tracing::debug_span!("serve", service = name, hop = hops)))
        };
        let run = async move {
            match bulkhead {
                Some(b) => b.run(deadline, fut).await.map_err(rejected_to_remote)?,
                None => fut.await,
            }
        };
        match (&self.dedup, key) {
            (Some((consumer, _)), Some(key)) => consumer.process(key, || run).await.0,
            _ => run.await,
        }
    }
}

/// The services a node serves, by name (fixed once the node starts).
#[derive(Default)]
pub(super) struct Services(HashMap<String, Service>);

impl Services {
    pub(super) fn insert(&mut self, name: String, svc: Service) {
        self.0.insert(name, svc);
    }

    pub(super) fn get(&self, name: &str) -> Option<&Service> {
        self.0.get(name)
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Sets the serving-side in-flight gauges (scrape time).
    pub(super) fn collect(&self) {
        for s in self.0.values() {
            s.metrics.collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_limit_refuses_only_deeper_calls() {
        assert!(check_hops(MAX_HOPS).is_ok());
        let e = check_hops(MAX_HOPS + 1).unwrap_err();
        assert_eq!(e.code, "too_many_hops");
        assert_eq!(e.known_code(), Some(crate::wire::RemoteCode::TooManyHops));
    }
}

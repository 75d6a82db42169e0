//! Asynchronous request/reply (ZeroMQ DEALER/ROUTER).
//!
//! Guarantees: those of request/reply in the [`messaging`](super) docs
//! (§ Request/reply); this file implements the pattern's own rules on top of the
//! transport seam (`crate::transport::{Outbound, Inbound}`) and does no
//! I/O of its own.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use zeromq::{DealerSendHalf, DealerSocket, RouterRecvHalf, RouterSendHalf, RouterSocket};

use super::SocketBuilder;
use crate::endpoint::Endpoint;
use crate::error::{OpenError, RequestError, SendError};
use crate::telemetry;
use crate::trace;
use crate::transport::guard::AbortOnDrop;
use crate::transport::inproc::Family;
use crate::transport::zmtp::SocketKind;
use crate::transport::{
    open_socket, Arrival, Inbound, LinkState, Outbound, ReplySender, ReplyTo, ZmqSide,
};
use crate::wire::{
    self, ContentType, Deadline, Envelope, Header, IdGen, Kind, Limits, MessageId, NodeOp,
    RemoteCode, RemoteError,
};

/// After a client's only link breaks, how long a reply that the link
/// received just before the break may take to come through the local
/// socket before the request ends with `PeerGone`.
const LINK_LOSS_GRACE: Duration = Duration::from_millis(100);

/// Default time a request waits for its reply.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Pending = Arc<DashMap<MessageId, oneshot::Sender<Envelope>>>;

/// The header fields a raw request carries besides those the client sets
/// itself (id, source, sequence, deadline). See `docs/PROTOCOL.md` §3 for
/// each field on the wire. The default is a plain request: every field
/// empty, body MessagePack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFields {
    /// The service, group or topic addressed ([`Header::service`]). Shared:
    /// reusing one name across calls does not allocate.
    pub service: Option<Arc<str>>,
    /// Logical call id kept across retries ([`Header::call_id`], 0 = none).
    pub call_id: u64,
    /// Priority ([`Header::priority`]).
    pub priority: u8,
    /// Node hops taken so far ([`Header::hops`]).
    pub hops: u8,
    /// The node operation ([`Header::op`]).
    pub op: Option<NodeOp>,
    /// Delivery attempt, 0 for the first ([`Header::attempt`]).
    pub attempt: u32,
    /// W3C trace context ([`Header::traceparent`]). Left empty, a plain
    /// request (no `op`) carries the trace of the task it is made in
    /// ([`trace`](crate::trace)); set, it is sent as given.
    pub traceparent: Option<Arc<str>>,
    /// W3C vendor trace state ([`Header::tracestate`]), sent with
    /// `traceparent`.
    pub tracestate: Option<Arc<str>>,
    /// How the body is encoded ([`Header::content_type`]).
    pub content_type: ContentType,
}

impl CallFields {
    /// Writes these fields into `header`.
    fn apply(self, header: &mut Header) {
        header.service = self.service;
        header.call_id = self.call_id;
        header.priority = self.priority;
        header.hops = self.hops;
        header.op = self.op;
        header.attempt = self.attempt;
        header.traceparent = self.traceparent;
        header.tracestate = self.tracestate;
        header.content_type = self.content_type;
    }
}

/// Sends requests of type `Req` and awaits replies of type `Rep`.
///
/// The type parameters only concern the typed methods
/// ([`request`](Self::request), [`request_within`](Self::request_within));
/// [`request_raw`](Self::request_raw) works on any client.
#[derive(Debug)]
pub struct Client<Req, Rep> {
    out: Outbound<DealerSendHalf>,
    /// Requests waiting for a reply over ipc/tcp, by request id (inproc
    /// requests carry their reply path instead).
    pending: Pending,
    in_flight: AtomicUsize,
    ids: IdGen,
    limits: Limits,
    timeout: Duration,
    endpoints: Vec<Endpoint>,
    /// What its spans name as destination: the first endpoint given.
    dest: Arc<str>,
    /// Requests sent.
    sent: telemetry::Traffic,
    /// Replies (and error replies) received.
    received: telemetry::Traffic,
    _recv: Option<AbortOnDrop>,
    _t: PhantomData<fn(&Req) -> Rep>,
}

/// A request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request<Req> {
    /// The decoded request (the encoded [`Bytes`] for a raw handler).
    pub body: Req,
    /// The request's header: id, source (the caller), deadline, trace
    /// context, and the [`CallFields`] the caller set.
    pub header: Header,
}

impl<Req> Request<Req> {
    /// Time left before the caller's deadline (`None` if it has passed or
    /// none was set).
    pub fn remaining(&self) -> Option<Duration> {
        self.header.deadline.and_then(|d| d.remaining())
    }

    /// The trace the request came in, if it carries one. The handler
    /// already runs in it: calls it makes continue it by themselves.
    pub fn trace_context(&self) -> Option<trace::TraceContext> {
        trace::from_header(&self.header)
    }
}

/// Serves requests of type `Req` with replies of type `Rep`.
///
/// The type parameters only concern [`run`](Self::run) and
/// [`spawn`](Self::spawn); [`run_raw`](Self::run_raw) and
/// [`spawn_raw`](Self::spawn_raw) work on any server.
#[derive(Debug)]
pub struct Server<Req, Rep> {
    core: ServerCore,
    endpoints: Vec<Endpoint>,
    _t: PhantomData<fn(Req) -> Rep>,
}

/// What serving needs, free of the server's type parameters.
#[derive(Debug)]
struct ServerCore {
    rx: Inbound<RouterRecvHalf>,
    tx: Arc<Replies>,
    /// Requests received.
    received: telemetry::Traffic,
    max_in_flight: usize,
    /// What its spans name as destination: the first endpoint given.
    dest: Arc<str>,
    /// The `source` its replies carry.
    source: u64,
}

/// A server's reply side and the counters of the replies it sends.
#[derive(Debug)]
struct Replies {
    tx: ReplySender<RouterSendHalf>,
    sent: telemetry::Traffic,
}

impl SocketBuilder {
    /// Opens a request client.
    pub async fn client<Req, Rep>(self) -> Result<Client<Req, Rep>, OpenError> {
        let plan = self.plan()?;
        let dest = plan.name();
        let transport = plan.transport();
        let pending: Pending = Arc::new(DashMap::new());
        let limits = self.config.limits;
        let (out, endpoints, recv_task) = if plan.inproc {
            let (out, eps) = Outbound::inproc(&plan, Family::ReqRep)?;
            (out, eps, None)
        } else {
            let (sock, side, eps) =
                open_socket::<DealerSocket>(&plan, SocketKind::Dealer, &self.config).await?;
            let (send, recv) = sock.split();
            // Replies come back over the connection: match them to their
            // requests by correlation id.
            let mut replies =
                Inbound::zmq(recv, ZmqSide::default(), false, false, limits, "client");
            let p = pending.clone();
            let task = tokio::spawn(async move {
                while let Some(a) = replies.recv().await {
                    deliver_reply(&p, a.env);
                }
            });
            let out = Outbound::batched(send, side, self.config.queue_capacity);
            (out, eps, Some(AbortOnDrop(task)))
        };
        Ok(Client {
            out,
            pending,
            in_flight: AtomicUsize::new(0),
            ids: IdGen::new(),
            limits,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            endpoints,
            dest,
            sent: telemetry::Traffic::sent("reqrep", transport),
            received: telemetry::Traffic::received("reqrep", transport),
            _recv: recv_task,
            _t: PhantomData,
        })
    }

    /// Opens a server; call [`Server::run`] or [`Server::spawn`] (typed) or
    /// [`Server::run_raw`] or [`Server::spawn_raw`] (raw) to serve.
    pub async fn server<Req, Rep>(self) -> Result<Server<Req, Rep>, OpenError> {
        let plan = self.plan()?;
        let dest = plan.name();
        let transport = plan.transport();
        let (rx, tx, endpoints) = if plan.inproc {
            let cap = self.config.queue_capacity;
            let (rx, eps) = Inbound::inproc(&plan, Family::ReqRep, cap, None)?;
            (rx, ReplySender::Inproc, eps)
        } else {
            let (sock, side, eps) =
                open_socket::<RouterSocket>(&plan, SocketKind::Router, &self.config).await?;
            let progress = side.progress.clone();
            let (send, recv) = sock.split();
            let limits = self.config.limits;
            let rx = Inbound::zmq(recv, side, true, true, limits, "server");
            (rx, ReplySender::zmq(send, progress), eps)
        };
        let core = ServerCore {
            rx,
            tx: Arc::new(Replies {
                tx,
                sent: telemetry::Traffic::sent("reqrep", transport),
            }),
            received: telemetry::Traffic::received("reqrep", transport),
            max_in_flight: self.config.queue_capacity,
            dest,
            source: wire::random_u64(),
        };
        Ok(Server {
            core,
            endpoints,
            _t: PhantomData,
        })
    }
}

fn deliver_reply(pending: &Pending, env: Envelope) {
    if !matches!(env.header.kind, Kind::Reply | Kind::Error) {
        telemetry::dropped(telemetry::DropReason::UnexpectedKind, 1);
        return;
    }
    let Some(corr) = env.header.correlation else {
        telemetry::dropped(telemetry::DropReason::UnmatchedReply, 1);
        return;
    };
    match pending.remove(&corr) {
        Some((_, tx)) => {
            if tx.send(env).is_err() {
                telemetry::dropped(telemetry::DropReason::LateReply, 1);
            }
        }
        None => telemetry::dropped(telemetry::DropReason::LateReply, 1),
    }
}

impl<Req: Serialize, Rep: DeserializeOwned> Client<Req, Rep> {
    /// Connects a client to one endpoint with the default config.
    pub async fn connect(endpoint: &str) -> Result<Self, OpenError> {
        SocketBuilder::new().connect(endpoint).client().await
    }

    /// Sends a request and waits for its reply, up to the client's timeout
    /// (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub async fn request(&self, req: &Req) -> Result<Rep, RequestError> {
        self.request_within(req, self.timeout).await
    }

    /// Sends a request and waits for its reply up to `timeout`.
    pub async fn request_within(&self, req: &Req, timeout: Duration) -> Result<Rep, RequestError> {
        let body = wire::encode_body(req).map_err(SendError::from)?;
        let env = self
            .request_raw(CallFields::default(), body, timeout)
            .await?;
        Ok(env.decode()?)
    }
}

impl<Req, Rep> Client<Req, Rep> {
    /// Sets the source id written in this client's requests (what a server
    /// sees as `header.source`); a node uses its own id, so that services
    /// know which node called. Default: a random id per client.
    pub fn with_source(mut self, source: u64) -> Self {
        self.ids = IdGen::with_source(source);
        self
    }

    /// Sets the timeout used by [`request`](Self::request).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends an encoded `body` with the header `fields` and waits up to
    /// `timeout` (capped by the deadline of the handler it runs in, if
    /// any) for the reply, returned whole: its header and its body as
    /// received. Neither body is decoded, re-encoded or copied. A remote
    /// error reply ends as [`RequestError::Remote`].
    pub async fn request_raw(
        &self,
        fields: CallFields,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Envelope, RequestError> {
        // A plain request continues the task's trace (or starts one when
        // sampling); node operations carry the context their layer chose.
        // The traced path is boxed: untraced, this future is what it was.
        if fields.op.is_none() && fields.traceparent.is_none() && trace::may_trace() {
            let op = trace::outgoing(trace::Op::Call, &self.dest, true);
            if op.is_traced() {
                return Box::pin(async move {
                    let mut fields = fields;
                    (fields.traceparent, fields.tracestate) = op.fields();
                    let r = op
                        .within(self.request_untraced(fields, body, timeout))
                        .await;
                    if let Err(e) = &r {
                        op.failed(request_outcome(e));
                    }
                    r
                })
                .await;
            }
        }
        self.request_untraced(fields, body, timeout).await
    }

    async fn request_untraced(
        &self,
        fields: CallFields,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Envelope, RequestError> {
        if body.len() + 64 > self.limits.max_message_size {
            return Err(SendError::TooLarge {
                size: body.len() + 64,
                limit: self.limits.max_message_size,
            }
            .into());
        }
        // Inside a handler, the caller's deadline caps this one.
        let timeout = crate::resilience::deadline::budget(timeout);
        if timeout.is_zero() {
            return Err(RequestError::Timeout(timeout));
        }
        let id = self.ids.next_id();
        let mut header = Header::new(Kind::Request, id, self.ids.source(), id.0 as u64);
        let deadline = Deadline::after(timeout);
        header.deadline = Some(deadline);
        fields.apply(&mut header);
        let (tx, rx) = oneshot::channel();
        let _counted = Counted::enter(&self.in_flight);
        // Inproc requests carry their reply path; ipc/tcp replies are
        // matched by correlation id.
        let by_path = self.out.carries_reply_path();
        let (reply, cleanup) = if by_path {
            (Some(tx), None)
        } else {
            self.pending.insert(id, tx);
            (None, Some(RemoveOnDrop(&self.pending, id)))
        };
        let sent_len = header.encoded_len() + body.len();
        let outcome = tokio::time::timeout(timeout, async {
            self.out.send_one(Envelope { header, body }, reply).await?;
            self.sent.count_len(sent_len);
            if by_path {
                // A server drops the reply of a request whose deadline
                // passed while it ran (same process, same clock): that is
                // this request's timeout, not a server gone.
                return rx.await.map_err(|_| match deadline.is_expired() {
                    true => RequestError::Timeout(timeout),
                    false => RequestError::PeerGone,
                });
            }
            // A reply cannot come back over a connection that broke: with
            // one link, its loss ends the request at once.
            tokio::pin!(rx);
            tokio::select! {
                r = &mut rx => r.map_err(|_| RequestError::PeerGone),
                _ = self.out.link_lost() => {
                    // A reply that arrived just before the loss is still
                    // passing through the local socket.
                    match tokio::time::timeout(LINK_LOSS_GRACE, rx).await {
                        Ok(Ok(env)) => Ok(env),
                        _ => Err(RequestError::PeerGone),
                    }
                }
            }
        })
        .await;
        drop(cleanup);
        let env = match outcome {
            Ok(r) => r?,
            Err(_) => return Err(RequestError::Timeout(timeout)),
        };
        self.received.count(&env.header, env.body.len());
        match env.header.kind {
            Kind::Reply => Ok(env),
            _ => Err(RequestError::Remote(
                env.decode::<RemoteError>()
                    .unwrap_or_else(|e| RemoteError::new(RemoteCode::BadErrorReply, e.to_string())),
            )),
        }
    }

    /// Requests currently waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Waits until every connected endpoint's link is up.
    pub async fn wait_connected(&self) {
        self.out.wait_connected().await;
    }

    /// The state of each outgoing link. Over inproc, a connected name
    /// whose server is gone is reported as reconnecting (it waits for a
    /// new server to bind).
    pub fn link_states(&self) -> Vec<(Endpoint, LinkState)> {
        self.out.link_states()
    }

    /// The endpoints this client bound.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
}

/// A request's failure, as a span's `error.type`.
fn request_outcome(e: &RequestError) -> &'static str {
    match e {
        RequestError::Timeout(_) => "timeout",
        RequestError::PeerGone => "peer_gone",
        RequestError::Remote(_) => "remote_error",
        _ => "error",
    }
}

/// Counts a request as in flight for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Counted(n)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct RemoveOnDrop<'a>(&'a Pending, MessageId);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// Encodes a typed handler's reply (once).
fn encode_reply<Rep: Serialize>(rep: Result<Rep, RemoteError>) -> Result<Bytes, RemoteError> {
    wire::encode_body(&rep?).map_err(|e| RemoteError::new(RemoteCode::BadReply, e.to_string()))
}

impl<Req, Rep> Server<Req, Rep>
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
{
    /// Binds a server to one endpoint with the default config.
    pub async fn bind(endpoint: &str) -> Result<Self, OpenError> {
        SocketBuilder::new().bind(endpoint).server().await
    }

    /// Serves requests with `handler` until the socket closes.
    ///
    /// Up to `SocketConfig::queue_capacity` requests run concurrently, as
    /// futures driven by this task (no task per request, so no extra
    /// wake-up on the request path); beyond that the server stops reading
    /// (backpressure). A handler that blocks or burns CPU holds up the
    /// others: give such work its own threads. A handler's `Err` travels
    /// back to the caller as [`RequestError::Remote`].
    pub async fn run<H, Fut>(self, handler: H)
    where
        H: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, RemoteError>> + Send + 'static,
    {
        // A sender that is never used: the server runs until its socket closes.
        let (_keep, stop) = watch::channel(false);
        self.core.run_until(typed(handler), stop).await
    }

    /// Runs [`run`](Self::run) on a new task; dropping the handle stops it.
    pub fn spawn<H, Fut>(self, handler: H) -> ServerHandle
    where
        H: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, RemoteError>> + Send + 'static,
    {
        self.spawn_raw(typed(handler))
    }
}

/// A typed handler as a raw one: the request body is decoded once (a body
/// that does not decode is answered with `bad_request`), the reply encoded
/// once. No allocation or dynamic dispatch beyond the handler's own.
fn typed<Req, Rep, H, Fut>(
    handler: H,
) -> impl Fn(Request<Bytes>) -> TypedCall<Fut> + Send + Sync + 'static
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    H: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Rep, RemoteError>> + Send + 'static,
{
    use futures_util::future::{ready, Either, FutureExt};
    move |req: Request<Bytes>| match wire::decode_body::<Req>(&req.body) {
        Ok(body) => {
            let header = req.header;
            Either::Right(handler(Request { body, header }).map(encode_reply::<Rep> as _))
        }
        Err(e) => Either::Left(ready(Err(RemoteError::new(
            RemoteCode::BadRequest,
            e.to_string(),
        )))),
    }
}

/// The future of one typed handler call, seen as a raw one.
type TypedCall<Fut> = futures_util::future::Either<
    futures_util::future::Ready<Result<Bytes, RemoteError>>,
    futures_util::future::Map<Fut, ReplyEncoder<Fut>>,
>;

/// Encodes the output of `Fut` (a typed handler's reply).
type ReplyEncoder<Fut> = fn(<Fut as Future>::Output) -> Result<Bytes, RemoteError>;

impl<Req, Rep> Server<Req, Rep> {
    /// The endpoints this server bound (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Sets the source id written in this server's replies (what a client
    /// sees as the reply's `header.source`); a node uses its own id, so
    /// that callers know which node answered. Default: a random id per
    /// server.
    pub fn with_source(mut self, source: u64) -> Self {
        self.core.source = source;
        self
    }

    /// The source id written in this server's replies.
    pub fn source(&self) -> u64 {
        self.core.source
    }

    /// Serves requests with a raw `handler` until the socket closes: it
    /// gets each request's header and body as received and returns the
    /// reply body, already encoded (content type as the caller expects).
    /// Concurrency, deadlines and errors as for [`run`](Self::run).
    pub async fn run_raw<H, Fut>(self, handler: H)
    where
        H: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        let (_keep, stop) = watch::channel(false);
        self.core.run_until(handler, stop).await
    }

    /// Runs [`run_raw`](Self::run_raw) on a new task; dropping the handle
    /// stops it.
    pub fn spawn_raw<H, Fut>(self, handler: H) -> ServerHandle
    where
        H: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        let endpoints = self.endpoints.clone();
        let (stop, stopped) = watch::channel(false);
        ServerHandle {
            endpoints,
            stop,
            task: Some(tokio::spawn(self.core.run_until(handler, stopped))),
        }
    }
}

impl ServerCore {
    /// Serves until the socket closes or, once `stop` turns true, reads no
    /// more requests and returns when the ones already started have replied.
    async fn run_until<H, Fut>(mut self, handler: H, mut stop: watch::Receiver<bool>)
    where
        H: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let mut stopping = false;
        let mut unstoppable = false;
        let mut in_flight = FuturesUnordered::new();
        let mut queued: VecDeque<(Envelope, ReplyTo)> = VecDeque::new();
        loop {
            while in_flight.len() < self.max_in_flight {
                let Some((env, to)) = queued.pop_front() else {
                    break;
                };
                if env.header.kind != Kind::Request {
                    telemetry::dropped(telemetry::DropReason::UnexpectedKind, 1);
                    continue;
                }
                self.received.count(&env.header, env.body.len());
                let (handler, tx) = (handler.clone(), self.tx.clone());
                let (dest, source) = (&self.dest, self.source);
                // Only plain requests get a server span here; node
                // operations get theirs where the node dispatches them.
                let op = match env.header.op {
                    None => trace::incoming(trace::Op::Serve, dest, &env.header),
                    Some(_) => trace::Traced::none(),
                };
                let mut fut = Box::pin(async move {
                    let (reply, outcome) = serve_one(&*handler, env, op).await;
                    send_reply(&tx, to, source, reply, outcome).await;
                });
                // Most handlers finish without waiting: poll once here and
                // only park the ones that are pending.
                let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
                if first.is_pending() {
                    in_flight.push(fut);
                }
            }
            if stopping && in_flight.is_empty() && queued.is_empty() {
                // Linger: the last replies must leave before the socket goes.
                self.tx.tx.linger().await;
                return;
            }
            let room = !stopping && in_flight.len() < self.max_in_flight && queued.is_empty();
            tokio::select! {
                biased;
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                r = stop_requested(&mut stop), if !stopping && !unstoppable => match r {
                    // Drain: take no new requests, finish the started ones.
                    Ok(_) => stopping = true,
                    // The sender is gone: nobody can ask to stop any more.
                    Err(_) => unstoppable = true,
                },
                a = self.rx.recv(), if room => match a {
                    Some(a) => {
                        accept_request(&mut queued, a);
                        // The rest of a batch came with it: take it too.
                        while let Some(a) = self.rx.next_buffered() {
                            accept_request(&mut queued, a);
                        }
                    }
                    None => {
                        // Socket closed: finish what was started.
                        while in_flight.next().await.is_some() {}
                        return;
                    }
                },
            }
        }
    }
}

/// Queues a received request; one without a way back is dropped.
fn accept_request(queued: &mut VecDeque<(Envelope, ReplyTo)>, a: Arrival) {
    match a.reply {
        ReplyTo::Nowhere => telemetry::dropped(telemetry::DropReason::NoReplyPath, 1),
        to => queued.push_back((a.env, to)),
    }
}

/// Resolves when a stop is asked for (`Ok`) or can never be (`Err`).
async fn stop_requested(stop: &mut watch::Receiver<bool>) -> Result<(), ()> {
    stop.wait_for(|s| *s).await.map(|_| ()).map_err(|_| ())
}

/// What a reply needs from its request's header.
struct ReplyHeader {
    id: MessageId,
    seq: u64,
    deadline: Option<Deadline>,
    traceparent: Option<Arc<str>>,
    tracestate: Option<Arc<str>>,
}

/// Runs one request through a raw handler, unless its deadline has passed.
async fn serve_one<H, Fut>(
    handler: &H,
    env: Envelope,
    op: trace::Traced,
) -> (ReplyHeader, Result<Bytes, RemoteError>)
where
    H: Fn(Request<Bytes>) -> Fut,
    Fut: Future<Output = Result<Bytes, RemoteError>>,
{
    let Envelope { header, body } = env;
    let reply = ReplyHeader {
        id: header.id,
        seq: header.seq,
        deadline: header.deadline,
        traceparent: header.traceparent.clone(),
        tracestate: header.tracestate.clone(),
    };
    let deadline = header.deadline;
    if deadline.is_some_and(|d| d.is_expired()) {
        telemetry::dropped(telemetry::DropReason::DeadlineExpired, 1);
        op.failed("deadline_expired");
        let e = RemoteError::new(
            RemoteCode::DeadlineExpired,
            "deadline passed before work started",
        );
        return (reply, Err(e));
    }
    let call = handler(Request { body, header });
    let outcome = if op.is_traced() {
        let o = op
            .bind(crate::resilience::deadline::with_deadline(deadline, call))
            .await;
        if let Err(e) = &o {
            op.failed(&e.code);
        }
        o
    } else {
        crate::resilience::deadline::with_deadline(deadline, call).await
    };
    (reply, outcome)
}

/// Sends the answer to one request, unless its deadline passed while the
/// handler ran: the caller has stopped waiting by then, so the answer is
/// dropped and counted (`reply_after_deadline`). The one answer sent after
/// the deadline is the server's own `deadline_expired` refusal (a request
/// that arrived, or waited in a bulkhead, past it; nothing was
/// processed), so that a caller whose clock runs behind learns why.
async fn send_reply(
    tx: &Replies,
    to: ReplyTo,
    source: u64,
    req: ReplyHeader,
    outcome: Result<Bytes, RemoteError>,
) {
    let refused_late =
        matches!(&outcome, Err(e) if e.known_code() == Some(RemoteCode::DeadlineExpired));
    if !refused_late && req.deadline.is_some_and(|d| d.is_expired()) {
        telemetry::dropped(telemetry::DropReason::ReplyAfterDeadline, 1);
        return;
    }
    let (kind, body) = match outcome {
        Ok(b) => (Kind::Reply, b),
        Err(e) => (
            Kind::Error,
            wire::encode_body(&e).unwrap_or_else(|_| Bytes::new()),
        ),
    };
    // The reply reuses the request's id space: id = request id with the
    // top bit flipped keeps it unique without another generator.
    let mut header = Header::new(kind, MessageId(req.id.0 ^ (1 << 127)), source, req.seq);
    header.correlation = Some(req.id);
    header.traceparent = req.traceparent;
    header.tracestate = req.tracestate;
    tx.sent.count(&header, body.len());
    tx.tx.send(to, Envelope { header, body }).await;
}
/// A running server; dropping it stops serving and closes the socket.
#[derive(Debug)]
pub struct ServerHandle {
    endpoints: Vec<Endpoint>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// The endpoints the server bound (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Stops taking requests and waits up to `timeout` for the ones in
    /// progress to reply; whatever is still running then is abandoned
    /// (its callers get `Timeout` or `PeerGone`). Returns whether every
    /// started request finished.
    pub async fn drain(mut self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        let Some(mut task) = self.task.take() else {
            return true;
        };
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

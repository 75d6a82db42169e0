//! Asynchronous request/reply (ZeroMQ DEALER/ROUTER).
//!
//! # Guarantees
//! - Each [`Client::request`] ends with exactly one outcome before its
//!   deadline: the reply, a typed remote error
//!   ([`RequestError::Remote`]), [`RequestError::PeerGone`] (the server
//!   went away with the request: at once over inproc, and over ipc/tcp when
//!   the client's only link breaks while the request is out), or
//!   [`RequestError::Timeout`]. It never hangs.
//! - Many requests may be in flight on one client; replies are matched by
//!   correlation id, in any order.
//! - The deadline travels in the request header; a server does not start
//!   work whose deadline has already passed.
//! - A server runs requests concurrently, up to
//!   `SocketConfig::queue_capacity` at once; beyond that it stops reading
//!   (backpressure, no unbounded queue).
//! - Requests are spread round-robin over the servers a client is
//!   attached to.
//!
//! # Full-queue policy
//! A client whose queue is full (`SocketConfig::queue_capacity` requests
//! waiting to be written) makes the next request wait for room, within its
//! deadline. Before a connected client's link is up, requests wait for it,
//! also within their deadline. A server with `queue_capacity` requests in
//! progress stops reading until one finishes.
//!
//! # Not guaranteed
//! A request is sent once: no retry happens here (see the resilience
//! module for idempotent retries). A reply that arrives after its request
//! timed out is dropped and counted (`late_reply`).

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
use zeromq::{
    DealerSendHalf, DealerSocket, RouterSendHalf, RouterSocket, Socket, SocketSend, ZmqMessage,
};

use super::SocketBuilder;
use crate::endpoint::Endpoint;
use crate::error::{OpenError, RequestError, SendError};
use crate::telemetry;
use crate::transport::batch::Batcher;
use crate::transport::guard::{AbortOnDrop, SocketKind};
use crate::transport::inproc::{
    self, Family, InMsg, InprocRx, Registration, RoundRobin, SenderCore,
};
use crate::transport::{
    decode_received, open_inproc, open_zmq, zmq_recv, InprocRole, LinkState, Zmq, ZmqSide,
};
use crate::wire::{self, Deadline, Envelope, Header, IdGen, Kind, Limits, MessageId, RemoteError};

/// After a client's only link breaks, how long a reply that the link
/// received just before the break may take to come through the local
/// socket before the request ends with `PeerGone`.
const LINK_LOSS_GRACE: Duration = Duration::from_millis(100);

/// Default time a request waits for its reply.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Pending = Arc<DashMap<MessageId, oneshot::Sender<Envelope>>>;

/// Sends requests of type `Req` and awaits replies of type `Rep`.
#[derive(Debug)]
pub struct Client<Req, Rep> {
    tx: ClientTx,
    pending: Pending,
    in_flight: AtomicUsize,
    ids: IdGen,
    limits: Limits,
    timeout: Duration,
    endpoints: Vec<Endpoint>,
    _recv: Option<AbortOnDrop>,
    _t: PhantomData<fn(&Req) -> Rep>,
}

#[derive(Debug)]
enum ClientTx {
    Inproc {
        core: Arc<SenderCore>,
        _regs: Vec<Registration>,
        /// Names this client connected to (their binder may come and go).
        connected: Vec<Endpoint>,
    },
    Zmq {
        send: Arc<Batcher<DealerSendHalf>>,
        side: ZmqSide,
    },
}

/// A request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request<Req> {
    /// The decoded request.
    pub body: Req,
    /// The request's header: id, source (the caller), deadline, trace
    /// context.
    pub header: Header,
}

impl<Req> Request<Req> {
    /// Time left before the caller's deadline (`None` if it has passed or
    /// none was set).
    pub fn remaining(&self) -> Option<Duration> {
        self.header.deadline.and_then(|d| d.remaining())
    }
}

/// Serves requests of type `Req` with replies of type `Rep`.
#[derive(Debug)]
pub struct Server<Req, Rep> {
    rx: ServerRx,
    tx: Arc<ServerTx>,
    limits: Limits,
    max_in_flight: usize,
    endpoints: Vec<Endpoint>,
    _t: PhantomData<fn(Req) -> Rep>,
}

#[derive(Debug)]
enum ServerRx {
    Inproc {
        rx: InprocRx,
        _regs: Vec<Registration>,
    },
    Zmq {
        recv: Zmq<zeromq::RouterRecvHalf>,
        _side: ZmqSide,
    },
}

#[derive(Debug)]
enum ServerTx {
    Inproc,
    Zmq {
        send: tokio::sync::Mutex<Zmq<RouterSendHalf>>,
        /// Reply bytes handed to the socket, against what the relays took
        /// (for the linger at shutdown).
        handed: std::sync::atomic::AtomicU64,
        progress: Arc<crate::transport::batch::Progress>,
    },
}

impl ServerTx {
    /// Waits until every reply handed to the socket has left for the
    /// network.
    async fn linger(&self) {
        if let ServerTx::Zmq {
            handed, progress, ..
        } = self
        {
            progress.wait_relayed(handed.load(Ordering::Relaxed)).await;
        }
    }
}

/// Where a reply goes.
enum ReplyTo {
    Inproc(oneshot::Sender<Envelope>),
    Zmq(Bytes),
}

impl SocketBuilder {
    /// Opens a request client.
    pub async fn client<Req: Serialize, Rep: DeserializeOwned>(
        self,
    ) -> Result<Client<Req, Rep>, OpenError> {
        let plan = self.plan()?;
        let pending: Pending = Arc::new(DashMap::new());
        let limits = self.config.limits;
        let (tx, endpoints, recv_task) = if plan.inproc {
            let core = Arc::new(SenderCore::default());
            let (regs, eps) = open_inproc(&plan, Family::ReqRep, InprocRole::Sender(&core))?;
            let connected = plan.connects.clone();
            (
                ClientTx::Inproc {
                    core,
                    _regs: regs,
                    connected,
                },
                eps,
                None,
            )
        } else {
            let mut sock = DealerSocket::new();
            let (side, eps) = open_zmq(&mut sock, &plan, SocketKind::Dealer, &self.config).await?;
            let (send, mut recv) = sock.split();
            let p = pending.clone();
            let task = tokio::spawn(async move {
                while let Some(msg) = zmq_recv(&mut recv).await {
                    if let Some((_, envs)) = decode_received(msg, false, &limits, "client") {
                        envs.into_iter().for_each(|e| deliver_reply(&p, e));
                    }
                }
            });
            (
                ClientTx::Zmq {
                    send: Batcher::new(send, side.progress.clone(), self.config.queue_capacity),
                    side,
                },
                eps,
                Some(AbortOnDrop(task)),
            )
        };
        Ok(Client {
            tx,
            pending,
            in_flight: AtomicUsize::new(0),
            ids: IdGen::new(),
            limits,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            endpoints,
            _recv: recv_task,
            _t: PhantomData,
        })
    }

    /// Opens a server; call [`Server::run`] or [`Server::spawn`] to serve.
    pub async fn server<Req, Rep>(self) -> Result<Server<Req, Rep>, OpenError> {
        let plan = self.plan()?;
        let (rx, tx, endpoints) = if plan.inproc {
            let (link, irx) = inproc::inbox(self.config.queue_capacity, None);
            let (regs, eps) = open_inproc(&plan, Family::ReqRep, InprocRole::Receiver(&link))?;
            (
                ServerRx::Inproc {
                    rx: irx,
                    _regs: regs,
                },
                ServerTx::Inproc,
                eps,
            )
        } else {
            let mut sock = RouterSocket::new();
            let (side, eps) = open_zmq(&mut sock, &plan, SocketKind::Router, &self.config).await?;
            let progress = side.progress.clone();
            let (send, recv) = sock.split();
            (
                ServerRx::Zmq {
                    recv: Zmq(recv),
                    _side: side,
                },
                ServerTx::Zmq {
                    send: tokio::sync::Mutex::new(Zmq(send)),
                    handed: Default::default(),
                    progress,
                },
                eps,
            )
        };
        Ok(Server {
            rx,
            tx: Arc::new(tx),
            limits: self.config.limits,
            max_in_flight: self.config.queue_capacity,
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

    /// Sends a request and waits for its reply, up to the client's timeout
    /// (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub async fn request(&self, req: &Req) -> Result<Rep, RequestError> {
        self.request_within(req, self.timeout).await
    }

    /// Sends a request and waits for its reply up to `timeout`.
    pub async fn request_within(&self, req: &Req, timeout: Duration) -> Result<Rep, RequestError> {
        let body = wire::encode_body(req).map_err(SendError::from)?;
        let env = self.request_raw(body, timeout).await?;
        Ok(env.decode()?)
    }

    /// Sends a raw MessagePack body; returns the reply envelope.
    pub async fn request_raw(
        &self,
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
        header.deadline = Some(Deadline::after(timeout));
        let (tx, rx) = oneshot::channel();
        let _counted = Counted::enter(&self.in_flight);
        // Inproc requests carry their reply path; ipc/tcp replies are
        // matched by correlation id.
        let mut reply = Some(tx);
        let cleanup = match &self.tx {
            ClientTx::Zmq { .. } => {
                if let Some(tx) = reply.take() {
                    self.pending.insert(id, tx);
                }
                Some(RemoveOnDrop(&self.pending, id))
            }
            ClientTx::Inproc { .. } => None,
        };
        let sent = async {
            match &self.tx {
                ClientTx::Inproc { core, .. } => {
                    let msg = InMsg {
                        topic: Bytes::new(),
                        env: Envelope { header, body },
                        reply,
                    };
                    match core.send_round_robin(msg, true).await {
                        RoundRobin::Sent => Ok(()),
                        RoundRobin::NoPeer => Err(SendError::NoPeer),
                    }
                }
                ClientTx::Zmq { send, .. } => send.send(wire::encode_header(&header), body).await,
            }
        };
        let outcome = tokio::time::timeout(timeout, async {
            sent.await?;
            match &self.tx {
                // A reply cannot come back over a connection that broke:
                // with one link, its loss ends the request at once.
                ClientTx::Zmq { side, .. } => {
                    tokio::pin!(rx);
                    tokio::select! {
                        r = &mut rx => r.map_err(|_| RequestError::PeerGone),
                        _ = side.link_lost() => {
                            // A reply that arrived just before the loss is
                            // still passing through the local socket.
                            match tokio::time::timeout(LINK_LOSS_GRACE, rx).await {
                                Ok(Ok(env)) => Ok(env),
                                _ => Err(RequestError::PeerGone),
                            }
                        }
                    }
                }
                ClientTx::Inproc { .. } => rx.await.map_err(|_| RequestError::PeerGone),
            }
        })
        .await;
        drop(cleanup);
        let env = match outcome {
            Ok(r) => r?,
            Err(_) => return Err(RequestError::Timeout(timeout)),
        };
        match env.header.kind {
            Kind::Reply => Ok(env),
            _ => Err(RequestError::Remote(
                env.decode::<RemoteError>().unwrap_or_else(|e| {
                    RemoteError::new(crate::wire::RemoteCode::BadErrorReply, e.to_string())
                }),
            )),
        }
    }

    /// Requests currently waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Waits until every connected endpoint's link is up.
    pub async fn wait_connected(&self) {
        if let ClientTx::Zmq { side, .. } = &self.tx {
            side.wait_connected().await;
        }
    }

    /// The state of each outgoing link (empty for inproc).
    pub fn link_states(&self) -> Vec<(Endpoint, LinkState)> {
        match &self.tx {
            ClientTx::Zmq { side, .. } => side.link_states(),
            // A connected inproc name whose server is gone waits for a
            // new one to bind: report it as reconnecting.
            ClientTx::Inproc { connected, .. } => connected
                .iter()
                .map(|ep| {
                    let up = crate::transport::inproc::is_bound(
                        crate::transport::inproc::Family::ReqRep,
                        ep.inproc_name().unwrap_or_default(),
                    );
                    let state = if up {
                        LinkState::Connected
                    } else {
                        LinkState::Reconnecting
                    };
                    (ep.clone(), state)
                })
                .collect(),
        }
    }

    /// The endpoints this client bound.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
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

impl<Req, Rep> Server<Req, Rep>
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
{
    /// Binds a server to one endpoint with the default config.
    pub async fn bind(endpoint: &str) -> Result<Self, OpenError> {
        SocketBuilder::new().bind(endpoint).server().await
    }

    /// The endpoints this server bound (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
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
        self.run_until(handler, stop).await
    }

    /// Like [`run`](Self::run), but once `stop` turns true it reads no more
    /// requests and returns when the ones already started have replied.
    async fn run_until<H, Fut>(mut self, handler: H, mut stop: watch::Receiver<bool>)
    where
        H: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, RemoteError>> + Send + 'static,
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
                let (handler, tx) = (handler.clone(), self.tx.clone());
                let mut fut = Box::pin(async move {
                    let outcome = serve_one(&*handler, &env).await;
                    send_reply(&tx, to, &env.header, outcome).await;
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
                self.tx.linger().await;
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
                batch = recv_requests(&mut self.rx, &self.limits), if room => match batch {
                    Some(b) => queued.extend(b),
                    None => {
                        // Socket closed: finish what was started.
                        while in_flight.next().await.is_some() {}
                        return;
                    }
                },
            }
        }
    }

    /// Runs [`run`](Self::run) on a new task; dropping the handle stops it.
    pub fn spawn<H, Fut>(self, handler: H) -> ServerHandle
    where
        H: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, RemoteError>> + Send + 'static,
    {
        let endpoints = self.endpoints.clone();
        let (stop, stopped) = watch::channel(false);
        ServerHandle {
            endpoints,
            stop,
            task: Some(tokio::spawn(self.run_until(handler, stopped))),
        }
    }
}

/// Resolves when a stop is asked for (`Ok`) or can never be (`Err`).
async fn stop_requested(stop: &mut watch::Receiver<bool>) -> Result<(), ()> {
    stop.wait_for(|s| *s).await.map(|_| ()).map_err(|_| ())
}

/// Receives the next message's requests; `None` when the socket is closed.
/// Cancel-safe: nothing is lost if the future is dropped before it resolves.
async fn recv_requests(rx: &mut ServerRx, limits: &Limits) -> Option<Vec<(Envelope, ReplyTo)>> {
    loop {
        match rx {
            ServerRx::Inproc { rx, .. } => match rx.recv().await? {
                InMsg {
                    env,
                    reply: Some(r),
                    ..
                } => return Some(vec![(env, ReplyTo::Inproc(r))]),
                _ => telemetry::dropped(telemetry::DropReason::NoReplyPath, 1),
            },
            ServerRx::Zmq { recv, .. } => {
                let msg = zmq_recv(&mut **recv).await?;
                if let Some((identity, envs)) = decode_received(msg, true, limits, "server") {
                    return Some(
                        envs.into_iter()
                            .map(|e| (e, ReplyTo::Zmq(identity.clone())))
                            .collect(),
                    );
                }
            }
        }
    }
}

async fn serve_one<Req, Rep, H, Fut>(handler: &H, env: &Envelope) -> Result<Bytes, RemoteError>
where
    Req: DeserializeOwned,
    Rep: Serialize,
    H: Fn(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Rep, RemoteError>>,
{
    if env.header.deadline.is_some_and(|d| d.is_expired()) {
        telemetry::dropped(telemetry::DropReason::DeadlineExpired, 1);
        return Err(RemoteError::new(
            crate::wire::RemoteCode::DeadlineExpired,
            "deadline passed before work started",
        ));
    }
    let body: Req = env
        .decode()
        .map_err(|e| RemoteError::new(crate::wire::RemoteCode::BadRequest, e.to_string()))?;
    let deadline = env.header.deadline;
    let rep = crate::resilience::deadline::with_deadline(
        deadline,
        handler(Request {
            body,
            header: env.header.clone(),
        }),
    )
    .await?;
    wire::encode_body(&rep)
        .map_err(|e| RemoteError::new(crate::wire::RemoteCode::BadReply, e.to_string()))
}

async fn send_reply(tx: &ServerTx, to: ReplyTo, req: &Header, outcome: Result<Bytes, RemoteError>) {
    let (kind, body) = match outcome {
        Ok(b) => (Kind::Reply, b),
        Err(e) => (
            Kind::Error,
            wire::encode_body(&e).unwrap_or_else(|_| Bytes::new()),
        ),
    };
    // The reply reuses the request's id space: id = request id with the
    // top bit flipped keeps it unique without another generator.
    let mut header = Header::new(kind, MessageId(req.id.0 ^ (1 << 127)), 0, req.seq);
    header.correlation = Some(req.id);
    header.traceparent = req.traceparent.clone();
    match (tx, to) {
        (_, ReplyTo::Inproc(reply)) => {
            if reply.send(Envelope { header, body }).is_err() {
                telemetry::dropped(telemetry::DropReason::LateReply, 1);
            }
        }
        (ServerTx::Zmq { send, handed, .. }, ReplyTo::Zmq(identity)) => {
            let header = wire::encode_header(&header);
            handed.fetch_add(
                crate::transport::batch::wire_len(header.len())
                    + crate::transport::batch::wire_len(body.len()),
                Ordering::Relaxed,
            );
            let frames = vec![identity, header, body];
            let Ok(msg) = ZmqMessage::try_from(frames) else {
                return;
            };
            if send.lock().await.send(msg).await.is_err() {
                telemetry::dropped(telemetry::DropReason::NoPeer, 1);
            }
        }
        (ServerTx::Inproc, ReplyTo::Zmq(_)) => telemetry::dropped(telemetry::DropReason::NoPeer, 1),
    }
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

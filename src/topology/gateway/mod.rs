//! Proxy / gateway: the consumer-facing edge of a fabric, and a pub/sub
//! forwarder for bridging subnets.
//!
//! A [`Gateway`] listens on a plain request/reply endpoint that outside
//! clients reach with a [`Client`](crate::Client)`<`[`GatewayRequest`]`,
//! ByteBuf>`. Each request names a service and carries a bearer token.
//! The gateway:
//! 1. authenticates the caller ([`Auth`], in `auth.rs`): a JWT (HS256,
//!    RS256, ES256, or a JWKS of public keys; keys from a file or the
//!    environment) checked for signature, `alg`, `exp` and `nbf` before
//!    anything reaches a service; a refusal is the remote error
//!    `unauthorized`;
//! 2. checks the service is exposed (`forbidden` otherwise) and, if the
//!    token has a `services` claim, that it lists the service;
//! 3. forwards the body unchanged (dumb proxy) or through the configured
//!    request/reply transforms (smart proxy) to any member serving it.
//!
//! A [`Forwarder`] subscribes to upstream publishers and republishes every
//! message (or those matching its prefixes) on its own publisher, like
//! ZeroMQ's XSUB/XPUB proxy.
//!
//! # Guarantees
//! - Nothing unauthenticated reaches a service; every refusal is counted
//!   (`zfabric_gateway_rejected_total{reason}`).
//! - Errors of the internal call come back as typed remote errors
//!   (`upstream`, `rejected`, `circuit_open`, `no_such_service`, `timeout`).
//!
//! - Traces go through: a request that carries a trace context is served
//!   in a server span whose trace the internal call continues (with
//!   sampling on, the internal call of an untraced one starts a trace);
//!   the forwarder republishes a traced message in its trace
//!   ([`trace`](crate::trace)).
//!
//! # Not guaranteed
//! The gateway does not encrypt: put it behind TLS termination if clients
//! are outside a trusted network. The forwarder is at most once, like
//! pub/sub; it does not forward subscriptions upstream (it subscribes to
//! its configured prefixes).

mod auth;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

pub use auth::{
    read_secret, resolve_key_path, sign_jwt, Auth, AuthError, Claims, JwtAlgorithm, KeyError,
    KeySource, KeySpec, VerifyKeyHandle,
};

use crate::node::{CallError, CallOptions, Node};
use crate::wire::{self, RemoteCode};
use crate::{
    Endpoint, OpenError, Publisher, RemoteError, Request, RequestError, Server, ServerHandle,
    Subscriber,
};

/// Counter: requests the gateway refused, by `reason` (`unauthorized`,
/// `forbidden`).
pub const GATEWAY_REJECTED: &str = "zfabric_gateway_rejected_total";

/// What an outside client sends to a gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayRequest {
    /// The bearer token (a JWT), without the `Bearer ` prefix.
    pub token: String,
    /// The service to call.
    pub service: String,
    /// The request body, MessagePack as the service expects it.
    pub body: ByteBuf,
}

type Transform = Arc<dyn Fn(&str, Bytes) -> Result<Bytes, RemoteError> + Send + Sync>;

/// A gateway's settings.
#[derive(Clone)]
pub struct GatewayConfig {
    /// How callers are authenticated.
    pub auth: Auth,
    /// Services exposed to callers (empty: none).
    pub expose: Vec<String>,
    /// Time allowed for the internal call (capped by the caller's deadline).
    pub timeout: Duration,
    request: Option<Transform>,
    reply: Option<Transform>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("auth", &self.auth)
            .field("expose", &self.expose)
            .field("timeout", &self.timeout)
            .field("smart", &(self.request.is_some() || self.reply.is_some()))
            .finish()
    }
}

impl GatewayConfig {
    /// A dumb proxy exposing `services`, authenticating with `auth`, 5 s
    /// per call.
    pub fn new(auth: Auth, services: &[&str]) -> Self {
        GatewayConfig {
            auth,
            expose: services.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(5),
            request: None,
            reply: None,
        }
    }

    /// Rewrites each request body before forwarding (smart proxy); an
    /// error is returned to the caller and nothing is forwarded.
    pub fn transform_request(
        mut self,
        f: impl Fn(&str, Bytes) -> Result<Bytes, RemoteError> + Send + Sync + 'static,
    ) -> Self {
        self.request = Some(Arc::new(f));
        self
    }

    /// Rewrites each reply body before returning it.
    pub fn transform_reply(
        mut self,
        f: impl Fn(&str, Bytes) -> Result<Bytes, RemoteError> + Send + Sync + 'static,
    ) -> Self {
        self.reply = Some(Arc::new(f));
        self
    }
}

/// A running gateway; dropping it stops it.
#[derive(Debug)]
pub struct Gateway {
    endpoints: Vec<Endpoint>,
    _server: ServerHandle,
}

fn refuse(reason: RemoteCode, message: String) -> RemoteError {
    metrics::counter!(GATEWAY_REJECTED, "reason" => reason.as_str()).increment(1);
    tracing::debug!(reason = reason.as_str(), %message, "gateway refused a request");
    RemoteError::new(reason, message)
}

/// Maps an internal call error to what the outside caller sees.
fn upstream(e: CallError) -> RemoteError {
    match e {
        CallError::Request(RequestError::Remote(r)) => r,
        CallError::Request(RequestError::Timeout(d)) => {
            RemoteError::new(RemoteCode::Timeout, format!("no reply within {d:?}"))
        }
        CallError::Rejected { reason, .. } => RemoteError::new(RemoteCode::Rejected, reason),
        CallError::CircuitOpen { service, retry_in } => RemoteError::new(
            RemoteCode::CircuitOpen,
            format!("{service}: retry in {retry_in:?}"),
        ),
        CallError::NoSuchService(s) => RemoteError::new(RemoteCode::NoSuchService, s),
        other => RemoteError::new(RemoteCode::Upstream, other.to_string()),
    }
}

impl Gateway {
    /// Listens on `endpoint` and forwards through `node`.
    pub async fn start(
        endpoint: &str,
        node: Arc<Node>,
        config: GatewayConfig,
    ) -> Result<Self, OpenError> {
        let server: Server<GatewayRequest, ByteBuf> = Server::bind(endpoint).await?;
        let endpoints = server.endpoints().to_vec();
        let config = Arc::new(config);
        // Served raw: the request is read in place and its body handed on
        // as a slice of the frame; the reply is wrapped once.
        let handle = server.spawn_raw(move |req: Request<Bytes>| {
            let (node, config) = (node.clone(), config.clone());
            async move {
                let reply = handle(&node, &config, read_request(&req.body)?).await?;
                wire::encode_body(serde_bytes::Bytes::new(&reply))
                    .map_err(|e| RemoteError::new(RemoteCode::BadReply, e.to_string()))
            }
        });
        Ok(Gateway {
            endpoints,
            _server: handle,
        })
    }

    /// Where it listens (port 0 resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
}

/// A [`GatewayRequest`] as the gateway reads it: borrowed from the frame,
/// its body a slice of it (no copy).
struct Incoming {
    token: String,
    service: String,
    body: Bytes,
}

/// Reads a [`GatewayRequest`] in place (`bad_request` if it is not one).
fn read_request(frame: &Bytes) -> Result<Incoming, RemoteError> {
    #[derive(Deserialize)]
    struct Borrowed<'a> {
        token: String,
        service: String,
        #[serde(borrow, with = "serde_bytes")]
        body: &'a [u8],
    }
    if let Ok(r) = rmp_serde::from_slice::<Borrowed<'_>>(frame) {
        return Ok(Incoming {
            body: frame.slice_ref(r.body),
            token: r.token,
            service: r.service,
        });
    }
    // A body sent as an array of integers rather than `bin` cannot be
    // borrowed: read it as the owned type does.
    let r: GatewayRequest = wire::decode_body(frame)
        .map_err(|e| RemoteError::new(RemoteCode::BadRequest, e.to_string()))?;
    Ok(Incoming {
        body: Bytes::from(r.body.into_vec()),
        token: r.token,
        service: r.service,
    })
}

async fn handle(node: &Node, config: &GatewayConfig, req: Incoming) -> Result<Bytes, RemoteError> {
    let claims = config
        .auth
        .verify(&req.token)
        .map_err(|e| refuse(RemoteCode::Unauthorized, e.to_string()))?;
    if !config.expose.contains(&req.service) {
        return Err(refuse(
            RemoteCode::Forbidden,
            format!("service {:?} is not exposed", req.service),
        ));
    }
    if let Some(allowed) = claims.and_then(|c| c.services) {
        if !allowed.contains(&req.service) {
            return Err(refuse(
                RemoteCode::Forbidden,
                AuthError::NotAllowed(req.service).to_string(),
            ));
        }
    }
    let mut body = req.body;
    if let Some(t) = &config.request {
        body = t(&req.service, body)?;
    }
    let mut reply = node
        .request_raw(
            &req.service,
            body,
            CallOptions::default().timeout(config.timeout),
        )
        .await
        .map_err(upstream)?;
    if let Some(t) = &config.reply {
        reply = t(&req.service, reply)?;
    }
    Ok(reply)
}

/// A pub/sub forwarder (XSUB/XPUB-style); dropping it stops it.
#[derive(Debug)]
pub struct Forwarder {
    endpoints: Vec<Endpoint>,
    forwarded: Arc<std::sync::atomic::AtomicU64>,
    _task: crate::transport::guard::AbortOnDrop,
}

impl Forwarder {
    /// Subscribes to `prefixes` ("" for everything) on each of `upstream`
    /// and republishes on a publisher bound to `downstream`.
    pub async fn start(
        upstream: &[&str],
        prefixes: &[&str],
        downstream: &str,
    ) -> Result<Self, OpenError> {
        let mut sb = crate::SocketBuilder::new();
        for u in upstream {
            sb = sb.connect(u.to_string());
        }
        let mut sub: Subscriber<serde::de::IgnoredAny> = sb.subscriber(prefixes).await?;
        let publisher: Publisher<()> = Publisher::bind(downstream).await?;
        let endpoints = publisher.endpoints().to_vec();
        let forwarded = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = forwarded.clone();
        let task = tokio::spawn(async move {
            while let Ok(d) = sub.recv().await {
                let topic = d.topic_str().unwrap_or("").to_owned();
                // A traced message is republished in its trace.
                let publish = publisher.publish_bytes(topic.as_bytes(), d.body().clone());
                let sent = match d.trace_context() {
                    Some(cx) => crate::trace::with_context(cx, publish).await,
                    None => publish.await,
                };
                if sent.is_err() {
                    crate::telemetry::dropped(crate::telemetry::DropReason::ForwardFailed, 1);
                    continue;
                }
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Ok(Forwarder {
            endpoints,
            forwarded,
            _task: crate::transport::guard::AbortOnDrop(task),
        })
    }

    /// Where its publisher listens.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Messages forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

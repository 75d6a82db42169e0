//! The HTTP server: axum (hyper) accepting HTTP/1.1 and HTTP/2, one
//! handler that matches the configured routes itself and turns each
//! request into a fabric call.
//!
//! Per request, in order: route match (404, 405), rate limit by client
//! address (429), bearer token and the route's scopes and claims (401,
//! 403), rate limit by subject when configured so, static answer, body
//! size (413) and JSON (400), path parameters merged into the body, the
//! deadline header (400 if bad), the cache, then the call or the
//! scatter-gather, its failure mapped by [`http_error`](super::http_error).
//!
//! Guarantees: nothing reaches the fabric before the token, scopes, size
//! and rate checks pass; every refusal is counted by reason
//! ([`EdgeRefusal`]); every answer carries a `traceparent` naming the
//! gateway's span (a child of the caller's, or a new trace); a call's
//! deadline is the caller's `X-Request-Timeout-Ms` capped by
//! `max_timeout_ms`, or the route's timeout. Does not: retry calls (the
//! node's retry policy does, for idempotent ones), or stream bodies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::cache::{Cached, ResponseCache};
use super::config::{Action, ConfigError, EdgeConfig, RateKey, Route, ServiceRef};
use super::limit::{RateLimit, RateLimiter};
use super::mapping::{http_error, HttpError};
use super::status::{ServiceStats, Status, PAGE};
use crate::node::{CallOptions, Node};
use crate::telemetry::{self, EdgeRefusal};
use crate::topology::aggregator::{scatter_gather, Scatter};
use crate::topology::gateway::{Auth, JwtAlgorithm, KeyError, KeySource, KeySpec};
use crate::trace::{self, TraceContext};
use crate::wire;

/// The request header a caller names its deadline in, milliseconds.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration does not check.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The `[auth]` key could not be loaded.
    #[error("[auth]: {0}")]
    Key(#[from] KeyError),
    /// `listen` does not resolve or cannot be bound.
    #[error("cannot listen on {listen}: {error}")]
    Listen {
        /// The address.
        listen: String,
        /// What went wrong.
        error: String,
    },
    /// The `[tls]` certificate or key could not be loaded.
    #[error("[tls]: {0}")]
    Tls(String),
}

/// The shared state of the handler.
struct App {
    node: Arc<Node>,
    routes: Vec<Route>,
    auth: Option<Auth>,
    limiter: Option<(Mutex<RateLimiter>, RateKey)>,
    cache: Mutex<ResponseCache>,
    stats: ServiceStats,
    max_body: usize,
    timeout: Duration,
    max_timeout: Duration,
    status_page: bool,
}

/// A running HTTP edge. Dropping it stops it (connections in progress
/// are cut); [`HttpGateway::shutdown`] lets them finish first.
#[derive(Debug)]
pub struct HttpGateway {
    addr: SocketAddr,
    tls: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for HttpGateway {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

fn load_auth(c: &EdgeConfig) -> Result<Option<Auth>, StartError> {
    let Some(a) = &c.auth else {
        return Ok(None);
    };
    let file = |p: &std::path::PathBuf| KeySource::File(c.resolve(p));
    let spec = if let Some(p) = &a.hs256_file {
        KeySpec::Hs256(file(p))
    } else if let Some(p) = &a.rs256_pem_file {
        KeySpec::Pem(JwtAlgorithm::RS256, file(p))
    } else if let Some(p) = &a.es256_pem_file {
        KeySpec::Pem(JwtAlgorithm::ES256, file(p))
    } else if let Some(p) = &a.jwks_file {
        KeySpec::Jwks(file(p))
    } else {
        return Err(ConfigError::AuthKeys.into());
    };
    let auth = Auth::load(&spec)?.leeway(Duration::from_secs(a.leeway_s.unwrap_or(30)));
    Ok(Some(auth))
}

impl HttpGateway {
    /// Checks `config`, loads its keys, binds `listen` and serves, calling
    /// into the fabric through `node`.
    pub async fn start(config: EdgeConfig, node: Arc<Node>) -> Result<Self, StartError> {
        let routes = config.compile()?;
        let auth = load_auth(&config)?;
        let limiter = config.rate_limit.as_ref().map(|r| {
            let limit = RateLimit {
                per_second: r.per_second,
                burst: r.burst.unwrap_or(r.per_second.max(1.0)),
                max_clients: r.max_clients,
            };
            (Mutex::new(RateLimiter::new(limit)), r.by)
        });
        let listen_err = |e: String| StartError::Listen {
            listen: config.listen.clone(),
            error: e,
        };
        let addr = tokio::net::lookup_host(&config.listen)
            .await
            .map_err(|e| listen_err(e.to_string()))?
            .next()
            .ok_or_else(|| listen_err("the host does not resolve".into()))?;
        let tls = match &config.tls {
            Some(t) => Some(super::tls::acceptor(
                &config.resolve(&t.cert_file),
                &config.resolve(&t.key_file),
            )?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| listen_err(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| listen_err(e.to_string()))?;
        for r in EdgeRefusal::ALL {
            metrics::counter!(telemetry::EDGE_REFUSED, "reason" => r.as_str()).absolute(0);
        }
        let app = Arc::new(App {
            node,
            routes,
            auth,
            limiter,
            cache: Mutex::new(ResponseCache::new(
                config.cache.max_entries,
                config.cache.max_bytes,
            )),
            stats: ServiceStats::default(),
            max_body: config.max_body_bytes,
            timeout: Duration::from_millis(config.timeout_ms),
            max_timeout: Duration::from_millis(config.max_timeout_ms),
            status_page: config.status_page,
        });
        let router = axum::Router::new().fallback(handle).with_state(app);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let with_tls = tls.is_some();
        let task = match tls {
            None => tokio::spawn(async move {
                let served = axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "the HTTP edge stopped");
                }
            }),
            Some(acceptor) => tokio::spawn(super::tls::serve(listener, acceptor, router, stopped)),
        };
        Ok(HttpGateway {
            addr,
            tls: with_tls,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Where it listens (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`http://ADDR` or `https://ADDR`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops taking connections and lets the requests in progress finish,
    /// within `timeout`; then stops.
    pub async fn shutdown(mut self, timeout: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let abort = t.abort_handle();
            if tokio::time::timeout(timeout, t).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// An answer under construction.
struct Answer {
    status: u16,
    body: Bytes,
    content_type: HeaderValue,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Answer {
    fn json(status: u16, body: Bytes) -> Self {
        Answer {
            status,
            body,
            content_type: HeaderValue::from_static("application/json"),
            headers: Vec::new(),
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        Answer::json(status, Bytes::from(body.to_string()))
    }

    fn refuse(reason: EdgeRefusal, status: u16, message: &str) -> Self {
        telemetry::edge_refused(reason);
        Answer::error(status, reason.as_str(), message)
    }

    fn with(mut self, name: header::HeaderName, value: impl TryInto<HeaderValue>) -> Self {
        if let Ok(v) = value.try_into() {
            self.headers.push((name, v));
        }
        self
    }

    fn from_http_error(e: &HttpError) -> Self {
        let a = Answer::error(e.status, &e.code, &e.message);
        match e.retry_after {
            Some(s) => a.with(header::RETRY_AFTER, s.to_string()),
            None => a,
        }
    }
}

/// The gateway's span: a child of the caller's `traceparent`, or the root
/// of a new trace.
fn span_context(headers: &HeaderMap) -> TraceContext {
    let incoming = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|tp| {
            let state = headers.get("tracestate").and_then(|v| v.to_str().ok());
            TraceContext::parse(tp, state)
        });
    match incoming {
        Some(cx) => cx.child(trace::random_span_id()),
        None => TraceContext::of_span(
            trace::random_trace_id(),
            trace::random_span_id(),
            0x01,
            None,
        ),
    }
}

async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let cx = span_context(req.headers());
    let (route_label, answer) = match app
        .routes
        .iter()
        .position(|r| r.template.matches(req.uri().path()).is_some())
    {
        None => ("none".to_string(), builtin(&app, &req)),
        Some(_) => {
            let path = req.uri().path().to_string();
            let found =
                app.routes.iter().enumerate().find(|(_, r)| {
                    r.method == *req.method() && r.template.matches(&path).is_some()
                });
            match found {
                None => {
                    let allow: Vec<&str> = app
                        .routes
                        .iter()
                        .filter(|r| r.template.matches(&path).is_some())
                        .map(|r| r.method.as_str())
                        .collect();
                    let label = app
                        .routes
                        .iter()
                        .find(|r| r.template.matches(&path).is_some())
                        .map(|r| r.template.as_str().to_string())
                        .unwrap_or_default();
                    (
                        label,
                        Answer::refuse(
                            EdgeRefusal::MethodNotAllowed,
                            405,
                            &format!("{} is not served on {path}", req.method()),
                        )
                        .with(header::ALLOW, allow.join(", ")),
                    )
                }
                Some((i, route)) => {
                    let label = route.template.as_str().to_string();
                    let answer =
                        trace::with_context(cx.clone(), serve(&app, i, route, peer, req)).await;
                    (label, answer)
                }
            }
        }
    };
    let elapsed = started.elapsed();
    metrics::counter!(telemetry::EDGE_REQUESTS, "route" => route_label.clone(),
        "status" => answer.status.to_string())
    .increment(1);
    metrics::histogram!(telemetry::EDGE_REQUEST_DURATION, "route" => route_label)
        .record(elapsed.as_secs_f64());
    let mut b = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, answer.content_type);
    if let Some(tp) = cx.traceparent() {
        b = b.header("traceparent", tp);
    }
    if let Some(ts) = cx.tracestate() {
        b = b.header("tracestate", ts);
    }
    for (k, v) in answer.headers {
        b = b.header(k, v);
    }
    b.body(Body::from(answer.body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// What no route claims: the status page, or 404.
fn builtin(app: &App, req: &Request) -> Answer {
    if app.status_page && req.method() == Method::GET {
        match req.uri().path() {
            "/" => {
                return Answer {
                    status: 200,
                    body: Bytes::from_static(PAGE.as_bytes()),
                    content_type: HeaderValue::from_static("text/html; charset=utf-8"),
                    headers: Vec::new(),
                }
            }
            "/status.json" => {
                let s = Status::now("gateway", app.stats.lines());
                return Answer::json(200, Bytes::from(serde_json::to_vec(&s).unwrap_or_default()))
                    .with(header::CACHE_CONTROL, "no-store");
            }
            _ => {}
        }
    }
    Answer::refuse(
        EdgeRefusal::NoRoute,
        404,
        &format!("no route for {}", req.uri().path()),
    )
}

/// Takes a token from the client's bucket, or says how long to wait.
fn limited(app: &App, key: &str) -> Option<Answer> {
    let (limiter, _) = app.limiter.as_ref()?;
    let wait = limiter.lock().check(key, Instant::now()).err()?;
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Some(
        Answer::refuse(EdgeRefusal::RateLimited, 429, "rate limit exceeded")
            .with(header::RETRY_AFTER, secs.max(1).to_string()),
    )
}

fn unauthorized(message: &str) -> Answer {
    Answer::refuse(EdgeRefusal::Unauthorized, 401, message)
        .with(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")
}

/// Who a verified token names and what it allows.
#[derive(Default)]
struct Caller {
    /// Its `sub`.
    subject: Option<String>,
    /// Its `services` claim: the services it may call (absent: any the
    /// route allows), as the fabric gateway reads it.
    services: Option<Vec<String>>,
}

/// Checks the bearer token against the route; the caller or the refusal.
fn authorize(app: &App, route: &Route, headers: &HeaderMap) -> Result<Caller, Answer> {
    let Some(auth) = &app.auth else {
        return Ok(Caller::default());
    };
    if route.public {
        return Ok(Caller::default());
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| unauthorized("a bearer token is required"))?;
    let claims = match auth.verify_as::<Map<String, Value>>(token.trim()) {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return Err(unauthorized(&e.to_string())),
    };
    let forbid = |m: String| Answer::refuse(EdgeRefusal::Forbidden, 403, &m);
    let mut scopes: Vec<&str> = claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    if let Some(Value::Array(a)) = claims.get("scp") {
        scopes.extend(a.iter().filter_map(Value::as_str));
    }
    if let Some(missing) = route.scopes.iter().find(|s| !scopes.contains(&s.as_str())) {
        return Err(forbid(format!("the token lacks scope {missing:?}")));
    }
    for (k, want) in &route.claims {
        let ok = match claims.get(k) {
            Some(Value::String(s)) => s == want,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
            Some(other) => {
                let shown = other.to_string();
                shown == *want
            }
            None => false,
        };
        if !ok {
            return Err(forbid(format!("the token's claim {k:?} is not {want:?}")));
        }
    }
    Ok(Caller {
        subject: claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string),
        services: claims.get("services").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        }),
    })
}

async fn read_body(body: Body, max: usize) -> Result<Bytes, Answer> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Answer::refuse(
                EdgeRefusal::BadRequest,
                400,
                &format!("cannot read the body: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn too_large(max: usize) -> Answer {
    Answer::refuse(
        EdgeRefusal::TooLarge,
        413,
        &format!("the body is larger than {max} bytes"),
    )
}

/// The call's deadline: the caller's header capped by `max_timeout`, else
/// the route's or the file's timeout.
fn deadline(app: &App, route: &Route, headers: &HeaderMap) -> Result<Duration, Answer> {
    let default = route.timeout.unwrap_or(app.timeout);
    let Some(v) = headers.get(TIMEOUT_HEADER) else {
        return Ok(default);
    };
    let ms: u64 = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            Answer::refuse(
                EdgeRefusal::BadRequest,
                400,
                &format!("{TIMEOUT_HEADER} must be a positive number of milliseconds"),
            )
        })?;
    Ok(Duration::from_millis(ms).min(app.max_timeout))
}

async fn serve(app: &App, index: usize, route: &Route, peer: SocketAddr, req: Request) -> Answer {
    let client = peer.ip().to_string();
    if matches!(app.limiter, Some((_, RateKey::Client))) {
        if let Some(refused) = limited(app, &client) {
            return refused;
        }
    }
    let (parts, body) = req.into_parts();
    let caller = match authorize(app, route, &parts.headers) {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    if matches!(app.limiter, Some((_, RateKey::Subject))) {
        let key = caller
            .subject
            .as_ref()
            .map(|s| format!("sub:{s}"))
            .unwrap_or(client);
        if let Some(refused) = limited(app, &key) {
            return refused;
        }
    }
    if let Action::Static {
        status,
        body,
        content_type,
    } = &route.action
    {
        let mut a = Answer::json(*status, body.clone());
        if let Ok(v) = HeaderValue::from_str(content_type) {
            a.content_type = v;
        }
        return a;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > app.max_body) {
        return too_large(app.max_body);
    }
    let raw = match read_body(body, app.max_body).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let params = route.template.matches(parts.uri.path()).unwrap_or_default();
    let service = match &route.action {
        Action::Call(ServiceRef::Fixed(s)) => Some(s.clone()),
        Action::Call(ServiceRef::Param { name, allow }) => {
            let s = params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            if !allow.contains(&s) {
                return Answer::refuse(
                    EdgeRefusal::Forbidden,
                    403,
                    &format!("service {s:?} is not exposed on this route"),
                );
            }
            Some(s)
        }
        _ => None,
    };
    if let (Some(s), Some(allowed)) = (&service, &caller.services) {
        if !allowed.contains(s) {
            return Answer::refuse(
                EdgeRefusal::Forbidden,
                403,
                &format!("the token does not allow service {s:?}"),
            );
        }
    }
    let skip = match &route.action {
        Action::Call(ServiceRef::Param { name, .. }) => Some(name.as_str()),
        _ => None,
    };
    let value = match request_value(&raw, &params, skip) {
        Ok(v) => v,
        Err(m) => return Answer::refuse(EdgeRefusal::BadRequest, 400, &m),
    };
    let timeout = match deadline(app, route, &parts.headers) {
        Ok(t) => t,
        Err(refused) => return refused,
    };
    let cache_key = (!route.cache_ttl.is_zero())
        .then(|| format!("{index}\n{}\n{}\n{}", parts.method, parts.uri, value));
    if let Some(k) = &cache_key {
        if let Some(hit) = app.cache.lock().get(k, Instant::now()) {
            return Answer::json(hit.status, hit.body).with(
                header::HeaderName::from_static("x-cache"),
                HeaderValue::from_static("hit"),
            );
        }
    }
    let started = Instant::now();
    let answer = match (&route.action, service) {
        (
            Action::Aggregate {
                services,
                completion,
            },
            _,
        ) => aggregate(app, services, *completion, &value, timeout).await,
        (_, Some(service)) => {
            let a = call(app, &service, &value, timeout).await;
            app.stats
                .record(&service, a.status < 400, started.elapsed());
            a
        }
        _ => Answer::error(500, "internal", "route without a target"),
    };
    if let Some(k) = cache_key {
        if answer.status == 200 {
            app.cache.lock().put(
                k,
                Cached {
                    status: answer.status,
                    body: answer.body.clone(),
                },
                route.cache_ttl,
                Instant::now(),
            );
        }
        return answer.with(
            header::HeaderName::from_static("x-cache"),
            HeaderValue::from_static("miss"),
        );
    }
    answer
}

/// The JSON request value: the body (`{}` when empty) with the path
/// parameters merged in (they win over body fields of the same name).
fn request_value(
    raw: &[u8],
    params: &[(String, String)],
    skip: Option<&str>,
) -> Result<Value, String> {
    let mut v: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(raw).map_err(|e| format!("the body is not JSON: {e}"))?
    };
    let params: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .collect();
    if params.is_empty() {
        return Ok(v);
    }
    let Value::Object(obj) = &mut v else {
        return Err("path parameters need a JSON object body (or none)".into());
    };
    for (k, val) in params {
        obj.insert(k.clone(), Value::String(val.clone()));
    }
    Ok(v)
}

/// A MessagePack reply as JSON (`bad_reply`, 502, if it has no JSON form:
/// binary fields, non-string map keys).
fn reply_json(body: &[u8]) -> Result<Bytes, HttpError> {
    let v: Value = rmp_serde::from_slice(body).map_err(|e| HttpError {
        status: 502,
        code: "bad_reply".into(),
        message: format!("the reply has no JSON form: {e}"),
        retry_after: None,
    })?;
    Ok(Bytes::from(v.to_string()))
}

async fn call(app: &App, service: &str, value: &Value, timeout: Duration) -> Answer {
    let body = match wire::encode_body(value) {
        Ok(b) => b,
        Err(e) => return Answer::error(400, "bad_request", &e.to_string()),
    };
    let result = app
        .node
        .request_raw(service, body, CallOptions::default().timeout(timeout))
        .await;
    match result {
        Ok(reply) => match reply_json(&reply) {
            Ok(json) => Answer::json(200, json),
            Err(e) => Answer::from_http_error(&e),
        },
        Err(e) => Answer::from_http_error(&http_error(&e)),
    }
}

async fn aggregate(
    app: &App,
    services: &[String],
    completion: crate::topology::aggregator::Completion,
    value: &Value,
    timeout: Duration,
) -> Answer {
    let started = Instant::now();
    let scatter = Scatter::Services(services.to_vec());
    let g = match scatter_gather::<Value, Value>(&app.node, &scatter, value, completion, timeout)
        .await
    {
        Ok(g) => g,
        Err(e) => return Answer::error(400, "bad_request", &e.to_string()),
    };
    let name = |t: &crate::topology::aggregator::Target| match t {
        crate::topology::aggregator::Target::Service(s) => s.clone(),
        crate::topology::aggregator::Target::Member(_, n) => n.clone(),
    };
    let elapsed = started.elapsed();
    let mut results = Map::new();
    for (t, v) in &g.replies {
        app.stats.record(&name(t), true, elapsed);
        results.insert(name(t), v.clone());
    }
    let mut errors = Map::new();
    let mut first_error = None;
    for (t, e) in &g.failed {
        app.stats.record(&name(t), false, elapsed);
        let h = http_error(e);
        errors.insert(
            name(t),
            serde_json::json!({"status": h.status, "code": h.code, "message": h.message}),
        );
        first_error.get_or_insert(h);
    }
    for t in &g.timed_out {
        app.stats.record(&name(t), false, elapsed);
    }
    let timed_out: Vec<String> = g.timed_out.iter().map(name).collect();
    let partial = !g.failed.is_empty() || !timed_out.is_empty();
    let satisfied = g.satisfied();
    let body = serde_json::json!({
        "results": results,
        "errors": errors,
        "timed_out": timed_out,
        "partial": partial,
        "complete": satisfied,
    });
    // Unmet with nothing to show: the failure's own status (504 when
    // everything timed out).
    let status = if satisfied || !g.replies.is_empty() {
        200
    } else if let Some(h) = first_error {
        h.status
    } else {
        504
    };
    Answer::json(status, Bytes::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_merge_into_the_body_and_need_an_object() {
        let p = vec![
            ("id".to_string(), "42".to_string()),
            ("service".into(), "users".into()),
        ];
        assert_eq!(
            request_value(b"", &p, Some("service")).unwrap(),
            serde_json::json!({"id": "42"})
        );
        assert_eq!(
            request_value(br#"{"id": 1, "x": true}"#, &p, Some("service")).unwrap(),
            serde_json::json!({"id": "42", "x": true})
        );
        assert_eq!(
            request_value(b"[1,2]", &[], None).unwrap(),
            serde_json::json!([1, 2])
        );
        assert!(request_value(b"[1,2]", &p, None).is_err());
        assert!(request_value(b"{nope", &[], None).is_err());
    }
}

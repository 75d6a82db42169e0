//! The HTTP edge: an HTTP/1.1 and HTTP/2 gateway into the fabric, for
//! callers that speak HTTP and JSON rather than ZMTP and MessagePack
//! (browsers, curl, any HTTP client). Behind the `edge` cargo feature
//! (on with `cli`, the default).
//!
//! An [`HttpGateway`] serves the routes of an [`EdgeConfig`] (a TOML file,
//! docs/GATEWAY.md) through a [`Node`](crate::node::Node):
//! - **service routes**: a JSON body (path parameters merged in) is
//!   encoded as MessagePack and sent anycast to the service; the reply
//!   comes back as JSON. `POST /v1/{service}` with an allow-list is one
//!   such route;
//! - **aggregation routes**: one request scattered to several services
//!   ([`scatter_gather`](crate::topology::scatter_gather)), one JSON
//!   answer with the partial results marked;
//! - **static routes**: a fixed answer.
//!
//! Around each call: bearer JWTs (the fabric gateway's [`Auth`](crate::topology::gateway::Auth):
//! HS256, RS256, ES256, JWKS) with per-route scopes and claims, a
//! per-client token-bucket rate limit, a body size limit, a deadline from
//! `X-Request-Timeout-Ms` carried into the fabric call, `traceparent` in
//! and out, a bounded response cache with a TTL per route, TLS through
//! rustls. Fabric failures become HTTP statuses as [`MAPPING`] says. A
//! live [status page](status) is served on `GET /`.
//!
//! # Guarantees
//! - The edge holds no business logic: it maps, checks and forwards.
//!   Nothing reaches the fabric before the token, scope, size and rate
//!   checks pass, and a service taken from the path must be on the
//!   route's allow-list.
//! - Every refusal is counted by reason
//!   (`zfabric_edge_refused_total{reason}`,
//!   [`EdgeRefusal`](crate::telemetry::EdgeRefusal)), every answer by
//!   route and status.
//!
//! # Not guaranteed
//! The cache and the rate limit are per process (several gateways do not
//! share them). Replies with binary fields or non-string map keys have no
//! JSON form (502 `bad_reply`).

mod cache;
mod config;
mod limit;
mod mapping;
mod server;
pub mod status;
mod template;
mod tls;

pub use cache::{Cached, ResponseCache};
pub use config::{
    AuthSection, CacheSection, ConfigError, EdgeConfig, NodeSection, RateKey, RateLimitSection,
    RouteConfig, TlsSection,
};
pub use limit::{RateLimit, RateLimiter};
pub use mapping::{http_error, HttpError, MappingRow, MAPPING};
pub use server::{HttpGateway, StartError, TIMEOUT_HEADER};
pub use template::{PathTemplate, TemplateError};

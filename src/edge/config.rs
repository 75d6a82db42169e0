//! The HTTP edge's configuration: the TOML file `zfabric gateway --config
//! FILE` reads (docs/GATEWAY.md lists every key), checked into routes
//! before anything listens.
//!
//! Guarantees: every route is exactly one kind (a service call, an
//! aggregation, a static answer); a route whose service comes from the
//! path has an allow-list (the edge is never an open proxy into the
//! fabric); scopes or claims on a route need an `[auth]` section; an error
//! names the route or key at fault. Key files are named by path only
//! (relative paths are relative to the file). Does not: read key or
//! certificate files (starting the edge does), or watch the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::template::{PathTemplate, TemplateError};
use crate::topology::aggregator::Completion;

/// The whole file. Defaults are for one gateway in front of a small
/// fabric on one host: 1 MiB bodies, 5 s calls (30 s at most from the
/// deadline header), no auth, no rate limit, a 1024-answer cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// `HOST:PORT` to listen on (`127.0.0.1:8080`; port 0 picks one).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body taken, in bytes (413 above). Memory: one body
    /// of this size per request in progress.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Time allowed for a fabric call when the caller names none, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The most a caller may ask for with `X-Request-Timeout-Ms`, ms.
    #[serde(default = "default_max_timeout_ms")]
    pub max_timeout_ms: u64,
    /// Serve the status page on `GET /` and `GET /status.json` (unless a
    /// route takes those paths).
    #[serde(default = "yes")]
    pub status_page: bool,
    /// How the gateway's node joins the fabric.
    #[serde(default)]
    pub node: NodeSection,
    /// Bearer-token checks (absent: none).
    #[serde(default)]
    pub auth: Option<AuthSection>,
    /// Per-client rate limit (absent: none).
    #[serde(default)]
    pub rate_limit: Option<RateLimitSection>,
    /// The response cache's bounds.
    #[serde(default)]
    pub cache: CacheSection,
    /// TLS (absent: plain HTTP).
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// The routes, tried in order.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// The directory relative key and certificate paths start from (the
    /// file's directory; set by [`EdgeConfig::from_toml`]).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_timeout_ms() -> u64 {
    30_000
}
fn yes() -> bool {
    true
}
fn post() -> String {
    "POST".into()
}
fn all() -> String {
    "all".into()
}

/// `[node]`: the gateway's own node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Its name on the fabric (default `edge`).
    #[serde(default = "default_node_name")]
    pub name: String,
    /// Endpoints it binds (default `tcp://127.0.0.1:0`).
    #[serde(default = "default_bind")]
    pub bind: Vec<String>,
    /// Seeds it joins through.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Heartbeat interval, ms (default: the node's).
    pub heartbeat_ms: Option<u64>,
    /// Silence before a member is suspect, ms (default: the node's).
    pub suspect_after_ms: Option<u64>,
    /// Silence before a member is out of every route, ms (default: the
    /// node's).
    pub gone_after_ms: Option<u64>,
}

impl NodeSection {
    /// The node settings: the defaults with this section's membership
    /// timings.
    pub fn node_config(&self) -> crate::node::NodeConfig {
        let mut c = crate::node::NodeConfig::default();
        let ms = Duration::from_millis;
        if let Some(v) = self.heartbeat_ms {
            c.membership.heartbeat_interval = ms(v);
        }
        if let Some(v) = self.suspect_after_ms {
            c.membership.suspect_after = ms(v);
        }
        if let Some(v) = self.gone_after_ms {
            c.membership.gone_after = ms(v);
        }
        c
    }

    /// A node builder with this section's name, endpoints, seeds and
    /// timings.
    pub fn builder(&self) -> crate::node::NodeBuilder {
        let mut b = crate::node::Node::builder(self.name.clone()).config(self.node_config());
        for e in &self.bind {
            b = b.bind(e.clone());
        }
        for s in &self.seeds {
            b = b.seed(s.clone());
        }
        b
    }
}

fn default_node_name() -> String {
    "edge".into()
}
fn default_bind() -> Vec<String> {
    vec!["tcp://127.0.0.1:0".into()]
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            name: default_node_name(),
            bind: default_bind(),
            seeds: Vec::new(),
            heartbeat_ms: None,
            suspect_after_ms: None,
            gone_after_ms: None,
        }
    }
}

/// `[auth]`: where the verification key is; exactly one of the four.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// An HS256 shared secret's file.
    pub hs256_file: Option<PathBuf>,
    /// An RS256 public key's PEM file.
    pub rs256_pem_file: Option<PathBuf>,
    /// An ES256 (P-256) public key's PEM file.
    pub es256_pem_file: Option<PathBuf>,
    /// A JWKS document's file (RS256 and ES256 keys, picked by `kid`).
    pub jwks_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds (default 30).
    pub leeway_s: Option<u64>,
}

/// What a client's rate-limit bucket is keyed by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// The client's IP address.
    #[default]
    Client,
    /// The token's `sub` (the client's address when there is no token).
    Subject,
}

/// `[rate_limit]`: one token bucket per client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Requests per second, on average (> 0).
    pub per_second: f64,
    /// Requests at once (>= 1; default: `per_second`, at least 1).
    pub burst: Option<f64>,
    /// What a bucket is keyed by (`client` or `subject`).
    #[serde(default)]
    pub by: RateKey,
    /// Clients tracked at most (default 10000; about 100 bytes each).
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
}

fn default_max_clients() -> usize {
    10_000
}

/// `[cache]`: the response cache's bounds (routes set their TTL).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Answers kept at most (default 1024).
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    /// Body bytes kept at most (default 16 MiB).
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: usize,
}

fn default_cache_entries() -> usize {
    1024
}
fn default_cache_bytes() -> usize {
    16 << 20
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            max_entries: default_cache_entries(),
            max_bytes: default_cache_bytes(),
        }
    }
}

/// `[tls]`: serve HTTPS with this certificate chain and key (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, PEM.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// One `[[route]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The HTTP method (default `POST`).
    #[serde(default = "post")]
    pub method: String,
    /// The path template (`/v1/users/{id}`).
    pub path: String,
    /// The service called: a name, or `{param}` for a path parameter
    /// (then `allow` lists the services it may name).
    pub service: Option<String>,
    /// The services a `{param}` service may name.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Services scattered to (an aggregation route).
    #[serde(default)]
    pub aggregate: Vec<String>,
    /// When an aggregation is complete: `all`, `first_success`,
    /// `by_deadline` or `quorum:K`.
    #[serde(default = "all")]
    pub completion: String,
    /// A static answer's status.
    pub static_status: Option<u16>,
    /// A static answer's body.
    pub static_body: Option<String>,
    /// A static answer's content type (default `application/json`).
    pub content_type: Option<String>,
    /// No token needed, even with `[auth]`.
    #[serde(default)]
    pub public: bool,
    /// Scopes the token must have (its `scope`, space-separated, or `scp`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claims the token must carry with these values.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// Keep successful answers this long (0: not cached), ms.
    #[serde(default)]
    pub cache_ttl_ms: u64,
    /// This route's call timeout, ms (default: the file's `timeout_ms`).
    pub timeout_ms: Option<u64>,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        error: String,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("bad gateway configuration: {0}")]
    Toml(String),
    /// A path template that is not one.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A method that is not GET, POST, PUT, PATCH or DELETE.
    #[error("route {path}: method {method:?} is not GET, POST, PUT, PATCH or DELETE")]
    Method {
        /// The route's path.
        path: String,
        /// The method given.
        method: String,
    },
    /// A route that is not exactly one of `service`, `aggregate`,
    /// `static_status`.
    #[error("route {0}: give exactly one of service, aggregate or static_status")]
    Kind(String),
    /// `service = "{x}"` where the path has no parameter `x`.
    #[error("route {path}: service parameter {param:?} is not in the path")]
    ServiceParam {
        /// The route's path.
        path: String,
        /// The parameter named.
        param: String,
    },
    /// A service taken from the path without an `allow` list.
    #[error("route {0}: a service taken from the path needs an allow list")]
    NoAllowList(String),
    /// A `completion` that is not `all`, `first_success`, `by_deadline`
    /// or `quorum:K` with 1 <= K <= the services.
    #[error(
        "route {path}: completion {value:?} is not all, first_success, by_deadline or quorum:K"
    )]
    Completion {
        /// The route's path.
        path: String,
        /// The value given.
        value: String,
    },
    /// `scopes` or `claims` on a route while the file has no `[auth]`.
    #[error("route {0}: scopes or claims need an [auth] section")]
    NoAuth(String),
    /// An `[auth]` section naming no key or more than one.
    #[error("[auth] needs exactly one of hs256_file, rs256_pem_file, es256_pem_file, jwks_file")]
    AuthKeys,
    /// A rate limit whose rate is not positive or whose burst is below 1.
    #[error("[rate_limit] needs per_second > 0 and burst >= 1")]
    RateLimit,
    /// `listen` is not HOST:PORT.
    #[error("listen {0:?} is not HOST:PORT")]
    Listen(String),
}

/// What a route does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Calls one service (anycast).
    Call(ServiceRef),
    /// Scatters to these services and gathers one answer.
    Aggregate {
        services: Vec<String>,
        completion: Completion,
    },
    /// Answers with this, always.
    Static {
        status: u16,
        body: Bytes,
        content_type: String,
    },
}

/// Which service a call route calls.
#[derive(Debug, Clone)]
pub(crate) enum ServiceRef {
    /// Always this one.
    Fixed(String),
    /// The one a path parameter names, if allowed.
    Param { name: String, allow: Vec<String> },
}

/// A checked route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) method: axum::http::Method,
    pub(crate) template: PathTemplate,
    pub(crate) action: Action,
    pub(crate) public: bool,
    pub(crate) scopes: Vec<String>,
    pub(crate) claims: BTreeMap<String, String>,
    pub(crate) cache_ttl: Duration,
    pub(crate) timeout: Option<Duration>,
}

fn completion(path: &str, value: &str, n: usize) -> Result<Completion, ConfigError> {
    let bad = || ConfigError::Completion {
        path: path.to_string(),
        value: value.to_string(),
    };
    Ok(match value {
        "all" => Completion::All,
        "first_success" => Completion::FirstSuccess,
        "by_deadline" => Completion::ByDeadline,
        q => {
            let k: usize = q
                .strip_prefix("quorum:")
                .and_then(|k| k.parse().ok())
                .ok_or_else(bad)?;
            if k == 0 || k > n {
                return Err(bad());
            }
            Completion::Quorum(k)
        }
    })
}

impl EdgeConfig {
    /// Parses and checks a configuration; relative paths in it are
    /// relative to `base_dir`.
    pub fn from_toml(text: &str, base_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let mut c: EdgeConfig =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        c.base_dir = base_dir.map(Path::to_path_buf);
        c.check()?;
        Ok(c)
    }

    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        Self::from_toml(&text, path.parent())
    }

    /// Checks the whole configuration (what [`from_toml`](Self::from_toml)
    /// does after parsing).
    pub fn check(&self) -> Result<(), ConfigError> {
        let ok_listen = self.listen.parse::<std::net::SocketAddr>().is_ok()
            || matches!(self.listen.rsplit_once(':'),
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok_listen {
            return Err(ConfigError::Listen(self.listen.clone()));
        }
        if let Some(a) = &self.auth {
            let n = [
                &a.hs256_file,
                &a.rs256_pem_file,
                &a.es256_pem_file,
                &a.jwks_file,
            ]
            .iter()
            .filter(|k| k.is_some())
            .count();
            if n != 1 {
                return Err(ConfigError::AuthKeys);
            }
        }
        if let Some(r) = &self.rate_limit {
            let burst = r.burst.unwrap_or(r.per_second.max(1.0));
            if r.per_second.is_nan() || r.per_second <= 0.0 || burst.is_nan() || burst < 1.0 {
                return Err(ConfigError::RateLimit);
            }
        }
        self.compile().map(|_| ())
    }

    /// Resolves `p` against the file's directory.
    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        crate::topology::gateway::resolve_key_path(self.base_dir.as_deref(), p)
    }

    /// The checked routes, in order.
    pub(crate) fn compile(&self) -> Result<Vec<Route>, ConfigError> {
        self.routes.iter().map(|r| self.route(r)).collect()
    }

    fn route(&self, r: &RouteConfig) -> Result<Route, ConfigError> {
        let template: PathTemplate = r.path.parse()?;
        let method = match r.method.to_ascii_uppercase().as_str() {
            "GET" => axum::http::Method::GET,
            "POST" => axum::http::Method::POST,
            "PUT" => axum::http::Method::PUT,
            "PATCH" => axum::http::Method::PATCH,
            "DELETE" => axum::http::Method::DELETE,
            _ => {
                return Err(ConfigError::Method {
                    path: r.path.clone(),
                    method: r.method.clone(),
                })
            }
        };
        let kinds = [
            r.service.is_some(),
            !r.aggregate.is_empty(),
            r.static_status.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(ConfigError::Kind(r.path.clone()));
        }
        let action = if let Some(s) = &r.service {
            match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => {
                    if !template.params().any(|p| p == param) {
                        return Err(ConfigError::ServiceParam {
                            path: r.path.clone(),
                            param: param.to_string(),
                        });
                    }
                    if r.allow.is_empty() {
                        return Err(ConfigError::NoAllowList(r.path.clone()));
                    }
                    Action::Call(ServiceRef::Param {
                        name: param.to_string(),
                        allow: r.allow.clone(),
                    })
                }
                None => Action::Call(ServiceRef::Fixed(s.clone())),
            }
        } else if !r.aggregate.is_empty() {
            Action::Aggregate {
                services: r.aggregate.clone(),
                completion: completion(&r.path, &r.completion, r.aggregate.len())?,
            }
        } else {
            Action::Static {
                status: r.static_status.unwrap_or(200),
                body: Bytes::from(r.static_body.clone().unwrap_or_default()),
                content_type: r
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/json".into()),
            }
        };
        if (!r.scopes.is_empty() || !r.claims.is_empty()) && self.auth.is_none() {
            return Err(ConfigError::NoAuth(r.path.clone()));
        }
        Ok(Route {
            method,
            template,
            action,
            public: r.public,
            scopes: r.scopes.clone(),
            claims: r.claims.clone(),
            cache_ttl: Duration::from_millis(r.cache_ttl_ms),
            timeout: r.timeout_ms.map(Duration::from_millis),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_every_route_kind_parses_and_checks() {
        let c = EdgeConfig::from_toml(
            r#"
            listen = "127.0.0.1:0"
            [node]
            seeds = ["tcp://127.0.0.1:7000"]
            [auth]
            hs256_file = "gw.key"
            [rate_limit]
            per_second = 10.0
            [[route]]
            path = "/v1/{service}"
            service = "{service}"
            allow = ["echo"]
            [[route]]
            method = "GET"
            path = "/v1/users/{id}"
            service = "users"
            scopes = ["users:read"]
            cache_ttl_ms = 1000
            [[route]]
            method = "GET"
            path = "/v1/dash/{id}"
            aggregate = ["a", "b"]
            completion = "quorum:1"
            [[route]]
            method = "GET"
            path = "/ping"
            static_status = 200
            static_body = '{"pong":true}'
            public = true
            "#,
            Some(Path::new("/etc/zf")),
        )
        .unwrap();
        let routes = c.compile().unwrap();
        assert_eq!(routes.len(), 4);
        assert!(matches!(
            routes[0].action,
            Action::Call(ServiceRef::Param { .. })
        ));
        assert!(matches!(
            routes[2].action,
            Action::Aggregate {
                completion: Completion::Quorum(1),
                ..
            }
        ));
        assert_eq!(
            c.resolve(Path::new("gw.key")),
            PathBuf::from("/etc/zf/gw.key")
        );
    }

    #[test]
    fn bad_routes_are_refused_naming_the_route() {
        let bad = |routes: &str, auth: bool| {
            let auth = if auth {
                "[auth]\nhs256_file = \"k\"\n"
            } else {
                ""
            };
            EdgeConfig::from_toml(&format!("{auth}{routes}"), None).unwrap_err()
        };
        assert!(matches!(
            bad("[[route]]\npath = \"/x\"\n", false),
            ConfigError::Kind(_)
        ));
        assert!(matches!(
            bad(
                "[[route]]\npath = \"/x\"\nservice = \"a\"\nstatic_status = 200\n",
                false
            ),
            ConfigError::Kind(_)
        ));
        assert!(matches!(
            bad("[[route]]\npath = \"/v1/{s}\"\nservice = \"{s}\"\n", false),
            ConfigError::NoAllowList(_)
        ));
        assert!(matches!(
            bad(
                "[[route]]\npath = \"/v1/x\"\nservice = \"{s}\"\nallow = [\"a\"]\n",
                false
            ),
            ConfigError::ServiceParam { .. }
        ));
        assert!(matches!(
            bad(
                "[[route]]\npath = \"/x\"\nmethod = \"BREW\"\nservice = \"a\"\n",
                false
            ),
            ConfigError::Method { .. }
        ));
        assert!(matches!(
            bad(
                "[[route]]\npath = \"/x\"\naggregate = [\"a\"]\ncompletion = \"quorum:2\"\n",
                false
            ),
            ConfigError::Completion { .. }
        ));
        assert!(matches!(
            bad(
                "[[route]]\npath = \"/x\"\nservice = \"a\"\nscopes = [\"s\"]\n",
                false
            ),
            ConfigError::NoAuth(_)
        ));
        assert!(matches!(
            bad("[[route]]\npath = \"x\"\nservice = \"a\"\n", true),
            ConfigError::Template(_)
        ));
        assert!(matches!(bad("nonsense = 1\n", false), ConfigError::Toml(_)));
        assert!(matches!(
            EdgeConfig::from_toml("[auth]\n", None),
            Err(ConfigError::AuthKeys)
        ));
        assert!(matches!(
            EdgeConfig::from_toml("[rate_limit]\nper_second = 0.0\n", None),
            Err(ConfigError::RateLimit)
        ));
        assert!(matches!(
            EdgeConfig::from_toml("listen = \"8080\"\n", None),
            Err(ConfigError::Listen(_))
        ));
    }
}

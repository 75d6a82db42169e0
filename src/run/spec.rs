//! The topology file: what `zfabric run` reads.
//!
//! A file describes the nodes (their services, handlers, bulkheads,
//! consumers, groups, socket roles, gateway), the load to drive, the faults
//! to inject and what the run must show. Unknown fields are errors, so a
//! typo is caught with its line rather than silently ignored.

use std::path::Path;

use serde::Deserialize;
use zfabric::topology::gateway::{resolve_key_path, JwtAlgorithm, KeySource, KeySpec};

/// A whole topology file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Spec {
    pub(crate) name: String,
    /// One line on what the pattern is.
    pub(crate) summary: String,
    #[serde(default, rename = "node")]
    pub(crate) nodes: Vec<NodeSpec>,
    #[serde(default, rename = "load")]
    pub(crate) loads: Vec<LoadSpec>,
    #[serde(default, rename = "fault")]
    pub(crate) faults: Vec<FaultSpec>,
    /// Settings of the driving node (the caller).
    #[serde(default)]
    pub(crate) caller: CallerSpec,
}

/// The caller's resilience settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallerSpec {
    #[serde(default)]
    pub(crate) breaker: Option<BreakerSpec>,
    /// Turn the caller's breakers off.
    #[serde(default)]
    pub(crate) no_breaker: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakerSpec {
    pub(crate) window: usize,
    pub(crate) minimum_calls: usize,
    pub(crate) failure_rate: f64,
    pub(crate) open_for_ms: u64,
    pub(crate) half_open_calls: usize,
}

/// One node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeSpec {
    pub(crate) name: String,
    #[serde(default, rename = "service")]
    pub(crate) services: Vec<ServiceSpec>,
    #[serde(default, rename = "bulkhead")]
    pub(crate) bulkheads: Vec<BulkheadSpec>,
    #[serde(default, rename = "consumer")]
    pub(crate) consumers: Vec<ConsumerSpec>,
    /// Multicast groups joined.
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    /// Socket role: subscribe to the driver's publisher with these prefixes.
    #[serde(default)]
    pub(crate) subscribe: Vec<String>,
    /// Socket role: pull from the driver's pusher.
    #[serde(default)]
    pub(crate) pull: bool,
    /// Socket role: serve the driver's router/dealer client.
    #[serde(default)]
    pub(crate) reply: Option<HandlerSpec>,
    /// A gateway in front of the fabric, on this node.
    #[serde(default)]
    pub(crate) gateway: Option<GatewaySpec>,
    /// Serve the configuration service (`config`) from this directory
    /// (relative to the file), publishing new versions.
    #[serde(default)]
    pub(crate) config_dir: Option<std::path::PathBuf>,
    /// Serve the shared-data service (`customers.*`) from a redb file in
    /// the run's temporary directory, kept across restarts of the node.
    #[serde(default)]
    pub(crate) data_service: bool,
    /// A read-through cache of customers in front of the data service,
    /// served as `service`, invalidated by its change events.
    #[serde(default)]
    pub(crate) customer_cache: Option<CacheSpec>,
    /// Host a durable stream on this node (its log in the run's temporary
    /// directory, kept across restarts of the node).
    #[serde(default)]
    pub(crate) stream: Option<StreamSpec>,
    /// Consume a stream as a member of a consumer group, recording each
    /// record's effect in the effect store (`effect_store`).
    #[serde(default)]
    pub(crate) stream_consumer: Option<StreamConsumerSpec>,
    /// Serve the effect store (`effects.apply`, `effects.seen`) from a redb
    /// file in the run's temporary directory, kept across restarts.
    #[serde(default)]
    pub(crate) effect_store: bool,
}

/// A stream hosted on a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamSpec {
    /// Its name (`[A-Za-z0-9._-]{1,64}`).
    pub(crate) name: String,
    /// Its partitions.
    #[serde(default = "one_u32")]
    pub(crate) partitions: u32,
    /// `always`, `os`, or `group:<ms>` (group commit).
    #[serde(default = "always")]
    pub(crate) fsync: String,
    /// How long a group member's lease lasts without renewal.
    #[serde(default = "lease_ms")]
    pub(crate) lease_ms: u64,
}

fn one_u32() -> u32 {
    1
}

fn always() -> String {
    "always".into()
}

fn lease_ms() -> u64 {
    3000
}

impl StreamSpec {
    /// Its fsync policy, or why `fsync` is not one.
    pub(crate) fn fsync_policy(&self) -> Result<zfabric::stream::FsyncPolicy, String> {
        use zfabric::stream::FsyncPolicy;
        match self.fsync.as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "os" => Ok(FsyncPolicy::Os),
            f => match f
                .strip_prefix("group:")
                .and_then(|ms| ms.parse::<u64>().ok())
            {
                Some(ms) => Ok(FsyncPolicy::GroupCommit {
                    interval: std::time::Duration::from_millis(ms),
                }),
                None => Err(format!(
                    "stream field `fsync`: {f:?} is not always, os or group:<ms>"
                )),
            },
        }
    }
}

/// A consumer-group member on a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamConsumerSpec {
    /// The stream it consumes.
    pub(crate) stream: String,
    /// Its consumer group.
    pub(crate) group: String,
    /// How long the handler works on after recording a record's effect
    /// (before the record counts as processed and can be committed): the
    /// window in which a SIGKILL makes the record be delivered again.
    #[serde(default)]
    pub(crate) work_ms: u64,
}

/// A read-through customer cache on a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CacheSpec {
    /// The service it answers as (`GetCustomer` → `Cached`).
    pub(crate) service: String,
    /// Entries held at most.
    #[serde(default = "thousand_usize")]
    pub(crate) capacity: usize,
    /// How long a value may be served.
    pub(crate) ttl_ms: u64,
}

fn thousand_usize() -> usize {
    1024
}

/// A service on a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceSpec {
    pub(crate) name: String,
    #[serde(flatten)]
    pub(crate) handler: HandlerSpec,
    /// Name of a bulkhead of this node.
    #[serde(default)]
    pub(crate) bulkhead: Option<String>,
    /// Deduplicate by call id.
    #[serde(default)]
    pub(crate) dedup: bool,
}

/// What a handler does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandlerSpec {
    /// echo | delay | random_delay | fail | cpu | forward
    pub(crate) handler: HandlerKind,
    #[serde(default)]
    pub(crate) delay_ms: f64,
    #[serde(default)]
    pub(crate) max_delay_ms: f64,
    #[serde(default)]
    pub(crate) fail_rate: f64,
    #[serde(default)]
    pub(crate) cpu_us: u64,
    /// forward: the next service.
    #[serde(default)]
    pub(crate) to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HandlerKind {
    Echo,
    Delay,
    RandomDelay,
    Fail,
    Cpu,
    Forward,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkheadSpec {
    pub(crate) name: String,
    pub(crate) concurrent: usize,
    #[serde(default)]
    pub(crate) queued: usize,
    /// Dedicated threads (0: semaphore kind).
    #[serde(default)]
    pub(crate) threads: usize,
}

/// An event consumer on a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsumerSpec {
    pub(crate) group: String,
    pub(crate) topic: String,
    /// Emit this topic after handling (choreography).
    #[serde(default)]
    pub(crate) emit: Option<String>,
    /// Fail this share of deliveries (redelivery shows).
    #[serde(default)]
    pub(crate) fail_rate: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewaySpec {
    pub(crate) expose: Vec<String>,
    /// Refused with a message: keys do not belong in configuration files.
    #[serde(default)]
    pub(crate) key: Option<toml_value::Ignored>,
    /// The key in a file: the HS256 secret, or a public key in PEM for
    /// RS256/ES256 (relative paths are from the configuration file).
    #[serde(default)]
    pub(crate) key_file: Option<std::path::PathBuf>,
    /// The key in an environment variable.
    #[serde(default)]
    pub(crate) key_env: Option<String>,
    /// A JWKS document of public keys (RS256/ES256, picked by `kid`).
    #[serde(default)]
    pub(crate) jwks_file: Option<std::path::PathBuf>,
    /// HS256 (default), RS256 or ES256, for `key_file`/`key_env`.
    #[serde(default)]
    pub(crate) algorithm: Option<String>,
}

/// A value accepted by the parser only so that it can be refused with a
/// better message than "unknown field".
pub(crate) mod toml_value {
    /// Any value, dropped.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Ignored;

    impl<'de> serde::Deserialize<'de> for Ignored {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            serde::de::IgnoredAny::deserialize(d).map(|_| Ignored)
        }
    }
}

impl GatewaySpec {
    /// Where the gateway's key is, as the library takes it; an error
    /// names the field to fix.
    pub(crate) fn key_spec(&self) -> Result<KeySpec, String> {
        if self.key.is_some() {
            return Err(
                "gateway field `key`: keys do not belong in configuration files; \
                 put it in a file (`key_file`), an environment variable (`key_env`) \
                 or a JWKS document (`jwks_file`)"
                    .into(),
            );
        }
        let alg: JwtAlgorithm = match &self.algorithm {
            Some(a) => a
                .parse()
                .map_err(|e: zfabric::topology::gateway::KeyError| {
                    format!("gateway field `algorithm`: {e}")
                })?,
            None => JwtAlgorithm::HS256,
        };
        let source = match (&self.key_file, &self.key_env, &self.jwks_file) {
            (Some(f), None, None) => KeySource::File(f.clone()),
            (None, Some(v), None) => KeySource::Env(v.clone()),
            (None, None, Some(f)) => {
                if self.algorithm.is_some() {
                    return Err(
                        "gateway field `algorithm`: a JWKS names each key's algorithm; \
                         drop `algorithm`"
                            .into(),
                    );
                }
                return Ok(KeySpec::Jwks(KeySource::File(f.clone())));
            }
            _ => {
                return Err(
                    "gateway: give exactly one of `key_file`, `key_env` or `jwks_file`".into(),
                )
            }
        };
        Ok(match alg {
            JwtAlgorithm::HS256 => KeySpec::Hs256(source),
            other => KeySpec::Pem(other, source),
        })
    }

    /// Makes relative key paths relative to `base` (the configuration
    /// file's directory).
    pub(crate) fn resolve(&mut self, base: Option<&Path>) {
        for p in [&mut self.key_file, &mut self.jwks_file]
            .into_iter()
            .flatten()
        {
            *p = resolve_key_path(base, p);
        }
    }
}

/// Load to drive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadSpec {
    pub(crate) kind: LoadKind,
    /// Service, group, topic, or node (by kind).
    #[serde(default)]
    pub(crate) target: String,
    /// Requests per second (0: closed loop, as fast as `concurrency` allows).
    #[serde(default)]
    pub(crate) rate: f64,
    #[serde(default = "one")]
    pub(crate) concurrency: usize,
    #[serde(default = "three")]
    pub(crate) duration_s: f64,
    /// Stop after this many (0: by duration).
    #[serde(default)]
    pub(crate) count: u64,
    #[serde(default = "sixty_four")]
    pub(crate) size: usize,
    #[serde(default = "thousand")]
    pub(crate) timeout_ms: u64,
    #[serde(default)]
    pub(crate) idempotent: bool,
    /// aggregate: all | first | deadline | quorum:K
    #[serde(default)]
    pub(crate) policy: Option<String>,
    /// branch: the services run in parallel.
    #[serde(default)]
    pub(crate) services: Vec<String>,
    /// route: `[tier, service]` pairs; requests cycle over the tiers.
    #[serde(default)]
    pub(crate) routes: Vec<(String, String)>,
    /// publish: topics cycled over.
    #[serde(default)]
    pub(crate) topics: Vec<String>,
    /// event: at_least_once (default) or at_most_once.
    #[serde(default)]
    pub(crate) delivery: Option<String>,
    /// gateway: share of requests sent with a forged token.
    #[serde(default)]
    pub(crate) bad_token_rate: f64,
}

fn one() -> usize {
    1
}
fn three() -> f64 {
    3.0
}
fn sixty_four() -> usize {
    64
}
fn thousand() -> u64 {
    1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LoadKind {
    /// Socket pub/sub: the driver publishes, `subscribe` nodes receive.
    Publish,
    /// Socket pipeline: the driver pushes, `pull` nodes receive.
    Push,
    /// Socket router/dealer: the driver requests, `reply` nodes answer.
    Request,
    /// Anycast a service.
    Anycast,
    /// Unicast a service on one named node (`target` = "node/service").
    Unicast,
    /// Multicast a group.
    Multicast,
    /// Scatter-gather over every member of a service.
    Aggregate,
    /// Run `services` in parallel and combine.
    Branch,
    /// Route by tier (`routes`).
    Route,
    /// Emit events on `target` (a topic).
    Event,
    /// Call `target` through the gateway.
    Gateway,
    /// Fetch `target` (`service/env`) from the configuration service.
    Config,
    /// Rounds against the shared-data service: concurrent and retried
    /// creates of one email, reads through the caches of `services`,
    /// a versioned update and a stale one, reads until fresh.
    SharedData,
    /// Append records to the stream `target` through its host, one per
    /// call, and wait until the effect store holds each acknowledged
    /// record's effect.
    StreamAppend,
}

impl LoadKind {
    /// Its name in the file (`shared_data`).
    pub(crate) fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// A fault to inject.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    pub(crate) at_s: f64,
    pub(crate) kind: FaultKind,
    pub(crate) node: String,
    /// slow: added delay.
    #[serde(default)]
    pub(crate) delay_ms: f64,
    /// drop_invalidations: how many change events to drop (0: every one
    /// until heal).
    #[serde(default)]
    pub(crate) count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultKind {
    /// Stop the node abruptly.
    Kill,
    /// Add `delay_ms` to every handler.
    Slow,
    /// Make every handler fail.
    Fail,
    /// Undo slow, fail and drop_invalidations.
    Heal,
    /// Stop the node abruptly and start it again (same name, same data
    /// files; a new process with `--split`).
    Restart,
    /// A cache node drops the next `count` change events it receives
    /// (every one until heal, without a count).
    DropInvalidations,
}

/// A bad topology file: where and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}{at}: {message}")]
pub(crate) struct SpecError {
    pub(crate) file: String,
    pub(crate) at: String,
    pub(crate) message: String,
}

impl Spec {
    /// Reads and checks `path`.
    pub(crate) fn load(path: &Path) -> Result<Spec, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: file.clone(),
            at: String::new(),
            message: e.to_string(),
        })?;
        let mut spec = Self::parse(&file, &text)?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        for n in &mut spec.nodes {
            if let Some(g) = &mut n.gateway {
                g.resolve(base);
            }
            if let Some(d) = &mut n.config_dir {
                *d = zfabric::topology::gateway::resolve_key_path(base, d);
            }
        }
        Ok(spec)
    }

    pub(crate) fn parse(file: &str, text: &str) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    let col = s.start
                        - text[..s.start.min(text.len())]
                            .rfind('\n')
                            .map_or(0, |i| i + 1)
                        + 1;
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            SpecError {
                file: file.to_owned(),
                at,
                message: e.message().to_owned(),
            }
        })?;
        spec.check().map_err(|message| SpecError {
            file: file.to_owned(),
            at: String::new(),
            message,
        })?;
        Ok(spec)
    }

    /// Cross-field checks serde cannot do.
    fn check(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("field `node`: at least one [[node]] is needed".into());
        }
        if self.loads.is_empty() {
            return Err("field `load`: at least one [[load]] is needed".into());
        }
        let mut names = std::collections::HashSet::new();
        for n in &self.nodes {
            if n.name.is_empty() || n.name.contains('/') || !names.insert(&n.name) {
                return Err(format!(
                    "node `{}`: names must be unique, non-empty, without '/'",
                    n.name
                ));
            }
            if let Some(g) = &n.gateway {
                g.key_spec().map_err(|e| format!("node `{}` {e}", n.name))?;
            }
            for s in &n.services {
                if let Some(b) = &s.bulkhead {
                    if !n.bulkheads.iter().any(|x| &x.name == b) {
                        return Err(format!(
                            "node `{}` service `{}` field `bulkhead`: no [[node.bulkhead]] named `{b}`",
                            n.name, s.name
                        ));
                    }
                }
                if s.handler.handler == HandlerKind::Forward && s.handler.to.is_none() {
                    return Err(format!(
                        "node `{}` service `{}` field `to`: a forward handler needs `to`",
                        n.name, s.name
                    ));
                }
            }
            if let Some(st) = &n.stream {
                zfabric::stream::store::check_name(&st.name)
                    .map_err(|e| format!("node `{}` stream field `name`: {e}", n.name))?;
                st.fsync_policy()
                    .map_err(|e| format!("node `{}` {e}", n.name))?;
                if st.partitions == 0 || st.partitions > zfabric::stream::store::MAX_PARTITIONS {
                    return Err(format!(
                        "node `{}` stream field `partitions`: 1 to {}",
                        n.name,
                        zfabric::stream::store::MAX_PARTITIONS
                    ));
                }
            }
            if let Some(sc) = &n.stream_consumer {
                if sc.group.is_empty() || sc.group.contains('/') {
                    return Err(format!(
                        "node `{}` stream_consumer field `group`: not empty, no '/'",
                        n.name
                    ));
                }
                if !self.nodes.iter().any(|m| m.effect_store) {
                    return Err(format!(
                        "node `{}` stream_consumer: no node has `effect_store = true`",
                        n.name
                    ));
                }
            }
            for c in &n.consumers {
                if c.group.contains('/') {
                    return Err(format!(
                        "node `{}` consumer field `group`: no '/' allowed",
                        n.name
                    ));
                }
            }
        }
        for f in &self.faults {
            if !names.contains(&f.node) {
                return Err(format!(
                    "fault at {}s field `node`: no node named `{}`",
                    f.at_s, f.node
                ));
            }
        }
        for l in &self.loads {
            if let Some(p) = &l.policy {
                parse_policy(p).map_err(|e| format!("load field `policy`: {e}"))?;
            }
            if l.kind == LoadKind::Config && !l.target.contains('/') {
                return Err("load field `target`: config targets are `service/env`".into());
            }
            if l.kind == LoadKind::Unicast && !l.target.contains('/') {
                return Err("load field `target`: unicast targets are `node/service`".into());
            }
            if l.kind == LoadKind::Branch && l.services.is_empty() {
                return Err("load field `services`: a branch load needs services".into());
            }
            if l.kind == LoadKind::Route && l.routes.is_empty() {
                return Err("load field `routes`: a route load needs routes".into());
            }
            if l.kind == LoadKind::StreamAppend {
                if !self
                    .nodes
                    .iter()
                    .any(|n| n.stream.as_ref().is_some_and(|s| s.name == l.target))
                {
                    return Err(format!(
                        "load kind `stream_append`: no node hosts a stream named `{}`",
                        l.target
                    ));
                }
                if !self.nodes.iter().any(|n| n.effect_store) {
                    return Err(
                        "load kind `stream_append`: no node has `effect_store = true`".into(),
                    );
                }
            }
            if l.kind == LoadKind::SharedData {
                if !self.nodes.iter().any(|n| n.data_service) {
                    return Err("load kind `shared_data`: no node has `data_service = true`".into());
                }
                for svc in &l.services {
                    if !self
                        .nodes
                        .iter()
                        .any(|n| n.customer_cache.as_ref().is_some_and(|c| &c.service == svc))
                    {
                        return Err(format!(
                            "load field `services`: no node has a customer_cache serving `{svc}`"
                        ));
                    }
                }
            }
            if l.concurrency == 0 {
                return Err("load field `concurrency`: must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// An aggregate policy by name.
pub(crate) fn parse_policy(p: &str) -> Result<zfabric::topology::Completion, String> {
    use zfabric::topology::Completion;
    Ok(match p {
        "all" => Completion::All,
        "first" => Completion::FirstSuccess,
        "deadline" => Completion::ByDeadline,
        q => match q.strip_prefix("quorum:").and_then(|k| k.parse().ok()) {
            Some(k) => Completion::Quorum(k),
            None => {
                return Err(format!(
                    "unknown policy `{q}` (all, first, deadline, quorum:K)"
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_field_is_reported_with_its_line() {
        let text = "name = \"x\"\nsummary = \"y\"\n[[node]]\nname = \"a\"\nservcie = []\n";
        let e = Spec::parse("f.toml", text).unwrap_err();
        assert_eq!(e.at, ":5:1", "{e}");
        assert!(e.message.contains("servcie"), "{e}");
    }

    #[test]
    fn a_missing_bulkhead_is_named() {
        let text = r#"
name = "x"
summary = "y"
[[node]]
name = "a"
[[node.service]]
name = "s"
handler = "echo"
bulkhead = "nope"
[[load]]
kind = "anycast"
target = "s"
"#;
        let e = Spec::parse("f.toml", text).unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
    }

    #[test]
    fn a_shared_data_load_needs_a_data_service_and_its_caches() {
        let file = |nodes: &str, services: &str| {
            format!(
                "name = \"x\"\nsummary = \"y\"\n{nodes}\n[[load]]\nkind = \"shared_data\"\nservices = [{services}]\n"
            )
        };
        let db = "[[node]]\nname = \"db\"\ndata_service = true\n";
        let cache =
            "[[node]]\nname = \"o\"\ncustomer_cache = { service = \"o.c\", ttl_ms = 100 }\n";
        let e = Spec::parse("f.toml", &file(cache, "\"o.c\"")).unwrap_err();
        assert!(e.message.contains("data_service"), "{e}");
        let e = Spec::parse("f.toml", &file(&format!("{db}{cache}"), "\"b.c\"")).unwrap_err();
        assert!(e.message.contains("`b.c`"), "{e}");
        let s = Spec::parse("f.toml", &file(&format!("{db}{cache}"), "\"o.c\"")).unwrap();
        let c = s.nodes[1].customer_cache.as_ref().unwrap();
        assert_eq!((c.capacity, c.ttl_ms), (1024, 100));
        assert_eq!(s.loads[0].kind.name(), "shared_data");
        let f = "name = \"x\"\nsummary = \"y\"\n[[node]]\nname = \"a\"\n[[load]]\nkind = \"anycast\"\ntarget = \"s\"\n[[fault]]\nat_s = 1\nkind = \"drop_invalidations\"\nnode = \"a\"\ncount = 3\n";
        let s = Spec::parse("f.toml", f).unwrap();
        assert_eq!(
            (s.faults[0].kind, s.faults[0].count),
            (FaultKind::DropInvalidations, 3)
        );
    }

    #[test]
    fn a_stream_append_load_needs_its_host_and_an_effect_store_and_a_stream_is_checked() {
        let file = |nodes: &str| {
            format!(
                "name = \"x\"\nsummary = \"y\"\n{nodes}\n[[load]]\nkind = \"stream_append\"\ntarget = \"orders\"\n"
            )
        };
        let host = "[[node]]\nname = \"p\"\nstream = { name = \"orders\", partitions = 2 }\n";
        let fx = "[[node]]\nname = \"fx\"\neffect_store = true\n";
        let member =
            "[[node]]\nname = \"c\"\nstream_consumer = { stream = \"orders\", group = \"g\" }\n";
        let e = Spec::parse("f.toml", &file(fx)).unwrap_err();
        assert!(
            e.message.contains("no node hosts a stream named `orders`"),
            "{e}"
        );
        let e = Spec::parse("f.toml", &file(host)).unwrap_err();
        assert!(e.message.contains("effect_store"), "{e}");
        let e = Spec::parse("f.toml", &file(&format!("{host}{member}"))).unwrap_err();
        assert!(e.message.contains("effect_store"), "{e}");
        let s = Spec::parse("f.toml", &file(&format!("{host}{fx}{member}"))).unwrap();
        let st = s.nodes[0].stream.as_ref().unwrap();
        assert_eq!((st.partitions, st.lease_ms), (2, 3000));
        assert!(matches!(
            st.fsync_policy(),
            Ok(zfabric::stream::FsyncPolicy::Always)
        ));
        assert_eq!(s.loads[0].kind.name(), "stream_append");
        for (bad, says) in [
            ("name = \"or/ders\"", "field `name`"),
            ("name = \"orders\", fsync = \"sometimes\"", "field `fsync`"),
            ("name = \"orders\", partitions = 0", "field `partitions`"),
        ] {
            let nodes = format!("[[node]]\nname = \"p\"\nstream = {{ {bad} }}\n{fx}");
            let e = Spec::parse("f.toml", &file(&nodes)).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
        }
        let g =
            "[[node]]\nname = \"c\"\nstream_consumer = { stream = \"orders\", group = \"a/b\" }\n";
        let e = Spec::parse("f.toml", &file(&format!("{host}{fx}{g}"))).unwrap_err();
        assert!(e.message.contains("field `group`"), "{e}");
    }

    fn gateway(line: &str) -> Result<Spec, SpecError> {
        let text = format!(
            "name = \"x\"\nsummary = \"y\"\n[[node]]\nname = \"a\"\ngateway = {{ expose = [\"s\"], {line} }}\n[[load]]\nkind = \"gateway\"\ntarget = \"s\"\n"
        );
        Spec::parse("f.toml", &text)
    }

    #[test]
    fn an_inline_gateway_key_is_refused_and_a_file_or_variable_is_taken() {
        let e = gateway("key = \"hunter2\"").unwrap_err();
        assert!(e.message.contains("do not belong"), "{e}");
        assert!(!e.message.contains("hunter2"), "the key is not echoed: {e}");
        let e = gateway("key_file = \"a\", key_env = \"B\"").unwrap_err();
        assert!(e.message.contains("exactly one"), "{e}");
        let e = gateway("key_file = \"a\", algorithm = \"PS512\"").unwrap_err();
        assert!(e.message.contains("algorithm"), "{e}");
        let e = gateway("jwks_file = \"k.json\", algorithm = \"RS256\"").unwrap_err();
        assert!(e.message.contains("JWKS"), "{e}");
        let s = gateway("key_file = \"gw.key\"").unwrap();
        let mut g = s.nodes[0].gateway.clone().unwrap();
        g.resolve(Some(Path::new("/etc/zf")));
        assert_eq!(
            g.key_spec().unwrap(),
            KeySpec::Hs256(KeySource::File("/etc/zf/gw.key".into()))
        );
        let s = gateway("key_env = \"GW\", algorithm = \"es256\"").unwrap();
        assert_eq!(
            s.nodes[0].gateway.as_ref().unwrap().key_spec().unwrap(),
            KeySpec::Pem(JwtAlgorithm::ES256, KeySource::Env("GW".into()))
        );
    }
}

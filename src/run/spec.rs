//! The topology file: what `zfabric run` reads.
//!
//! A file describes the nodes (their services, handlers, bulkheads,
//! consumers, groups, socket roles, gateway), the load to drive, the faults
//! to inject and what the run must show. Unknown fields are errors, so a
//! typo is caught with its line rather than silently ignored.

use std::path::Path;

use serde::Deserialize;

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
    /// HS256 key for bearer tokens.
    pub(crate) key: String,
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
    /// Undo slow and fail.
    Heal,
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
        Self::parse(&file, &text)
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
            if l.kind == LoadKind::Unicast && !l.target.contains('/') {
                return Err("load field `target`: unicast targets are `node/service`".into());
            }
            if l.kind == LoadKind::Branch && l.services.is_empty() {
                return Err("load field `services`: a branch load needs services".into());
            }
            if l.kind == LoadKind::Route && l.routes.is_empty() {
                return Err("load field `routes`: a route load needs routes".into());
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
}

//! `zfabric node`'s configuration: the file, the environment and the
//! flags, layered per key.
//!
//! Every key of the node file (docs/NODE.md) can also come from the
//! environment (`ZFABRIC_…`, the names in [`KEYS`]) and from the command
//! line (`--set KEY=VALUE` for any key; `--name`, `--bind`, `--advertise`,
//! `--seed`, `--metrics` and the `--curve-*` flags for the common ones).
//! Precedence, per key: **flag > env > file > default**. A list given in a
//! layer replaces the list below it (it is not appended). Lists in the
//! environment are comma-separated; tables (`service`, `bulkhead`,
//! `consumer`) are TOML inline arrays (`[{name = "quote", handler =
//! "echo"}]`). Paths in the file are relative to the file, paths from the
//! environment and flags to the working directory.
//!
//! Guarantees: the layers are merged and checked as one configuration
//! before anything is opened; an error names where the bad value came
//! from (file and line, variable, or flag); the effective configuration
//! can be printed with the source of every key ([`Layered::render`]).
//! Secrets are taken by file path only: an inline key (`gateway.key`) or a
//! key in a variable (`gateway.key_env`) is refused. Does not: load key
//! files (the caller does), or watch any layer for changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use crate::app::UsageError;
use crate::run::spec::{BulkheadSpec, ConsumerSpec, ServiceSpec};

/// How a key's value is written in the environment or on a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string, as given.
    Str,
    /// A path: relative to the file when it comes from the file.
    Path,
    /// A CURVE key (40 characters of Z85) or a path to a file of them.
    KeyOrPath,
    /// An integer.
    Int,
    /// A list of strings, comma-separated.
    List,
    /// An array of tables, as a TOML inline array.
    Tables,
}

/// One key of the node configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    /// Its path in the file (`gateway.key_file`).
    pub(crate) path: &'static str,
    /// Its environment variable.
    pub(crate) env: &'static str,
    kind: Kind,
}

const fn key(path: &'static str, env: &'static str, kind: Kind) -> Key {
    Key { path, env, kind }
}

/// Every key, with its variable (docs/NODE.md lists the same).
pub(crate) const KEYS: &[Key] = &[
    key("name", "ZFABRIC_NAME", Kind::Str),
    key("bind", "ZFABRIC_BIND", Kind::List),
    key("advertise", "ZFABRIC_ADVERTISE", Kind::List),
    key("seeds", "ZFABRIC_SEEDS", Kind::List),
    key("metrics", "ZFABRIC_METRICS", Kind::Str),
    key("beacon_port", "ZFABRIC_BEACON_PORT", Kind::Int),
    key("beacon_key_file", "ZFABRIC_BEACON_KEY_FILE", Kind::Path),
    key("groups", "ZFABRIC_GROUPS", Kind::List),
    key("config_dir", "ZFABRIC_CONFIG_DIR", Kind::Path),
    key(
        "membership.heartbeat_ms",
        "ZFABRIC_MEMBERSHIP_HEARTBEAT_MS",
        Kind::Int,
    ),
    key(
        "membership.suspect_after_ms",
        "ZFABRIC_MEMBERSHIP_SUSPECT_AFTER_MS",
        Kind::Int,
    ),
    key(
        "membership.gone_after_ms",
        "ZFABRIC_MEMBERSHIP_GONE_AFTER_MS",
        Kind::Int,
    ),
    key("service", "ZFABRIC_SERVICE", Kind::Tables),
    key("bulkhead", "ZFABRIC_BULKHEAD", Kind::Tables),
    key("consumer", "ZFABRIC_CONSUMER", Kind::Tables),
    key(
        "security.curve_secret_file",
        "ZFABRIC_CURVE_SECRET_FILE",
        Kind::Path,
    ),
    key(
        "security.curve_server",
        "ZFABRIC_CURVE_SERVER",
        Kind::KeyOrPath,
    ),
    key(
        "security.curve_authorized_file",
        "ZFABRIC_CURVE_AUTHORIZED_FILE",
        Kind::Path,
    ),
    key("gateway.bind", "ZFABRIC_GATEWAY_BIND", Kind::Str),
    key("gateway.expose", "ZFABRIC_GATEWAY_EXPOSE", Kind::List),
    key("gateway.key_file", "ZFABRIC_GATEWAY_KEY_FILE", Kind::Path),
    key("gateway.jwks_file", "ZFABRIC_GATEWAY_JWKS_FILE", Kind::Path),
    key("gateway.algorithm", "ZFABRIC_GATEWAY_ALGORITHM", Kind::Str),
];

/// Variables zfabric reads that are not node keys (never reported as
/// unknown).
const OTHER_VARS: &[&str] = &["ZFABRIC_LOG", "ZFABRIC_LOG_FORMAT", "ZFABRIC_REQUIRE_ALL"];

/// Where a key's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The configuration file.
    File,
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(String),
    /// Not given: the default.
    Default(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File => f.write_str("file"),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Default(what) => write!(f, "default: {what}"),
        }
    }
}

/// The node configuration, as the program uses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeFile {
    /// The node's name (default: the host name, so replicas differ).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Endpoints to listen on.
    #[serde(default)]
    pub(crate) bind: Vec<String>,
    /// Endpoints peers are told to reach this node by (default: the bound
    /// ones, a wildcard host replaced by this host's address).
    #[serde(default)]
    pub(crate) advertise: Vec<String>,
    /// Endpoints of other nodes (host names allowed: every address they
    /// resolve to is a seed).
    #[serde(default)]
    pub(crate) seeds: Vec<String>,
    /// Serve `/metrics`, `/healthz`, `/readyz` on this HOST:PORT.
    #[serde(default)]
    pub(crate) metrics: Option<String>,
    /// UDP port for LAN discovery by broadcast beacon.
    #[serde(default)]
    pub(crate) beacon_port: Option<u16>,
    /// A file holding the fabric key beacons are authenticated with.
    #[serde(default)]
    pub(crate) beacon_key_file: Option<PathBuf>,
    #[serde(default, rename = "service")]
    pub(crate) services: Vec<ServiceSpec>,
    #[serde(default, rename = "bulkhead")]
    pub(crate) bulkheads: Vec<BulkheadSpec>,
    #[serde(default, rename = "consumer")]
    pub(crate) consumers: Vec<ConsumerSpec>,
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    /// Serve the configuration service from this directory.
    #[serde(default)]
    pub(crate) config_dir: Option<PathBuf>,
    /// Failure-detection timings (every node of a fabric should agree).
    #[serde(default)]
    pub(crate) membership: Option<MembershipFile>,
    #[serde(default)]
    pub(crate) gateway: Option<GatewayFile>,
    /// CURVE: our key pair, the seeds' server keys, the allow-list.
    #[serde(default)]
    pub(crate) security: Option<super::security::SecurityFile>,
}

/// The `[membership]` table: failure-detection timings, in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembershipFile {
    /// How often hellos go to every member and seed (default 500).
    #[serde(default)]
    pub(crate) heartbeat_ms: Option<u64>,
    /// Silence after which a member is suspect (default 1,500).
    #[serde(default)]
    pub(crate) suspect_after_ms: Option<u64>,
    /// Silence after which a member is gone (default 2,500).
    #[serde(default)]
    pub(crate) gone_after_ms: Option<u64>,
}

impl MembershipFile {
    /// The timings, defaults filled in; heartbeat < suspect < gone, or
    /// an error naming the keys.
    pub(crate) fn config(&self) -> Result<zfabric::node::MembershipConfig, String> {
        let d = zfabric::node::MembershipConfig::default();
        let ms = |v: Option<u64>, d: std::time::Duration| {
            v.map(std::time::Duration::from_millis).unwrap_or(d)
        };
        let c = zfabric::node::MembershipConfig {
            heartbeat_interval: ms(self.heartbeat_ms, d.heartbeat_interval),
            suspect_after: ms(self.suspect_after_ms, d.suspect_after),
            gone_after: ms(self.gone_after_ms, d.gone_after),
            ..d
        };
        if c.heartbeat_interval.is_zero()
            || c.suspect_after <= c.heartbeat_interval
            || c.gone_after <= c.suspect_after
        {
            return Err(format!(
                "`membership`: need 0 < heartbeat_ms < suspect_after_ms < gone_after_ms, got {} < {} < {}",
                c.heartbeat_interval.as_millis(),
                c.suspect_after.as_millis(),
                c.gone_after.as_millis()
            ));
        }
        Ok(c)
    }
}

/// The `[gateway]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayFile {
    pub(crate) bind: String,
    pub(crate) expose: Vec<String>,
    /// Refused: keys do not belong in configuration.
    #[serde(default)]
    pub(crate) key: Option<crate::run::spec::toml_value::Ignored>,
    /// Refused for a node: secrets come from files only.
    #[serde(default)]
    pub(crate) key_env: Option<crate::run::spec::toml_value::Ignored>,
    #[serde(default)]
    pub(crate) key_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) algorithm: Option<String>,
}

/// The three layers merged, with the source of every key set.
#[derive(Debug, Clone)]
pub(crate) struct Layered {
    /// The merged configuration, as TOML.
    pub(crate) table: Table,
    /// Where each key set came from (by path).
    pub(crate) sources: BTreeMap<String, Source>,
    /// `ZFABRIC_*` variables that are not zfabric's (a typo, most often).
    pub(crate) unknown_vars: Vec<String>,
    /// The file, if one was given (for messages).
    pub(crate) file: Option<String>,
}

/// One value given on the command line: the key, its text and the flag
/// that carried it (for messages).
#[derive(Debug, Clone)]
pub(crate) struct FlagValue {
    pub(crate) path: &'static str,
    pub(crate) value: String,
    pub(crate) flag: String,
}

/// Parses a `--set KEY=VALUE` into a [`FlagValue`].
pub(crate) fn parse_set(s: &str) -> Result<FlagValue, UsageError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| UsageError(format!("--set {s:?}: expected KEY=VALUE")))?;
    let k = k.trim();
    let key = KEYS.iter().find(|x| x.path == k).ok_or_else(|| {
        let known: Vec<&str> = KEYS.iter().map(|x| x.path).collect();
        UsageError(format!(
            "--set {k}: no such key; the keys are {}",
            known.join(", ")
        ))
    })?;
    Ok(FlagValue {
        path: key.path,
        value: v.to_string(),
        flag: format!("--set {k}"),
    })
}

/// `text` as the value of `key`, for a value from `from` (a variable or
/// a flag, for messages).
fn value_of(key: &Key, text: &str, from: &str) -> Result<Value, UsageError> {
    let bad = |why: String| UsageError(format!("{from} (key `{}`): {why}", key.path));
    Ok(match key.kind {
        Kind::Str | Kind::Path | Kind::KeyOrPath => Value::String(text.trim().to_string()),
        Kind::Int => Value::Integer(
            text.trim()
                .parse::<i64>()
                .map_err(|_| bad(format!("{text:?} is not a whole number")))?,
        ),
        Kind::List => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Tables => {
            let doc: Table = toml::from_str(&format!("v = {text}")).map_err(|e| {
                bad(format!(
                    "not a TOML inline array of tables ({}); e.g. [{{name = \"quote\", handler = \"echo\"}}]",
                    e.message()
                ))
            })?;
            match doc.get("v") {
                Some(v @ Value::Array(items)) if items.iter().all(Value::is_table) => v.clone(),
                _ => return Err(bad("expected an array of tables: [{…}, {…}]".into())),
            }
        }
    })
}

/// Reads `path` in `table` (`a.b`).
fn get<'a>(table: &'a Table, path: &str) -> Option<&'a Value> {
    match path.split_once('.') {
        Some((head, rest)) => get(table.get(head)?.as_table()?, rest),
        None => table.get(path),
    }
}

/// Sets `path` in `table`, making the tables on the way.
fn set(table: &mut Table, path: &str, value: Value) -> Result<(), UsageError> {
    match path.split_once('.') {
        Some((head, rest)) => {
            let inner = table
                .entry(head)
                .or_insert_with(|| Value::Table(Table::new()));
            match inner {
                Value::Table(t) => set(t, rest, value),
                _ => Err(UsageError(format!("`{head}` is not a table"))),
            }
        }
        None => {
            table.insert(path.to_string(), value);
            Ok(())
        }
    }
}

/// The line of byte offset `at` in `text`, as `:N`.
fn line_of(text: &str, at: Option<std::ops::Range<usize>>) -> String {
    at.map(|s| {
        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
        format!(":{line}")
    })
    .unwrap_or_default()
}

/// Merges the file (`path` and its text, if any), the environment (read
/// through `env`; `vars` lists the names set, for the unknown-variable
/// check) and the flags. Checks the file alone first (unknown fields and
/// types, with its line), then the merged result.
pub(crate) fn layer(
    file: Option<(&Path, &str)>,
    env: &dyn Fn(&str) -> Option<String>,
    vars: &[String],
    flags: &[FlagValue],
) -> Result<Layered, UsageError> {
    let mut table = Table::new();
    let mut sources = BTreeMap::new();
    let name = file.map(|(p, _)| p.display().to_string());
    if let Some((path, text)) = file {
        let shown = path.display();
        // The file on its own: errors carry its line.
        if let Err(e) = toml::from_str::<NodeFile>(text) {
            return Err(UsageError(format!(
                "{shown}{}: {}",
                line_of(text, e.span()),
                e.message()
            )));
        }
        table = toml::from_str(text).map_err(|e| UsageError(format!("{shown}: {e}")))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        for k in KEYS {
            let Some(v) = get(&table, k.path).cloned() else {
                continue;
            };
            sources.insert(k.path.to_string(), Source::File);
            let relative = match (&v, k.kind) {
                (Value::String(s), Kind::Path) => Some(s.clone()),
                (Value::String(s), Kind::KeyOrPath)
                    if s.parse::<zfabric::CurvePublicKey>().is_err() =>
                {
                    Some(s.clone())
                }
                _ => None,
            };
            if let Some(s) = relative {
                let p = zfabric::topology::gateway::resolve_key_path(base, Path::new(&s));
                set(&mut table, k.path, Value::String(p.display().to_string()))?;
            }
        }
    }
    for k in KEYS {
        if let Some(text) = env(k.env).filter(|t| !t.trim().is_empty()) {
            set(&mut table, k.path, value_of(k, &text, k.env)?)?;
            sources.insert(k.path.to_string(), Source::Env(k.env));
        }
    }
    for f in flags {
        let k = KEYS
            .iter()
            .find(|k| k.path == f.path)
            .ok_or_else(|| UsageError(format!("{}: no such key", f.flag)))?;
        set(&mut table, k.path, value_of(k, &f.value, &f.flag)?)?;
        sources.insert(k.path.to_string(), Source::Flag(f.flag.clone()));
    }
    let mut unknown_vars: Vec<String> = vars
        .iter()
        .filter(|v| v.starts_with("ZFABRIC_"))
        .filter(|v| !KEYS.iter().any(|k| k.env == v.as_str()))
        .filter(|v| !OTHER_VARS.contains(&v.as_str()) && !v.starts_with("ZFABRIC_TEST_"))
        .cloned()
        .collect();
    unknown_vars.sort();
    Ok(Layered {
        table,
        sources,
        unknown_vars,
        file: name,
    })
}

impl Layered {
    /// The merged configuration, typed; an error says which layers set
    /// the keys involved.
    pub(crate) fn config(&self) -> Result<NodeFile, UsageError> {
        let cfg: NodeFile =
            Value::Table(self.table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let from: Vec<String> = self
                        .sources
                        .iter()
                        .filter(|(_, s)| !matches!(s, Source::File))
                        .map(|(k, s)| format!("{k} from {s}"))
                        .collect();
                    let layers = if from.is_empty() {
                        String::new()
                    } else {
                        format!(" (set outside the file: {})", from.join(", "))
                    };
                    UsageError(format!("{}: {}{layers}", self.where_(), e.message()))
                })?;
        if let Some(g) = &cfg.gateway {
            if g.key.is_some() {
                return Err(UsageError(format!(
                    "{}: gateway field `key`: keys do not belong in configuration; put the key \
                     in a file and give its path in `key_file` (or a JWKS document in `jwks_file`)",
                    self.where_()
                )));
            }
            if g.key_env.is_some() {
                return Err(UsageError(format!(
                    "{}: gateway field `key_env`: a node takes secrets from files only; mount \
                     the key as a file and give its path in `key_file` (ZFABRIC_GATEWAY_KEY_FILE)",
                    self.where_()
                )));
            }
        }
        if cfg.bind.is_empty() {
            return Err(UsageError(format!(
                "{}: no endpoint to listen on: give `bind` in the file, ZFABRIC_BIND or --bind",
                self.where_()
            )));
        }
        Ok(cfg)
    }

    /// The file's name, or "the configuration" without one.
    pub(crate) fn where_(&self) -> String {
        self.file
            .clone()
            .unwrap_or_else(|| "the configuration (env and flags)".into())
    }

    /// Records a default the program chose for `path`.
    pub(crate) fn default(&mut self, path: &str, value: Value, what: &'static str) {
        if get(&self.table, path).is_none() {
            let _ = set(&mut self.table, path, value);
            self.sources.insert(path.to_string(), Source::Default(what));
        }
    }

    /// The effective configuration as TOML, then the source of every key
    /// (file, env, flag, default). Holds no key material: secrets are
    /// paths, and a CURVE server key is a public key.
    pub(crate) fn render(&self) -> String {
        let mut out = String::from("# effective configuration (flag > env > file > default)\n");
        out.push_str(&toml::to_string(&self.table).unwrap_or_else(|e| format!("# ({e})\n")));
        out.push_str("\n# where each key came from\n");
        for (k, s) in &self.sources {
            let s = match s {
                Source::File => format!("file {}", self.where_()),
                other => other.to_string(),
            };
            out.push_str(&format!("#   {k}: {s}\n"));
        }
        for v in &self.unknown_vars {
            out.push_str(&format!(
                "# warning: {v} is set but is no zfabric variable (ignored)\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> (impl Fn(&str) -> Option<String>, Vec<String>) {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names = m.keys().cloned().collect();
        (move |k: &str| m.get(k).cloned(), names)
    }

    const FILE: &str = r#"
name = "from-file"
bind = ["tcp://0.0.0.0:7000"]
seeds = ["tcp://seed-a:7000", "tcp://seed-b:7000"]
beacon_key_file = "fabric.key"

[security]
curve_secret_file = "node.key"
curve_server = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"

[[service]]
name = "quote"
handler = "echo"
"#;

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file() {
        let (e, vars) = env(&[
            ("ZFABRIC_NAME", "from-env"),
            ("ZFABRIC_SEEDS", "tcp://env-seed:7000, tcp://other:7000"),
            ("ZFABRIC_BIND", "tcp://0.0.0.0:7100"),
        ]);
        let flags = [FlagValue {
            path: "name",
            value: "from-flag".into(),
            flag: "--name".into(),
        }];
        let l = layer(
            Some((Path::new("/etc/zf/node.toml"), FILE)),
            &e,
            &vars,
            &flags,
        )
        .unwrap();
        let c = l.config().unwrap();
        assert_eq!(c.name.as_deref(), Some("from-flag"));
        // A list from a layer replaces the list below it.
        assert_eq!(c.seeds, ["tcp://env-seed:7000", "tcp://other:7000"]);
        assert_eq!(c.bind, ["tcp://0.0.0.0:7100"]);
        assert_eq!(l.sources["name"], Source::Flag("--name".into()));
        assert_eq!(l.sources["seeds"], Source::Env("ZFABRIC_SEEDS"));
        assert_eq!(l.sources["service"], Source::File);
        assert_eq!(c.services.len(), 1);
    }

    #[test]
    fn file_paths_are_relative_to_the_file_and_env_paths_are_not() {
        let (e, vars) = env(&[("ZFABRIC_CURVE_AUTHORIZED_FILE", "keys/allowed")]);
        let l = layer(Some((Path::new("/etc/zf/node.toml"), FILE)), &e, &vars, &[]).unwrap();
        let c = l.config().unwrap();
        assert_eq!(
            c.beacon_key_file.as_deref(),
            Some(Path::new("/etc/zf/fabric.key"))
        );
        let toml = l.render();
        assert!(
            toml.contains("curve_secret_file = \"/etc/zf/node.key\""),
            "{toml}"
        );
        // A Z85 key stays a key.
        assert!(toml.contains("curve_server = \"rq:rM>"), "{toml}");
        assert!(
            toml.contains("curve_authorized_file = \"keys/allowed\""),
            "{toml}"
        );
        assert!(
            toml.contains("security.curve_authorized_file: env ZFABRIC_CURVE_AUTHORIZED_FILE"),
            "{toml}"
        );
    }

    #[test]
    fn a_node_can_be_configured_from_the_environment_alone() {
        let (e, vars) = env(&[
            ("ZFABRIC_BIND", "tcp://0.0.0.0:7000"),
            ("ZFABRIC_ADVERTISE", "tcp://10.0.0.5:7000"),
            (
                "ZFABRIC_SERVICE",
                r#"[{name = "quote", handler = "echo"}, {name = "slow", handler = "delay", delay_ms = 5}]"#,
            ),
            ("ZFABRIC_BEACON_PORT", "7400"),
            ("ZFABRIC_GATEWAY_BIND", "tcp://0.0.0.0:8080"),
            ("ZFABRIC_GATEWAY_EXPOSE", "quote"),
            ("ZFABRIC_GATEWAY_KEY_FILE", "/run/secrets/jwt"),
        ]);
        let c = layer(None, &e, &vars, &[]).unwrap().config().unwrap();
        assert_eq!(c.name, None);
        assert_eq!(c.advertise, ["tcp://10.0.0.5:7000"]);
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.beacon_port, Some(7400));
        let g = c.gateway.unwrap();
        assert_eq!(g.expose, ["quote"]);
        assert_eq!(g.key_file.as_deref(), Some(Path::new("/run/secrets/jwt")));
    }

    #[test]
    fn bad_values_name_where_they_came_from() {
        let (e, vars) = env(&[("ZFABRIC_BEACON_PORT", "seventy")]);
        let err = layer(Some((Path::new("n.toml"), FILE)), &e, &vars, &[]).unwrap_err();
        assert!(err.0.contains("ZFABRIC_BEACON_PORT"), "{}", err.0);
        let (e, vars) = env(&[("ZFABRIC_SERVICE", "quote")]);
        let err = layer(Some((Path::new("n.toml"), FILE)), &e, &vars, &[]).unwrap_err();
        assert!(err.0.contains("ZFABRIC_SERVICE"), "{}", err.0);
        // Out of range for a port: found once merged, with the layer named.
        let (e, vars) = env(&[("ZFABRIC_BEACON_PORT", "70000")]);
        let err = layer(Some((Path::new("n.toml"), FILE)), &e, &vars, &[])
            .unwrap()
            .config()
            .unwrap_err();
        assert!(
            err.0.contains("beacon_port from env ZFABRIC_BEACON_PORT"),
            "{}",
            err.0
        );
        // The file's own errors carry its line.
        let (e, vars) = env(&[]);
        let err = layer(
            Some((Path::new("n.toml"), "name = \"a\"\nbindd = []\n")),
            &e,
            &vars,
            &[],
        )
        .unwrap_err();
        assert!(err.0.starts_with("n.toml:2:"), "{}", err.0);
        assert!(parse_set("nope=1").unwrap_err().0.contains("no such key"));
        assert!(parse_set("name").is_err());
    }

    #[test]
    fn inline_secrets_and_secrets_in_variables_are_refused() {
        let (e, vars) = env(&[]);
        for field in ["key = \"hunter2\"", "key_env = \"JWT\""] {
            let text = format!(
                "bind = [\"tcp://0.0.0.0:1\"]\n[gateway]\nbind = \"tcp://0.0.0.0:2\"\nexpose = [\"a\"]\n{field}\n"
            );
            let err = layer(Some((Path::new("n.toml"), &text)), &e, &vars, &[])
                .unwrap()
                .config()
                .unwrap_err();
            assert!(err.0.contains("key_file"), "{}", err.0);
            assert!(!err.0.contains("hunter2"), "{}", err.0);
        }
    }

    #[test]
    fn membership_timings_come_from_any_layer_and_must_be_ordered() {
        let (e, vars) = env(&[("ZFABRIC_MEMBERSHIP_GONE_AFTER_MS", "5000")]);
        let text = "bind = [\"tcp://0.0.0.0:1\"]\n[membership]\nheartbeat_ms = 200\n";
        let c = layer(Some((Path::new("n.toml"), text)), &e, &vars, &[])
            .unwrap()
            .config()
            .unwrap();
        let m = c.membership.unwrap().config().unwrap();
        assert_eq!(m.heartbeat_interval.as_millis(), 200);
        assert_eq!(m.suspect_after.as_millis(), 1500);
        assert_eq!(m.gone_after.as_millis(), 5000);
        let bad = MembershipFile {
            heartbeat_ms: Some(2000),
            suspect_after_ms: None,
            gone_after_ms: None,
        };
        assert!(bad.config().unwrap_err().contains("heartbeat_ms"));
    }

    #[test]
    fn no_bind_anywhere_is_an_error_and_typos_in_variables_are_reported() {
        let (e, vars) = env(&[("ZFABRIC_SEED", "tcp://a:1"), ("ZFABRIC_LOG", "info")]);
        let l = layer(None, &e, &vars, &[]).unwrap();
        assert_eq!(l.unknown_vars, ["ZFABRIC_SEED"]);
        assert!(l.config().unwrap_err().0.contains("ZFABRIC_BIND"));
        assert!(l.render().contains("ZFABRIC_SEED is set but"));
    }

    #[test]
    fn every_key_has_its_own_variable_and_is_a_field_of_the_file() {
        let mut envs: Vec<&str> = KEYS.iter().map(|k| k.env).collect();
        envs.sort();
        envs.dedup();
        assert_eq!(envs.len(), KEYS.len());
        let docs = include_str!("../../docs/NODE.md");
        for k in KEYS {
            assert!(docs.contains(k.env), "docs/NODE.md does not list {}", k.env);
            assert!(
                docs.contains(&format!("`{}`", k.path)),
                "docs/NODE.md does not list `{}`",
                k.path
            );
        }
    }
}

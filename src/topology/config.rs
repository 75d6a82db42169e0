//! The configuration service: externalised configuration served by the
//! fabric itself.
//!
//! A node serves the documents of a directory as the service `config`
//! ([`serve`]); any node fetches one by key ([`fetch`]) and hears of new
//! versions over fabric pub/sub ([`watch`]). A document is keyed by the
//! service it configures, its type (the file extension: `toml`, `json`,
//! …), its environment and its version, laid out as
//! `DIR/<service>/<environment>/<version>.<type>`, e.g.
//! `configs/quote/prod/3.toml`. Versions are whole numbers; a key without
//! a version asks for the highest.
//!
//! Guarantees: a fetch answers with the document's bytes as they were on
//! disk when it was read, and its full key (with the version), or a typed
//! error: `not_found` (no such service, environment, type or version),
//! `bad_request` (a key with path separators or `..`: nothing outside the
//! directory is ever read). [`publish_changes`] scans the directory every
//! period and, for every (service, environment, type) whose highest
//! version changed, publishes the new document on
//! `config.<service>.<environment>` (at most once per change, to every
//! subscriber the publisher knows at that moment; a subscriber that
//! misses it sees the version on its next [`fetch`]). Does not: store
//! history beyond the files, authenticate callers (CURVE on the fabric
//! does that), merge or template documents, or apply them: what a node
//! does with a new version is its own choice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::node::{CallError, Node, NodeSubscription};
use crate::wire::RemoteError;

/// The service name the documents are served under.
pub const SERVICE: &str = "config";

/// The prefix of the topics updates are published on
/// (`config.<service>.<environment>`).
pub const TOPIC_PREFIX: &str = "config.";

/// The remote error code of a key with no document.
pub const NOT_FOUND: &str = "not_found";

/// Which document: service, type, environment and (optionally) version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigKey {
    /// The service the document configures.
    pub service: String,
    /// Its type: the file extension (`toml`, `json`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The environment (`prod`, `staging`, …).
    pub env: String,
    /// The version; `None`: the highest there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl ConfigKey {
    /// The highest version of `service`'s `kind` document in `env`.
    pub fn latest(service: &str, kind: &str, env: &str) -> Self {
        ConfigKey {
            service: service.into(),
            kind: kind.into(),
            env: env.into(),
            version: None,
        }
    }

    /// The topic its updates are published on.
    pub fn topic(&self) -> String {
        topic(&self.service, &self.env)
    }
}

/// The topic updates of `service` in `env` are published on.
pub fn topic(service: &str, env: &str) -> String {
    format!("{TOPIC_PREFIX}{service}.{env}")
}

/// A document and its full key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDocument {
    /// The service it configures.
    pub service: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its environment.
    pub env: String,
    /// Its version.
    pub version: u64,
    /// The document, as the file holds it.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Why a document could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No document for that key.
    #[error("no configuration document {0}")]
    NotFound(String),
    /// A key naming something outside the directory (a path separator,
    /// `..`, an empty part).
    #[error("bad configuration key: {0}")]
    BadKey(String),
    /// The directory or a file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The call to the `config` service failed (no member, timeout, …).
    #[error(transparent)]
    Call(#[from] CallError),
}

/// The documents of one directory.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    dir: PathBuf,
}

/// One part of a key: a plain name (letters, digits, `-`, `_`, `.` but
/// not only dots), so that no key names a path outside the directory.
fn part_ok(s: &str) -> bool {
    !s.is_empty()
        && !s.chars().all(|c| c == '.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn describe(key: &ConfigKey) -> String {
    match key.version {
        Some(v) => format!("{}/{}/{v}.{}", key.service, key.env, key.kind),
        None => format!("{}/{}/<latest>.{}", key.service, key.env, key.kind),
    }
}

impl ConfigStore {
    /// The documents under `dir` (read at each request: a new file is
    /// served at once).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfigStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The versions of `service`'s `kind` documents in `env`.
    fn versions(&self, service: &str, env: &str, kind: &str) -> Result<Vec<u64>, ConfigError> {
        let dir = self.dir.join(service).join(env);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ConfigError::Io { path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((v, ext)) = name.split_once('.') {
                if ext == kind {
                    if let Ok(v) = v.parse::<u64>() {
                        out.push(v);
                    }
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The document for `key` (its highest version without one).
    pub fn get(&self, key: &ConfigKey) -> Result<ConfigDocument, ConfigError> {
        for part in [&key.service, &key.env, &key.kind] {
            if !part_ok(part) {
                return Err(ConfigError::BadKey(format!(
                    "{part:?} is not a plain name (letters, digits, '-', '_', '.')"
                )));
            }
        }
        let version = match key.version {
            Some(v) => v,
            None => *self
                .versions(&key.service, &key.env, &key.kind)?
                .last()
                .ok_or_else(|| ConfigError::NotFound(describe(key)))?,
        };
        let path = self
            .dir
            .join(&key.service)
            .join(&key.env)
            .join(format!("{version}.{}", key.kind));
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound(describe(key)))
            }
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        Ok(ConfigDocument {
            service: key.service.clone(),
            kind: key.kind.clone(),
            env: key.env.clone(),
            version,
            body,
        })
    }

    /// The highest version of every (service, environment, type) there is.
    pub fn latest(&self) -> Result<BTreeMap<(String, String, String), u64>, ConfigError> {
        let mut out = BTreeMap::new();
        let read = |p: &Path| -> Result<Vec<String>, ConfigError> {
            match std::fs::read_dir(p) {
                Ok(e) => Ok(e
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| part_ok(n))
                    .collect()),
                Err(source) => Err(ConfigError::Io {
                    path: p.to_path_buf(),
                    source,
                }),
            }
        };
        for service in read(&self.dir)? {
            for env in read(&self.dir.join(&service))? {
                let dir = self.dir.join(&service).join(&env);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some((v, kind)) = name.to_str().and_then(|n| n.split_once('.')) else {
                        continue;
                    };
                    let (Ok(v), true) = (v.parse::<u64>(), part_ok(kind)) else {
                        continue;
                    };
                    let slot = out
                        .entry((service.clone(), env.clone(), kind.to_owned()))
                        .or_insert(v);
                    *slot = (*slot).max(v);
                }
            }
        }
        Ok(out)
    }

    /// The answer to a request: the document, or the remote error a
    /// caller gets (`not_found`, `bad_request`, `internal`).
    pub fn answer(&self, key: &ConfigKey) -> Result<ConfigDocument, RemoteError> {
        self.get(key).map_err(|e| match e {
            ConfigError::NotFound(what) => {
                RemoteError::new(NOT_FOUND, format!("no configuration document {what}"))
            }
            ConfigError::BadKey(why) => RemoteError::new(crate::wire::RemoteCode::BadRequest, why),
            other => {
                tracing::warn!(error = %other, "configuration service cannot read a document");
                RemoteError::new("internal", "the configuration service cannot read it")
            }
        })
    }
}

/// Adds the `config` service to `builder`, answering from `store`.
pub fn serve(builder: crate::node::NodeBuilder, store: ConfigStore) -> crate::node::NodeBuilder {
    builder.serve(SERVICE, move |req: crate::Request<ConfigKey>| {
        let store = store.clone();
        async move { store.answer(&req.body) }
    })
}

/// Scans `store` every `period` for as long as `node` runs, and publishes
/// each document whose highest version changed on its topic. Returns
/// when the node is gone. The first scan only records what is there.
pub async fn publish_changes(node: crate::node::NodeHandle, store: ConfigStore, period: Duration) {
    let mut known = store.latest().unwrap_or_default();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(node) = node.node() else { return };
        let now = match store.latest() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "configuration directory unreadable; keeping the last scan");
                continue;
            }
        };
        for ((service, env, kind), v) in &now {
            if known.get(&(service.clone(), env.clone(), kind.clone())) == Some(v) {
                continue;
            }
            let key = ConfigKey {
                service: service.clone(),
                kind: kind.clone(),
                env: env.clone(),
                version: Some(*v),
            };
            match store.get(&key) {
                Ok(doc) => {
                    let n = node
                        .publish(&key.topic(), &doc, Duration::from_secs(1))
                        .await
                        .unwrap_or(0);
                    tracing::info!(service = %service, env = %env, kind = %kind, version = v, subscribers = n, "configuration updated");
                }
                Err(e) => tracing::warn!(error = %e, "a new configuration document did not read"),
            }
        }
        known = now;
    }
}

/// Fetches the document for `key` from any member serving `config`.
pub async fn fetch(
    node: &Node,
    key: &ConfigKey,
    timeout: Duration,
) -> Result<ConfigDocument, ConfigError> {
    let opts = crate::node::CallOptions::default()
        .timeout(timeout)
        .idempotent()
        .wait_for_member();
    match node.request_with(SERVICE, key, opts).await {
        Ok(doc) => Ok(doc),
        Err(CallError::Request(crate::RequestError::Remote(e))) if e.code == NOT_FOUND => {
            Err(ConfigError::NotFound(describe(key)))
        }
        Err(e) => Err(ConfigError::Call(e)),
    }
}

/// Subscribes `node` to the updates of `service` in `env`: each message is
/// a [`ConfigDocument`] (decode it with `Published::decode`). Peers learn
/// of the subscription with the next heartbeat.
pub fn watch(node: &Node, service: &str, env: &str, capacity: usize) -> NodeSubscription {
    node.subscribe(topic(service, env), capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(files: &[(&str, &str)]) -> (tempfile::TempDir, ConfigStore) {
        let dir = tempfile::tempdir().unwrap();
        for (path, body) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let store = ConfigStore::new(dir.path());
        (dir, store)
    }

    #[test]
    fn the_highest_version_is_served_unless_one_is_asked_for() {
        let (_d, s) = store_with(&[
            ("quote/prod/1.toml", "a = 1"),
            ("quote/prod/10.toml", "a = 10"),
            ("quote/prod/9.toml", "a = 9"),
            ("quote/prod/11.json", "{}"),
            ("quote/staging/12.toml", "a = 12"),
        ]);
        let d = s.get(&ConfigKey::latest("quote", "toml", "prod")).unwrap();
        assert_eq!((d.version, d.body.as_slice()), (10, b"a = 10".as_slice()));
        let mut k = ConfigKey::latest("quote", "toml", "prod");
        k.version = Some(9);
        assert_eq!(s.get(&k).unwrap().body, b"a = 9");
        let latest = s.latest().unwrap();
        assert_eq!(latest[&("quote".into(), "prod".into(), "toml".into())], 10);
        assert_eq!(latest[&("quote".into(), "prod".into(), "json".into())], 11);
        assert_eq!(
            latest[&("quote".into(), "staging".into(), "toml".into())],
            12
        );
    }

    #[test]
    fn unknown_keys_are_not_found_and_paths_outside_are_refused() {
        let (_d, s) = store_with(&[("quote/prod/1.toml", "a = 1")]);
        for k in [
            ConfigKey::latest("nope", "toml", "prod"),
            ConfigKey::latest("quote", "toml", "dev"),
            ConfigKey::latest("quote", "yaml", "prod"),
            ConfigKey {
                version: Some(2),
                ..ConfigKey::latest("quote", "toml", "prod")
            },
        ] {
            assert!(matches!(s.get(&k), Err(ConfigError::NotFound(_))), "{k:?}");
            assert_eq!(s.answer(&k).unwrap_err().code, NOT_FOUND);
        }
        for k in [
            ConfigKey::latest("..", "toml", "prod"),
            ConfigKey::latest("quote", "toml", "../../etc"),
            ConfigKey::latest("quote/prod", "toml", "x"),
            ConfigKey::latest("", "toml", "prod"),
        ] {
            assert!(matches!(s.get(&k), Err(ConfigError::BadKey(_))), "{k:?}");
            assert_eq!(s.answer(&k).unwrap_err().code, "bad_request");
        }
    }
}

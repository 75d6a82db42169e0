//! `zfabric keygen`, and the CURVE settings every socket command and
//! `node` take.
//!
//! Each of the three settings comes from the first of: the flag
//! (`--curve-secret FILE`, `--curve-server KEY_OR_FILE`,
//! `--curve-authorized FILE`), the environment
//! (`ZFABRIC_CURVE_SECRET_FILE`, `ZFABRIC_CURVE_SERVER`,
//! `ZFABRIC_CURVE_AUTHORIZED_FILE`), and for `node` the TOML's
//! `[security]` table (`curve_secret_file`, `curve_server`,
//! `curve_authorized_file`; paths relative to the TOML file), which
//! `node`'s layering ([`super::node_config`]) merges in that order. Security is on when a secret key is
//! given; a server key or allow-list without one is a usage error, as is
//! a key or file that does not load (the message names the file, never
//! key material).
//!
//! Guarantees: every key file is loaded (and a secret key's permissions
//! checked) before the command opens a socket. Does not: generate keys
//! anywhere but `keygen`, or decide who may connect (the allow-list does).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zfabric::{AllowList, CurveConfig, CurveKeyPair, CurvePublicKey};

use crate::app::{BoxError, UsageError};

/// Env: our secret key file.
pub(crate) const ENV_SECRET: &str = "ZFABRIC_CURVE_SECRET_FILE";
/// Env: the server's public key, or a file of keys.
pub(crate) const ENV_SERVER: &str = "ZFABRIC_CURVE_SERVER";
/// Env: the allow-list of client keys.
pub(crate) const ENV_AUTHORIZED: &str = "ZFABRIC_CURVE_AUTHORIZED_FILE";

/// `zfabric keygen` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the secret key (mode 0600); the public key goes to
    /// PATH.pub. Each is one line of Z85.
    #[arg(long)]
    out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
}

/// `zfabric keygen`: a fresh key pair in two files; prints the public key.
pub(crate) async fn keygen(args: KeygenArgs) -> Result<(), BoxError> {
    let mut public = args.out.as_os_str().to_owned();
    public.push(".pub");
    let public = PathBuf::from(public);
    if !args.force {
        for p in [&args.out, &public] {
            if p.exists() {
                return Err(UsageError(format!(
                    "{} exists: give --force to replace it",
                    p.display()
                ))
                .into());
            }
        }
    }
    let pair = CurveKeyPair::generate();
    pair.write_files(&args.out)
        .map_err(|e| UsageError(e.to_string()))?;
    println!("{}", pair.public().to_z85());
    eprintln!(
        "secret key in {} (mode 0600), public key in {}",
        args.out.display(),
        public.display()
    );
    Ok(())
}

/// The CURVE flags of a command.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct CurveArgs {
    /// Turns CURVE on: our secret key file (from `zfabric keygen`; mode
    /// 0600). Else env ZFABRIC_CURVE_SECRET_FILE, else (node)
    /// `[security] curve_secret_file`.
    #[arg(long, value_name = "FILE")]
    curve_secret: Option<PathBuf>,
    /// On connect: the server's public key (40 characters of Z85) or a
    /// file of them, one per line. Else env ZFABRIC_CURVE_SERVER, else
    /// (node) `[security] curve_server`.
    #[arg(long, value_name = "KEY_OR_FILE")]
    curve_server: Option<String>,
    /// On bind: the client public keys allowed, one per line, `#`
    /// comments. Else env ZFABRIC_CURVE_AUTHORIZED_FILE, else (node)
    /// `[security] curve_authorized_file`.
    #[arg(long, value_name = "FILE")]
    curve_authorized: Option<PathBuf>,
}

/// The node TOML's `[security]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecurityFile {
    // Paths here are already resolved by the node's layering.
    /// Our secret key file.
    #[serde(default)]
    curve_secret_file: Option<PathBuf>,
    /// The server public key (Z85) or a file of keys, for seeds.
    #[serde(default)]
    curve_server: Option<String>,
    /// The allow-list file.
    #[serde(default)]
    curve_authorized_file: Option<PathBuf>,
}

/// The three settings once resolved, with where each came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Resolved {
    secret: Option<PathBuf>,
    server: Option<String>,
    authorized: Option<PathBuf>,
}

impl CurveArgs {
    /// Flag > env > TOML (relative paths against `base`), per setting.
    fn resolve(
        &self,
        file: Option<&SecurityFile>,
        base: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Resolved {
        let rel = |p: &PathBuf| zfabric::topology::gateway::resolve_key_path(base, p);
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        Resolved {
            secret: self
                .curve_secret
                .clone()
                .or_else(|| env(ENV_SECRET).map(PathBuf::from))
                .or_else(|| file.and_then(|f| f.curve_secret_file.as_ref()).map(rel)),
            server: self
                .curve_server
                .clone()
                .or_else(|| env(ENV_SERVER))
                .or_else(|| {
                    file.and_then(|f| f.curve_server.as_ref()).map(|s| {
                        if s.parse::<CurvePublicKey>().is_ok() {
                            s.clone()
                        } else {
                            rel(&PathBuf::from(s)).display().to_string()
                        }
                    })
                }),
            authorized: self
                .curve_authorized
                .clone()
                .or_else(|| env(ENV_AUTHORIZED).map(PathBuf::from))
                .or_else(|| file.and_then(|f| f.curve_authorized_file.as_ref()).map(rel)),
        }
    }

    /// The flags given, as node configuration keys (for `node`'s layering).
    pub(crate) fn overrides(&self) -> Vec<super::node_config::FlagValue> {
        let mut out = Vec::new();
        let mut add = |path: &'static str, v: Option<String>, flag: &str| {
            if let Some(value) = v {
                out.push(super::node_config::FlagValue {
                    path,
                    value,
                    flag: flag.into(),
                });
            }
        };
        let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        add(
            "security.curve_secret_file",
            shown(&self.curve_secret),
            "--curve-secret",
        );
        add(
            "security.curve_server",
            self.curve_server.clone(),
            "--curve-server",
        );
        add(
            "security.curve_authorized_file",
            shown(&self.curve_authorized),
            "--curve-authorized",
        );
        out
    }

    /// The CURVE settings of a socket command (flags, then env); `None`
    /// when no secret key is given.
    pub(crate) fn config(&self) -> Result<Option<CurveConfig>, BoxError> {
        self.resolve(None, None, |k| std::env::var(k).ok())
            .load(false)
    }

    /// The CURVE settings of a node, from its layered `[security]` table
    /// (flags and env already merged in, paths already resolved).
    pub(crate) fn node_config(
        file: Option<&SecurityFile>,
        context: &str,
    ) -> Result<Option<CurveConfig>, BoxError> {
        CurveArgs::default()
            .resolve(file, None, |_| None)
            .load(false)
            .map_err(|e| UsageError(format!("{context}: {e}")).into())
    }

    /// The settings of `req`: without an allow-list, the server keys it
    /// trusts may connect back (the node it calls links back to it).
    pub(crate) fn caller_config(&self) -> Result<Option<CurveConfig>, BoxError> {
        self.resolve(None, None, |k| std::env::var(k).ok())
            .load(true)
    }
}

impl Resolved {
    /// Loads the key files. `trust_servers`: with no allow-list, let in
    /// the server keys.
    fn load(&self, trust_servers: bool) -> Result<Option<CurveConfig>, BoxError> {
        let Some(secret) = &self.secret else {
            if self.server.is_some() || self.authorized.is_some() {
                return Err(UsageError(
                    "--curve-server and --curve-authorized need --curve-secret (our key pair)"
                        .into(),
                )
                .into());
            }
            return Ok(None);
        };
        let usage = |what: &str, e: zfabric::KeyError| -> BoxError {
            UsageError(format!("{what}: {e}")).into()
        };
        let mut cfg =
            CurveConfig::from_secret_file(secret).map_err(|e| usage("--curve-secret", e))?;
        if let Some(s) = &self.server {
            cfg = cfg
                .server_key_or_file(s)
                .map_err(|e| usage("--curve-server", e))?;
        }
        match (&self.authorized, &self.server) {
            (Some(a), _) => {
                cfg = cfg.authorizer(
                    AllowList::from_file(a).map_err(|e| usage("--curve-authorized", e))?,
                );
            }
            (None, Some(s)) if trust_servers => {
                let list = match s.parse::<CurvePublicKey>() {
                    Ok(k) => AllowList::from_keys([k]),
                    Err(_) => AllowList::from_file(s).map_err(|e| usage("--curve-server", e))?,
                };
                cfg = cfg.authorizer(list);
            }
            _ => {}
        }
        Ok(Some(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_toml() {
        let flags = CurveArgs {
            curve_secret: Some("flag.key".into()),
            ..Default::default()
        };
        let file = SecurityFile {
            curve_secret_file: Some("toml.key".into()),
            curve_server: Some("servers".into()),
            curve_authorized_file: None,
        };
        let e = env(&[
            (ENV_SECRET, "env.key"),
            (ENV_SERVER, "env-servers"),
            (ENV_AUTHORIZED, "/env/authorized"),
        ]);
        let r = flags.resolve(Some(&file), Some(Path::new("/etc/zf")), &e);
        assert_eq!(r.secret, Some(PathBuf::from("flag.key")));
        assert_eq!(r.server.as_deref(), Some("env-servers"));
        assert_eq!(r.authorized, Some(PathBuf::from("/env/authorized")));
        // TOML paths are relative to the TOML file.
        let r = flags.resolve(Some(&file), Some(Path::new("/etc/zf")), env(&[]));
        assert_eq!(r.server.as_deref(), Some("/etc/zf/servers"));
        // Only the environment.
        let r = CurveArgs::default().resolve(None, None, &e);
        assert_eq!(r.secret, Some(PathBuf::from("env.key")));
        // Nothing at all: security off.
        let r = CurveArgs::default().resolve(None, None, env(&[]));
        assert_eq!(r, Resolved::default());
        assert!(r.load(false).unwrap().is_none());
    }

    #[test]
    fn a_z85_server_key_in_the_toml_is_a_key_not_a_path() {
        let key = CurveKeyPair::generate().public().to_z85();
        let file = SecurityFile {
            curve_server: Some(key.clone()),
            ..Default::default()
        };
        let r = CurveArgs::default().resolve(Some(&file), Some(Path::new("/x")), env(&[]));
        assert_eq!(r.server, Some(key));
    }

    #[test]
    fn a_server_key_without_a_secret_or_a_missing_file_is_a_usage_error_naming_it() {
        let r = Resolved {
            server: Some("k".into()),
            ..Default::default()
        };
        let e = r.load(false).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        let r = Resolved {
            secret: Some("/nonexistent/zf.key".into()),
            ..Default::default()
        };
        let e = r.load(false).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(e.to_string().contains("/nonexistent/zf.key"), "{e}");
    }
}

//! The terminal commands: pub, sub, push, pull, serve, req, emit, node,
//! stream, gateway, keygen, wait-for.
//!
//! Bodies are JSON on the terminal and MessagePack on the wire. Every
//! long-running command takes `--metrics ADDR` (Prometheus text format on
//! `http://ADDR/metrics`) and stops cleanly on SIGINT or SIGTERM, saying
//! what it did.

pub(crate) mod events;
pub(crate) mod gateway;
pub(crate) mod messaging;
pub(crate) mod node_config;
pub(crate) mod security;
pub(crate) mod services;
pub(crate) mod stream;
pub(crate) mod wait;

use crate::app::{BoxError, UsageError};

/// Where a socket goes: `--bind` or `--connect` (exactly one).
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct Place {
    /// Listen on this endpoint (inproc://, ipc://, tcp://host:port).
    #[arg(long)]
    bind: Option<String>,
    /// Connect to this endpoint.
    #[arg(long)]
    connect: Option<String>,
}

impl Place {
    /// A socket builder bound or connected as asked, with CURVE as `curve`
    /// says; a malformed endpoint or a bad key file is a usage error.
    pub(crate) fn builder(
        &self,
        curve: &security::CurveArgs,
    ) -> Result<zfabric::SocketBuilder, BoxError> {
        let (ep, bind) = match (&self.bind, &self.connect) {
            (Some(b), _) => (b, true),
            (_, Some(c)) => (c, false),
            _ => return Err(UsageError("give --bind or --connect".into()).into()),
        };
        ep.parse::<zfabric::Endpoint>()
            .map_err(|e| UsageError(format!("bad endpoint {ep:?}: {e}")))?;
        let mut cfg = zfabric::SocketConfig::default();
        if let Some(c) = curve.config()? {
            cfg = cfg.curve(c);
        }
        let b = zfabric::SocketBuilder::new().config(cfg);
        Ok(if bind {
            b.bind(ep.clone())
        } else {
            b.connect(ep.clone())
        })
    }
}

/// Parses a JSON body given on the command line.
pub(crate) fn json_arg(s: &str) -> Result<serde_json::Value, BoxError> {
    serde_json::from_str(s).map_err(|e| UsageError(format!("--data is not JSON: {e}")).into())
}

/// Resolves when SIGINT or SIGTERM arrives.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

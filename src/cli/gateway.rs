//! `zfabric gateway --config FILE`: the HTTP edge (`zfabric::edge`) as a
//! command: joins the fabric with the file's `[node]`, serves its routes
//! over HTTP (HTTPS with `[tls]`), and stops on SIGINT/SIGTERM, letting
//! the requests in progress finish.
//!
//! Guarantees: the file is checked (and its keys and certificate loaded)
//! before anything is bound, a bad one is a usage error (exit 2); the
//! address it listens on is printed on stdout once it serves. Does not:
//! reload the file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zfabric::edge::{EdgeConfig, HttpGateway, StartError};

use crate::app::{metrics::Common, BoxError, UsageError};

/// `zfabric gateway` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    /// The gateway's TOML file (docs/GATEWAY.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    common: Common,
}

/// Runs the HTTP edge until a stop signal.
pub(crate) async fn gateway(args: GatewayArgs) -> Result<(), BoxError> {
    let config = EdgeConfig::load(&args.config).map_err(|e| UsageError(e.to_string()))?;
    args.common.start().await?;
    let node = Arc::new(config.node.builder().start().await?);
    // Every start failure is the file's (a key, a certificate, the
    // address): a usage error.
    let edge = HttpGateway::start(config, node.clone())
        .await
        .map_err(|e: StartError| UsageError(e.to_string()))?;
    println!("gateway on {}", edge.url());
    crate::app::health::set_ready();
    super::stop_signal().await;
    crate::app::health::set_stopping("stopping: draining requests");
    edge.shutdown(Duration::from_secs(2)).await;
    if let Ok(node) = Arc::try_unwrap(node) {
        node.shutdown(Duration::from_secs(2)).await;
    }
    Ok(())
}

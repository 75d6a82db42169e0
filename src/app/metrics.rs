//! `--metrics ADDR`: the Prometheus endpoint every long-running command
//! can serve.
//!
//! Guarantees: the recorder is installed before the command starts (once:
//! a second install is an error); the listener (axum over hyper) answers
//! `GET /metrics` with the Prometheus text format, `GET /healthz` and
//! `GET /readyz` as [`health`] says, and anything else with 404. Does
//! not: record anything itself (the library does).

use std::net::SocketAddr;
use std::time::Duration;

use super::{health, BoxError, UsageError};

/// Gauge: the build serving the metrics (value 1), by `version`.
const BUILD_INFO: &str = "zfabric_build_info";

/// Options every long-running command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// Serve Prometheus metrics on http://ADDR/metrics, with /healthz and
    /// /readyz for probes (e.g. 127.0.0.1:9100; port 0 picks a free port,
    /// printed on stderr).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

impl Common {
    /// Starts the metrics endpoint if asked.
    pub(crate) async fn start(&self) -> Result<(), BoxError> {
        if let Some(addr) = self.metrics {
            let bound = serve_metrics(addr).await?;
            eprintln!("metrics on http://{bound}/metrics");
        }
        Ok(())
    }
}

/// Installs the Prometheus recorder and serves it, with the health
/// endpoints, on `addr`.
async fn serve_metrics(addr: SocketAddr) -> Result<SocketAddr, BoxError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            zfabric::telemetry::catalog::DURATION_BUCKETS,
        )
        .map_err(|e| format!("cannot set the histogram buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    // Every family described (HELP, unit), known counters at zero, the
    // build and the process.
    zfabric::telemetry::catalog::describe();
    metrics::describe_gauge!(
        BUILD_INFO,
        "The zfabric build serving these metrics (value 1), by version."
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| UsageError(format!("--metrics {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let app = router(handle, process);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(bound)
}

/// The routes of the listener.
fn router(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    process: metrics_process::Collector,
) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    const TEXT: &str = "text/plain; charset=utf-8";
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                process.collect();
                let body = handle.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route(
            "/healthz",
            get(|| async { ([(header::CONTENT_TYPE, TEXT)], "ok\n") }),
        )
        .route(
            "/readyz",
            get(|| async {
                match health::readiness() {
                    Ok(()) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, TEXT)],
                        "ready\n".to_string(),
                    ),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::CONTENT_TYPE, TEXT)],
                        format!("not ready: {why}\n"),
                    ),
                }
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, TEXT)],
                "try /metrics, /healthz or /readyz\n",
            )
        })
}

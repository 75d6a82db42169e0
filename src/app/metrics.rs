//! `--metrics ADDR`: the Prometheus endpoint every long-running command
//! can serve.
//!
//! Guarantees: the recorder is installed before the command starts (once:
//! a second install is an error); the listener (axum over hyper) answers
//! `GET /metrics` with the Prometheus text format, `GET /healthz` and
//! `GET /readyz` as [`health`] says, `GET /` with the status page and
//! `GET /status.json` with what it shows (`zfabric::edge::status`), and
//! anything else with 404. Each
//! scrape first sets every gauge from what is alive now (the library's
//! [`zfabric::telemetry::collect`], the build, the process); a gauge not
//! set since the previous scrape is removed (an idle timeout on gauges
//! only), so the series of a dropped node or a departed member leave.
//! Does not: record anything else itself (the library does).

use std::net::SocketAddr;
use std::time::Duration;

use super::{health, BoxError, UsageError};

/// Gauge: the build serving the metrics (value 1), by `version`.
const BUILD_INFO: &str = "zfabric_build_info";

/// A gauge not set since the previous scrape for this long is removed
/// from the next one. Every gauge is set right before each scrape
/// (`zfabric::telemetry::collect`, the build, the process), so only the
/// series of things that are gone (a dropped node, a member out of the
/// fabric) go; the second only keeps two scrapes in a row from racing.
const GAUGE_IDLE: Duration = Duration::from_secs(1);

/// Options every long-running command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// Serve Prometheus metrics on http://HOST:PORT/metrics, with /healthz
    /// and /readyz for probes (e.g. 127.0.0.1:9100, localhost:9100,
    /// [::1]:9100; port 0 picks a free port, printed on stderr).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
    metrics: Option<String>,
}

/// Checks `HOST:PORT` at parse time (a bad one is a usage error, exit 2);
/// the name is resolved when the listener binds.
pub(crate) fn parse_listen(s: &str) -> Result<String, String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?} is not HOST:PORT (e.g. 127.0.0.1:9100 or localhost:9100)"
        )),
    }
}

impl Common {
    /// Starts the metrics endpoint if asked.
    pub(crate) async fn start(&self) -> Result<(), BoxError> {
        start_on(self.metrics.as_deref()).await
    }

    /// The `--metrics` address given, if any.
    pub(crate) fn listen(&self) -> Option<&str> {
        self.metrics.as_deref()
    }
}

/// Starts the metrics endpoint on `spec` (HOST:PORT), if given.
pub(crate) async fn start_on(spec: Option<&str>) -> Result<(), BoxError> {
    if let Some(spec) = spec {
        let addr = tokio::net::lookup_host(spec)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| UsageError(format!("--metrics {spec}: the host does not resolve")))?;
        let bound = serve_metrics(addr).await?;
        eprintln!("metrics on http://{bound}/metrics");
    }
    Ok(())
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
        .idle_timeout(
            metrics_util_exporter::MetricKindMask::GAUGE,
            Some(GAUGE_IDLE),
        )
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    // Every family described (HELP, unit), known counters at zero, the
    // build and the process.
    zfabric::telemetry::catalog::describe();
    metrics::describe_gauge!(
        BUILD_INFO,
        "The zfabric build serving these metrics (value 1), by version."
    );
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
    let status_handle = handle.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                // Every gauge set now, from what is alive now.
                metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                process.collect();
                zfabric::telemetry::collect();
                let body = handle.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    zfabric::edge::status::PAGE,
                )
            }),
        )
        .route(
            "/status.json",
            get(move || {
                zfabric::telemetry::collect();
                let lines = zfabric::edge::status::lines_from_prometheus(&status_handle.render());
                let status = zfabric::edge::status::Status::now("node", lines);
                let body = serde_json::to_vec(&status).unwrap_or_default();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, "no-store"),
                        ],
                        body,
                    )
                }
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
                "try /metrics, /healthz, /readyz, / (status page) or /status.json\n",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_takes_addresses_and_host_names_with_a_port() {
        for ok in ["127.0.0.1:9100", "[::1]:0", "localhost:9100", "0.0.0.0:0"] {
            assert!(parse_listen(ok).is_ok(), "{ok}");
        }
        for bad in ["9100", "localhost", ":9100", "localhost:99999", "a:b"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }
}

//! `--metrics ADDR`: the Prometheus endpoint every long-running command
//! can serve.
//!
//! Guarantees: the recorder is installed before the command starts (once:
//! a second install is an error); the endpoint answers `GET /metrics`
//! with the Prometheus text format and anything else with 404, reads at most 4 KiB of a request head and gives
//! a slow client 5 s. Does not: record anything itself (the library does),
//! or keep connections open.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BoxError, UsageError};

/// Options every long-running command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9100;
    /// port 0 picks a free port, printed on stderr).
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

/// Installs the Prometheus recorder and serves its text on `addr`.
async fn serve_metrics(addr: SocketAddr) -> Result<SocketAddr, BoxError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
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
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                // Read the request head (bounded), answer, close.
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while n < buf.len() {
                    match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf[n..]))
                        .await
                    {
                        Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                        Ok(Ok(k)) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if head.starts_with("GET /metrics") {
                    ("200 OK", handle.render())
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(bound)
}

//! The HTTP edge's overhead: the same echo call made COUNT times one at a
//! time, directly through a node (`Node::request_raw`, MessagePack over
//! tcp) and through the HTTP edge in front of that node (HTTP/1.1
//! keep-alive, JSON in and out, the same node behind it), in one run, on
//! one machine. Prints p50, p99 and mean of each and the difference.
//!
//! ```sh
//! cargo build --release --example edge_overhead
//! target/release/examples/edge_overhead 20000
//! ```
//!
//! Both paths run in this process (the service node, the gateway node,
//! the HTTP server and the client share one runtime of two workers), so
//! the figures compare the paths, not machines. The service answers at
//! once; the rounds alternate (direct, HTTP) so drift hits both alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zfabric::edge::{EdgeConfig, HttpGateway};
use zfabric::node::{CallOptions, Node};
use zfabric::{RemoteError, Request};

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let q = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "{name:<24} n={:<6} p50={:>8.1?} p99={:>8.1?} mean={:>8.1?}",
        v.len(),
        q(0.5),
        q(0.99),
        mean
    );
    (q(0.5), q(0.99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5000);
    let svc = Node::builder("svc")
        .bind("tcp://127.0.0.1:0")
        .serve("echo", |req: Request<Value>| async move {
            Ok::<_, RemoteError>(req.body)
        })
        .start()
        .await?;
    let node = Arc::new(
        Node::builder("edge")
            .bind("tcp://127.0.0.1:0")
            .seed(svc.endpoints()[0].to_string())
            .start()
            .await?,
    );
    for _ in 0..500 {
        if !node.serving("echo").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let config = EdgeConfig::from_toml(
        r#"
        listen = "127.0.0.1:0"
        [[route]]
        path = "/v1/{service}"
        service = "{service}"
        allow = ["echo"]
        "#,
        None,
    )?;
    let gw = HttpGateway::start(config, node.clone()).await?;
    let url = format!("{}/v1/echo", gw.url());
    let http = reqwest::Client::new();
    let body = json!({"id": 42, "name": "ada", "tags": ["a", "b"]});
    let text = body.to_string();
    let packed = zfabric::wire::encode_body(&body)?;
    let opts = || CallOptions::default().timeout(Duration::from_secs(5));
    // Warm both paths (connections, links, caches).
    for _ in 0..200 {
        node.request_raw("echo", packed.clone(), opts()).await?;
        http.post(&url)
            .body(text.clone())
            .send()
            .await?
            .bytes()
            .await?;
    }
    let (mut direct, mut edge) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for _ in 0..count {
        let t = Instant::now();
        node.request_raw("echo", packed.clone(), opts()).await?;
        direct.push(t.elapsed());
        let t = Instant::now();
        let r = http.post(&url).body(text.clone()).send().await?;
        let ok = r.status().is_success();
        r.bytes().await?;
        edge.push(t.elapsed());
        if !ok {
            return Err("the gateway answered with an error".into());
        }
    }
    let (d50, d99) = summary("direct fabric call", direct);
    let (e50, e99) = summary("through the HTTP edge", edge);
    println!(
        "edge overhead: p50 +{:.1?}, p99 +{:.1?}",
        e50.saturating_sub(d50),
        e99.saturating_sub(d99)
    );
    gw.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

//! Request/reply in one file: a server doubling numbers and a client.
//!
//! ```sh
//! cargo run --example hello_reqrep                       # tcp on a free port
//! cargo run --example hello_reqrep -- inproc://doubler    # any endpoint
//! ```

use std::time::Duration;

use zfabric::{Client, RemoteError, RequestError, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ep = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp://127.0.0.1:0".into());
    let server: Server<i64, i64> = Server::bind(&ep).await?;
    let bound = server.endpoints()[0].to_string();
    let _serving = server.spawn(|req| async move {
        if req.body < 0 {
            return Err(RemoteError::new("negative", "only non-negative numbers"));
        }
        Ok(req.body * 2)
    });
    println!("server on {bound}");

    let client: Client<i64, i64> = Client::connect(&bound)
        .await?
        .with_timeout(Duration::from_secs(2));
    for x in [1, 21, -5] {
        match client.request(&x).await {
            Ok(y) => println!("{x} -> {y}"),
            Err(RequestError::Remote(e)) => {
                println!("{x} -> remote error {}: {}", e.code, e.message)
            }
            Err(e) => println!("{x} -> {e}"),
        }
    }
    Ok(())
}

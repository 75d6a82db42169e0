//! Three service nodes and a client, each its own process, finding each
//! other from one seed and printing who served what.
//!
//! In one command (spawns the four processes itself):
//! ```sh
//! cargo run --example fabric_demo -- all tcp
//! cargo run --example fabric_demo -- all ipc
//! ```
//! Or by hand, one terminal each:
//! ```sh
//! cargo run --example fabric_demo -- serve alpha tcp://127.0.0.1:7101
//! cargo run --example fabric_demo -- serve beta  tcp://127.0.0.1:7102 tcp://127.0.0.1:7101
//! cargo run --example fabric_demo -- serve gamma tcp://127.0.0.1:7103 tcp://127.0.0.1:7101
//! cargo run --example fabric_demo -- client tcp://127.0.0.1:7101 12
//! ```
//! (`serve NAME BIND [SEED]`, `client SEED [COUNT]`; the client binds an
//! ephemeral endpoint of the seed's transport.)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zfabric::node::{CallOptions, Node};
use zfabric::{RemoteError, Request};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("serve") => {
            let (Some(name), Some(bind)) = (arg(1), arg(2)) else {
                return Err("usage: serve NAME BIND [SEED]".into());
            };
            serve(name, bind, arg(3)).await
        }
        Some("client") => {
            let seed = arg(1).ok_or("usage: client SEED [COUNT]")?;
            let count = arg(2).map(str::parse).transpose()?.unwrap_or(12);
            client(seed, count).await
        }
        Some("all") => all(arg(1).unwrap_or("tcp")),
        _ => Err("usage: fabric_demo serve|client|all ...".into()),
    }
}

async fn serve(name: &str, bind: &str, seed: Option<&str>) -> Result<(), BoxError> {
    let me = name.to_string();
    let mut b = Node::builder(name)
        .bind(bind)
        .serve("pricing", move |req: Request<String>| {
            let me = me.clone();
            async move { Ok::<_, RemoteError>(format!("{} priced by {me}", req.body)) }
        });
    if let Some(s) = seed {
        b = b.seed(s);
    }
    let node = b.start().await?;
    // The first line tells a parent process where we are.
    println!("listening {}", node.endpoints()[0]);
    // Serve until stdin closes (the parent ends us) or for at most 5 minutes.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    });
    let _ = tokio::time::timeout(Duration::from_secs(300), stdin_closed).await;
    node.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

async fn client(seed: &str, count: usize) -> Result<(), BoxError> {
    let bind = if seed.starts_with("ipc://") {
        format!(
            "ipc://{}/zfabric-demo-client-{}.sock",
            std::env::temp_dir().display(),
            std::process::id()
        )
    } else {
        "tcp://127.0.0.1:0".to_string()
    };
    let node = Node::builder("client")
        .bind(bind)
        .seed(seed)
        .start()
        .await?;
    // Wait (bounded) until three members serve "pricing".
    let mut waited = 0;
    while node
        .members()
        .iter()
        .filter(|m| m.services.iter().any(|s| s == "pricing"))
        .count()
        < 3
    {
        if waited > 300 {
            return Err("did not find three pricing nodes within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..count {
        let item = format!("item-{i}");
        let opts = CallOptions::default()
            .timeout(Duration::from_secs(5))
            .idempotent();
        let reply: String = node.request_with("pricing", &item, opts).await?;
        println!("{reply}");
        let who = reply.rsplit(' ').next().unwrap_or("?").to_string();
        *served.entry(who).or_default() += 1;
    }
    println!("served: {served:?}");
    node.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// Starts three servers and a client as child processes of this program.
fn all(transport: &str) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("zfabric-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bind = |name: &str| match transport {
        "ipc" => Ok(format!("ipc://{}/{name}.sock", dir.display())),
        "tcp" => Ok("tcp://127.0.0.1:0".to_string()),
        other => Err(format!("unknown transport {other:?} (tcp or ipc)")),
    };
    let spawn_server = |name: &str, seed: Option<&str>| -> Result<(Child, String), BoxError> {
        let mut cmd = Command::new(&exe);
        cmd.args(["serve", name, &bind(name)?]);
        if let Some(s) = seed {
            cmd.arg(s);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let mut first = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut first)?;
        let ep = first
            .trim()
            .strip_prefix("listening ")
            .ok_or("server did not start")?
            .to_string();
        println!("started {name} on {ep}");
        Ok((child, ep))
    };
    let (alpha, seed) = spawn_server("alpha", None)?;
    let (beta, _) = spawn_server("beta", Some(&seed))?;
    let (gamma, _) = spawn_server("gamma", Some(&seed))?;
    let status = Command::new(&exe).args(["client", &seed, "12"]).status()?;
    for mut c in [alpha, beta, gamma] {
        drop(c.stdin.take()); // asks it to leave the fabric and exit
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if status.success() {
        Ok(())
    } else {
        Err("the client failed".into())
    }
}

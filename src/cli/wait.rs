//! `zfabric wait-for`: waits until host names resolve, or TCP endpoints
//! accept connections: the job of an init container (Kubernetes) or a
//! one-shot service (Compose) that holds a node back until its seeds
//! exist, in an image with no shell (no `nslookup` loop).
//!
//! Guarantees: every name and endpoint is tried every half second until
//! all succeeded (exit 0, what each resolved to printed) or the timeout
//! passed (exit 1, naming what never did). Each attempt is bounded (2 s).
//! Does not: check that anything at those addresses is a zfabric node.

use std::time::{Duration, Instant};

use crate::app::{BoxError, UsageError};

/// `zfabric wait-for` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WaitArgs {
    /// A host name that must resolve to at least one address (repeatable;
    /// `tcp://NAME:PORT` is taken as NAME, so a seed list can be reused).
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    /// A HOST:PORT (or tcp://HOST:PORT) that must accept a TCP connection
    /// (repeatable).
    #[arg(long = "tcp", value_name = "HOST:PORT")]
    tcp: Vec<String>,
    /// Give up after this many seconds (exit 1).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// One thing to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Dns(String),
    Tcp(String, u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Dns(n) => write!(f, "{n} (dns)"),
            Target::Tcp(h, p) => write!(f, "{h}:{p} (tcp)"),
        }
    }
}

/// The host of `s`: a bare name, or the host of a tcp endpoint (lists
/// may be comma-separated, as in ZFABRIC_SEEDS).
fn targets(args: &WaitArgs) -> Result<Vec<Target>, UsageError> {
    let mut out = Vec::new();
    let split = |l: &[String]| -> Vec<String> {
        l.iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    for s in split(&args.dns) {
        let host = match s.parse::<zfabric::Endpoint>() {
            Ok(zfabric::Endpoint::Tcp { host, .. }) => host,
            Ok(_) => return Err(UsageError(format!("--dns {s}: not a host name"))),
            Err(_) if !s.contains("://") => s,
            Err(e) => return Err(UsageError(format!("--dns {s}: {e}"))),
        };
        out.push(Target::Dns(host));
    }
    for s in split(&args.tcp) {
        let ep = if s.contains("://") {
            s.clone()
        } else {
            format!("tcp://{s}")
        };
        match ep.parse::<zfabric::Endpoint>() {
            Ok(zfabric::Endpoint::Tcp { host, port }) if port != 0 => {
                out.push(Target::Tcp(host, port))
            }
            _ => return Err(UsageError(format!("--tcp {s}: expected HOST:PORT"))),
        }
    }
    if out.is_empty() {
        return Err(UsageError(
            "give at least one --dns NAME or --tcp HOST:PORT".into(),
        ));
    }
    Ok(out)
}

/// One attempt: what the target resolved to, or why not.
async fn attempt(t: &Target) -> Result<String, String> {
    const BOUND: Duration = Duration::from_secs(2);
    let run = async {
        match t {
            Target::Dns(name) => {
                let addrs: Vec<String> = tokio::net::lookup_host((name.as_str(), 0))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|a| a.ip().to_string())
                    .collect();
                if addrs.is_empty() {
                    return Err("no address".to_string());
                }
                Ok(addrs.join(", "))
            }
            Target::Tcp(host, port) => tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map(|s| {
                    s.peer_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|_| "connected".into())
                })
                .map_err(|e| e.to_string()),
        }
    };
    tokio::time::timeout(BOUND, run)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {BOUND:?}")))
}

/// `zfabric wait-for`.
pub(crate) async fn wait_for(args: WaitArgs) -> Result<(), BoxError> {
    let mut pending = targets(&args)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut last: Vec<(Target, String)> = Vec::new();
    loop {
        last.clear();
        let mut still = Vec::new();
        for t in pending {
            match attempt(&t).await {
                Ok(found) => println!("{t}: {found}"),
                Err(why) => {
                    last.push((t.clone(), why));
                    still.push(t);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let what: Vec<String> = last.iter().map(|(t, why)| format!("{t}: {why}")).collect();
            return Err(format!("not ready after {} s: {}", args.timeout, what.join("; ")).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dns: &[&str], tcp: &[&str]) -> WaitArgs {
        WaitArgs {
            dns: dns.iter().map(|s| s.to_string()).collect(),
            tcp: tcp.iter().map(|s| s.to_string()).collect(),
            timeout: 1,
        }
    }

    #[test]
    fn names_endpoints_and_lists_are_accepted() {
        let t = targets(&args(
            &["quote", "tcp://seed-0.seed:7000,tcp://b:1"],
            &["a:9"],
        ))
        .unwrap();
        assert_eq!(
            t,
            [
                Target::Dns("quote".into()),
                Target::Dns("seed-0.seed".into()),
                Target::Dns("b".into()),
                Target::Tcp("a".into(), 9),
            ]
        );
        assert!(targets(&args(&[], &[])).is_err());
        assert!(targets(&args(&[], &["nohost"])).is_err());
        assert!(targets(&args(&["ipc:///tmp/x"], &[])).is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_and_a_port_that_listens_succeed_and_a_closed_one_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let ok = args(&["localhost"], &[&format!("127.0.0.1:{port}")]);
        wait_for(ok).await.unwrap();
        drop(l);
        let mut closed = args(&[], &[&format!("127.0.0.1:{port}")]);
        closed.timeout = 0;
        let e = wait_for(closed).await.unwrap_err();
        assert!(e.to_string().contains("not ready after 0 s"), "{e}");
    }
}

//! `zfabric run FILE`: runs a topology file and reports what happened.
//!
//! By default every node runs in this process over inproc. `--transport
//! ipc|tcp` runs the same topology over ipc or tcp; `--split` runs each
//! node as its own OS process (this same binary, in child mode), talking
//! to this one over its stdin/stdout for faults and final counts.

mod drive;
mod report;
pub(crate) mod spec;
pub(crate) mod world;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::app::{BoxError, UsageError};

/// Options of `zfabric run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The topology file (see patterns/*.toml).
    file: PathBuf,
    /// Transport between the nodes.
    #[arg(long, default_value = "inproc", value_parser = ["inproc", "ipc", "tcp"])]
    transport: String,
    /// Run each node as its own OS process (needs ipc or tcp).
    #[arg(long)]
    split: bool,
    /// Override every load's duration, in seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Child mode (used by --split): run only this node.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Child mode: the seed to join.
    #[arg(long, hide = true)]
    seed: Option<String>,
    /// Child mode: the driver's socket endpoints, as JSON.
    #[arg(long, hide = true)]
    driver_eps: Option<String>,
    /// Child mode: members to see before reporting ready.
    #[arg(long, hide = true, default_value_t = 0)]
    expect: usize,
    #[command(flatten)]
    common: crate::app::metrics::Common,
}

/// Runs `zfabric run`.
pub(crate) async fn run(args: RunArgs) -> Result<(), BoxError> {
    let spec = spec::Spec::load(&args.file).map_err(|e| UsageError(e.to_string()))?;
    if let Some(name) = &args.child {
        return child(&args, &spec, name).await;
    }
    if args.split && args.transport == "inproc" {
        return Err(UsageError(
            "--split runs nodes as separate processes: use --transport ipc or tcp".into(),
        )
        .into());
    }
    args.common.start().await?;
    let exe = std::env::current_exe()?;
    let mode = drive::Mode {
        file: &args.file,
        exe: &exe,
        transport: &args.transport,
        split: args.split,
        duration: args.duration,
        show_progress: !args.json,
    };
    let report = drive::drive(&spec, mode).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print_table();
    }
    Ok(())
}

/// Child mode: start one node, say READY, obey fault commands on stdin,
/// print STATS when stdin closes.
async fn child(args: &RunArgs, spec: &spec::Spec, name: &str) -> Result<(), BoxError> {
    let node_spec = spec
        .nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| UsageError(format!("no node named {name:?}")))?;
    let seed = args
        .seed
        .clone()
        .ok_or_else(|| UsageError("--child needs --seed".into()))?;
    let eps: world::DriverEps = match &args.driver_eps {
        Some(j) => serde_json::from_str(j)?,
        None => world::DriverEps::default(),
    };
    let dir = tempfile_dir()?;
    let local = world::start_node(node_spec, &args.transport, &dir, &seed, &eps).await?;
    for _ in 0..1000 {
        if local.node.members().len() >= args.expect {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gateway = local.gateway.as_ref().map(|g| g.endpoints()[0].to_string());
    say(&format!(
        "READY {}",
        serde_json::json!({ "gateway": gateway })
    ));
    let counters = local.counters.clone();
    let probes = tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let now = counters.probes();
            if now != seen {
                seen = now;
                say(&format!("PROBE {now}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("slow"), Some(ms)) => local.fault.slow(ms.parse().unwrap_or(0.0)),
            (Some("fail"), _) => local.fault.fail(),
            (Some("heal"), _) => local.fault.heal(),
            _ => {}
        }
    }
    probes.abort();
    say(&format!(
        "STATS {}",
        serde_json::to_string(&local.counters.snapshot(name, false))?
    ));
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A private directory for ipc socket files, removed at exit by the OS's
/// temp cleaning; named per process so runs never collide.
fn tempfile_dir() -> Result<PathBuf, BoxError> {
    let dir = std::env::temp_dir().join(format!(
        "zfabric-run-{}-{}",
        std::process::id(),
        world::random() % 1_000_000
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

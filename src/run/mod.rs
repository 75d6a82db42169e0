//! `zfabric run FILE`: runs a topology file and reports what happened.
//!
//! By default every node runs in this process over inproc. `--transport
//! ipc|tcp` runs the same topology over ipc or tcp; `--split` runs each
//! node as its own OS process (this same binary, in child mode), talking
//! to this one over its stdin/stdout for faults and final counts.
//!
//! Layout (each uses only those after it):
//! - `driver`: one run from start to report: members up, fabric and
//!   socket roles ready, loads against the timeline, counts gathered.
//! - `timeline`: faults on schedule and progress once a second.
//! - `member`: the nodes, here or as child processes, and the child
//!   protocol (READY, PROBE, STATS; slow, fail, heal).
//! - `load`: one file per load kind, each making one call and adding its
//!   calls up to a typed outcome; the live progress counts.
//! - `report`: the end-of-run report, as a table or JSON.
//! - `world`: nodes started from a `spec` node, with counters and faults.
//! - `spec`: the topology file.

mod driver;
pub(crate) mod effects;
mod load;
mod member;
mod report;
pub(crate) mod spec;
mod timeline;
pub(crate) mod world;

use std::path::PathBuf;

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
    /// Child mode: where data files are kept (the driver's directory).
    #[arg(long, hide = true)]
    data_dir: Option<PathBuf>,
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
        return member::child(&args, &spec, name).await;
    }
    if args.split && args.transport == "inproc" {
        return Err(UsageError(
            "--split runs nodes as separate processes: use --transport ipc or tcp".into(),
        )
        .into());
    }
    args.common.start().await?;
    // A run is a job: ready (to be scraped) once it starts its world.
    crate::app::health::set_ready();
    let exe = std::env::current_exe()?;
    let mode = driver::Mode {
        file: &args.file,
        exe: &exe,
        transport: &args.transport,
        split: args.split,
        duration: args.duration,
        show_progress: !args.json,
    };
    let report = driver::drive(&spec, mode).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print_table();
    }
    Ok(())
}

/// A directory for a run's ipc socket files, named per process so runs
/// never collide; removed when dropped (a process that ends cleanly
/// leaves nothing behind).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh [`TempDir`].
fn tempfile_dir() -> Result<TempDir, BoxError> {
    let dir = std::env::temp_dir().join(format!(
        "zfabric-run-{}-{}",
        std::process::id(),
        world::random() % 1_000_000
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}

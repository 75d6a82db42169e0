//! The `zfabric` command line.

mod run;
mod tour;

use clap::{Parser, Subcommand};

/// zfabric: a brokerless messaging fabric over ZeroMQ sockets.
#[derive(Debug, Parser)]
#[command(name = "zfabric", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run pub/sub, push/pull and request/reply on inproc, ipc and tcp in
    /// this process, and print what was measured.
    Tour(tour::TourArgs),
    /// Run a topology file (patterns/*.toml): nodes, load, faults; print
    /// what happened.
    Run(run::RunArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZFABRIC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zfabric: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Tour(args) => tour::run(args).await,
            Command::Run(args) => run::run(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("zfabric: {e}");
        let usage = e.downcast_ref::<run::UsageError>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}

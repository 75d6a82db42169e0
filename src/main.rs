//! The `zfabric` command line.

mod app;
mod bench;
mod cli;
mod run;
mod tour;

use clap::{Parser, Subcommand};

/// zfabric: a brokerless messaging fabric over ZeroMQ sockets.
#[derive(Debug, Parser)]
#[command(
    name = "zfabric",
    version,
    about,
    after_help = "Exit codes: 0 done; 1 a failure while running (a request or send that \
                  failed, a peer that went away); 2 bad usage, a bad endpoint, JSON body or \
                  config file, or an endpoint that cannot be bound (address in use)."
)]
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
    /// Publish messages on a topic (pub/sub).
    Pub(cli::messaging::PubArgs),
    /// Subscribe to topic prefixes and print what arrives, one line each.
    Sub(cli::messaging::SubArgs),
    /// Push messages into a pipeline.
    Push(cli::messaging::Send),
    /// Pull messages from a pipeline and print them.
    Pull(cli::messaging::RecvArgs),
    /// Serve a request/reply service on the fabric.
    Serve(cli::services::ServeArgs),
    /// Call a service on the fabric and print the replies or typed errors.
    Req(cli::services::ReqArgs),
    /// Run a long-lived node from a configuration file, the environment
    /// (ZFABRIC_*) and flags; `--check-config` checks and prints it.
    Node(cli::services::NodeArgs),
    /// Emit domain events to the consumer groups of their topic (at most
    /// once, at least once, or durably through an outbox directory);
    /// says what each group acknowledged.
    Emit(cli::events::EmitArgs),
    /// Durable streams: serve one from a directory, append, tail, info.
    #[command(subcommand)]
    Stream(cli::stream::StreamCommand),
    /// Serve HTTP routes into the fabric from a TOML file (the HTTP edge:
    /// JSON in and out, JWT, limits, caching, a status page on /).
    Gateway(cli::gateway::GatewayArgs),
    /// Wait until host names resolve or TCP endpoints accept connections
    /// (an init container's job, in an image without a shell).
    WaitFor(cli::wait::WaitArgs),
    /// Generate a CURVE key pair: the secret key to PATH (mode 0600), the
    /// public key to PATH.pub.
    Keygen(cli::security::KeygenArgs),
    /// Measure patterns × transports × sizes against raw zeromq sockets
    /// and tokio channels in the same run.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let telemetry = app::logs::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zfabric: cannot start the runtime: {e}");
            telemetry.shutdown();
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
        let result = match cli.command {
            Command::Tour(args) => tour::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Pub(args) => cli::messaging::publish(args).await,
            Command::Sub(args) => cli::messaging::subscribe(args).await,
            Command::Push(args) => cli::messaging::push(args).await,
            Command::Pull(args) => cli::messaging::pull(args).await,
            Command::Serve(args) => cli::services::serve(args).await,
            Command::Req(args) => cli::services::request(args).await,
            Command::Node(args) => cli::services::node(args).await,
            Command::Emit(args) => cli::events::emit_events(args).await,
            Command::Stream(cmd) => cli::stream::run(cmd).await,
            Command::Gateway(args) => cli::gateway::gateway(args).await,
            Command::Keygen(args) => cli::security::keygen(args).await,
            Command::WaitFor(args) => cli::wait::wait_for(args).await,
            Command::Bench(args) => bench::run(args).await,
        };
        // Let the sockets closed by now delete their private ipc files
        // while the runtime still runs, then remove the process's
        // private directory: nothing is left in the temp dir.
        zfabric::remove_private_dir(std::time::Duration::from_millis(500)).await;
        result
    });
    // The runtime goes first (its tasks end), then the spans still
    // queued are exported.
    drop(rt);
    telemetry.shutdown();
    if let Err(e) = result {
        eprintln!("zfabric: {e}");
        std::process::exit(app::exit_code(&e));
    }
}

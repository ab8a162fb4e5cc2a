use clap::{Parser, Subcommand};
use vsfleet_worker::Worker;

mod check;

/// vsfleet worker: runs the lifecycle jobs of one Docker host.
#[derive(Parser)]
#[command(version = vsfleet_contract::cli::VERSION)]
struct Cli {
    #[command(flatten)]
    config: vsfleet_contract::cli::ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker (the default).
    Run,
    /// Health check of this host's running worker: exits 0 when Docker
    /// answers and the host's heartbeat is in the hosts bucket, 1 with the
    /// reason otherwise.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let settings = cli.config.load_or_exit("vsfleet-worker");
    // A check answers in one line (its error, or "healthy"): no log.
    if matches!(command, Command::Run) {
        vsfleet_contract::telemetry::init(settings.log.format);
    }
    match command {
        Command::Run => {
            let worker = Worker::build(settings).await?;
            let shutdown = vsfleet_contract::process::shutdown_on_signal();
            worker.run_until_stopped(shutdown).await;
        }
        Command::Check => {
            check::run(&settings).await?;
            println!("healthy: host {} heartbeats and Docker answers", settings.worker.host_id);
        }
    }
    Ok(())
}

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vsfleet_scheduler::Scheduler;

/// vsfleet scheduler: emits the periodic jobs (sync, cleanup, purge). Run as
/// many replicas as you like: each period's job is emitted once.
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
    /// Run the scheduler (the default).
    Run,
    /// Health check for a container: exits 0 when NATS accepts the
    /// scheduler's credentials within 5 s, 1 with the reason otherwise. The
    /// scheduler holds no state and may publish only its ticks, so there is
    /// nothing more of its own it could read back.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let settings = cli.config.load_or_exit("vsfleet-scheduler");
    // A check answers in one line (its error, or "healthy"): no log.
    if matches!(command, Command::Run) {
        vsfleet_contract::telemetry::init(settings.log.format);
    }
    match command {
        Command::Run => {
            let scheduler = Scheduler::build(&settings).await?;
            let shutdown = vsfleet_contract::process::shutdown_on_signal();
            scheduler.run_until_stopped(shutdown).await;
        }
        Command::Check => {
            let role = vsfleet_contract::connect::Role::Scheduler;
            tokio::time::timeout(Duration::from_secs(5), vsfleet_contract::connect::connect(&settings, role))
                .await
                .context("NATS did not answer within 5 s")??;
            println!("healthy: NATS at {} accepts the scheduler", settings.nats.url);
        }
    }
    Ok(())
}

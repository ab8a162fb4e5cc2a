use std::path::PathBuf;

use clap::Parser;
use vsfleet_contract::Settings;
use vsfleet_scheduler::Scheduler;

/// vsfleet scheduler: emits the periodic jobs (sync, cleanup, purge). Run as
/// many replicas as you like: each period's job is emitted once.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (also VSFLEET_CONFIG); environment variables
    /// VSFLEET_<SECTION>__<KEY> override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    vsfleet_contract::telemetry::init();
    let settings = Settings::load(cli.config.as_deref())?;
    let scheduler = Scheduler::build(&settings).await?;
    let shutdown = vsfleet_contract::process::shutdown_on_signal();
    scheduler.run_until_stopped(shutdown).await;
    Ok(())
}

use std::path::PathBuf;

use clap::Parser;
use vsfleet_contract::Settings;
use vsfleet_worker::Worker;

/// vsfleet worker: runs the lifecycle jobs of one Docker host.
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
    let worker = Worker::build(settings).await?;
    let shutdown = vsfleet_contract::process::shutdown_on_signal();
    worker.run_until_stopped(shutdown).await;
    Ok(())
}

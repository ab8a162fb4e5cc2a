use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;
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
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    scheduler.run_until_stopped(shutdown).await;
    Ok(())
}

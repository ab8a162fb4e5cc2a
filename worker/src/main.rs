use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;
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
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: no new jobs, finishing running ones");
        stop.cancel();
    });
    worker.run_until_stopped(shutdown).await;
    Ok(())
}

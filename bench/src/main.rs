//! `vsfleet-bench`: each scenario measures vsfleet beside its physical
//! limit in the same run on the same machine, and prints the ratio (the
//! machine is shared and noisy; ratios travel, absolute figures do not).
//! Prints a table and writes the same figures as JSON.
//!
//! ```text
//! scripts/bench                 # builds in release mode, then runs all
//! vsfleet-bench all --json target/bench.json
//! vsfleet-bench drift reconcile
//! vsfleet-bench hosts           # the multi-host rig: not part of all
//! vsfleet-bench curves          # scale curves (reconcile-curve, dispatch-curve, monitor-curve): not part of all
//! ```

mod accept;
mod alloc;
mod cpu;
mod curves;
mod dispatch;
mod drift;
mod footprint;
mod hosts;
mod lifecycle;
mod monitor_curve;
mod reconcile;
mod report;
mod steps;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(about = "vsfleet beside its physical limits, side by side in one run")]
struct Cli {
    /// Scenarios to run (default: all).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench.json")]
    json: PathBuf,
    /// The api's database in accept, dispatch, lifecycle and drift
    /// (reconcile and footprint use a SQLite file of their own). PostgreSQL
    /// needs `TEST_POSTGRES_URL`, which `scripts/bench --database postgres` sets.
    #[arg(long, value_enum, default_value = "sqlite")]
    database: Database,
    /// Run as a worker process whose jobs do nothing, with this
    /// configuration (the dispatch curve starts these).
    #[arg(long, hide = true, value_name = "CONFIG")]
    noop_worker: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Database {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Accept,
    Dispatch,
    Lifecycle,
    Drift,
    Reconcile,
    Footprint,
    /// On the multi-host rig: not part of `all` (it needs the Docker-in-Docker image).
    Hosts,
    /// The scale curves below: not part of `all` (minutes).
    Curves,
    /// Reconcile and a full sync of one host at 1k, 10k and 100k servers: not part of `all`.
    ReconcileCurve,
    /// Dispatch with 1, 2 and 4 worker processes on one host: not part of `all`.
    DispatchCurve,
    /// The container monitor's CPU per round with 50, 100 and 200 running servers: not part of `all`.
    MonitorCurve,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A worker process of the dispatch curve logs errors only and records
    // no steps: it is measured, not measuring.
    steps::install(cli.noop_worker.is_none());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(config) = &cli.noop_worker {
        return dispatch::noop_worker(config).await;
    }
    let postgres = std::env::var(vsfleet_tests::database::POSTGRES_ENV).is_ok();
    match (cli.database, postgres) {
        (Database::Postgres, false) => anyhow::bail!(
            "--database postgres needs {} (scripts/bench --database postgres starts a cluster and sets it)",
            vsfleet_tests::database::POSTGRES_ENV
        ),
        // The tests' harness follows the variable, whatever the flag says.
        (Database::Sqlite, true) => anyhow::bail!(
            "{} is set, so the api would run on PostgreSQL: pass --database postgres, or unset it",
            vsfleet_tests::database::POSTGRES_ENV
        ),
        _ => {}
    }
    eprintln!("database: {:?}", cli.database);
    let all = cli.scenarios.is_empty() || cli.scenarios.contains(&Scenario::All);
    let wants = |s| all || cli.scenarios.contains(&s);
    let mut rows = Vec::new();
    if wants(Scenario::Accept) {
        rows.extend(accept::run().await?);
    }
    if wants(Scenario::Dispatch) {
        rows.extend(dispatch::run().await?);
    }
    if wants(Scenario::Lifecycle) {
        rows.extend(lifecycle::run().await?);
    }
    if wants(Scenario::Drift) {
        rows.extend(drift::run().await?);
    }
    if wants(Scenario::Reconcile) {
        rows.extend(reconcile::run().await?);
    }
    if wants(Scenario::Footprint) {
        rows.extend(footprint::run().await?);
    }
    if cli.scenarios.contains(&Scenario::Hosts) {
        rows.extend(hosts::run().await?);
    }
    let curves = cli.scenarios.contains(&Scenario::Curves);
    if curves || cli.scenarios.contains(&Scenario::DispatchCurve) {
        rows.extend(curves::dispatch_curve().await?);
    }
    if curves || cli.scenarios.contains(&Scenario::ReconcileCurve) {
        rows.extend(curves::reconcile_curve().await?);
    }
    if curves || cli.scenarios.contains(&Scenario::MonitorCurve) {
        rows.extend(monitor_curve::run().await?);
    }
    report::print(&rows);
    report::write_json(&cli.json, &rows)?;
    eprintln!("figures written to {}", cli.json.display());
    Ok(())
}

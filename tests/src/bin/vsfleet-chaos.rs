//! `vsfleet-chaos`: see [`vsfleet_tests::chaos`]. Exits non-zero when an
//! invariant is broken.

use clap::Parser;
use vsfleet_tests::chaos::{self, Config};

/// Runs lifecycle jobs across worker processes while killing workers and
/// the broker at random, then checks the invariants.
#[derive(Parser)]
struct Cli {
    /// Lifecycle jobs to have accepted, creates included.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    #[arg(long, default_value_t = 8)]
    servers: usize,
    /// Worker processes (one host, sharing its queue).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(|| chrono::Utc::now().timestamp_micros() as u64);
    println!("chaos: {} jobs, {} servers, {} workers, seed {seed}", cli.jobs, cli.servers, cli.workers);
    let report = chaos::run(Config { jobs: cli.jobs, servers: cli.servers, workers: cli.workers, seed }).await;
    println!("{report}");
    if report.violations.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

//! A short chaos run (the `vsfleet-chaos` command, small): workers and the
//! broker killed at random while lifecycle jobs run; every invariant holds.

use vsfleet_tests::chaos::{self, Config};

#[tokio::test]
async fn lifecycle_jobs_under_random_kills_keep_every_invariant() {
    let seed = chrono::Utc::now().timestamp_micros() as u64;
    let report = chaos::run(Config { jobs: 30, servers: 4, workers: 2, seed }).await;
    println!("seed {seed}\n{report}");
    assert!(report.violations.is_empty(), "seed {seed}:\n{report}");
    assert_eq!(report.succeeded + report.failed, report.accepted, "{report}");
    assert!(report.worker_kills + report.broker_restarts > 0, "nothing was killed: {report}");
}

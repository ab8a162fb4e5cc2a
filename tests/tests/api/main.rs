//! Integration tests: one binary, real parts. Each test boots the real api
//! and worker against its own nats-server (JetStream), the machine's Docker
//! engine and a SQLite file, and drives them through HTTP and NATS.
//! The test image is built by `scripts/build-test-image` (run by `scripts/test`).

mod helpers {
    pub use vsfleet_tests::app::*;
}

mod accounts;
mod chaos;
mod conventions;
mod crash;
mod delivery;
mod drift;
mod drift_gap;
mod errors;
mod events;
mod failures;
mod health;
mod hygiene;
mod invariants;
mod lifecycle;
mod limits;
mod logs;
mod metrics;
mod monitor;
mod openapi;
mod outage;
mod placement;
mod ports;
mod purge;
mod runbook;
mod schedule;
mod seed;
mod stack;
mod store;
mod trust;
mod ui;

//! The vsfleet api: the HTTP API, the only service that opens the database.
//!
//! - [`app`]: builds and runs everything below from [`Settings`](vsfleet_contract::Settings).
//! - [`http`]: routes, extractors and handlers (thin), and the connection loop with its timeouts.
//! - [`lifecycle`]: the rules: ownership, state checks, job row plus state change in one transaction.
//! - [`dispatch`]: publishing jobs to JetStream and the outbox that republishes unacknowledged ones.
//! - [`inbound`]: the checks of every message heard from NATS; what fails them goes to the dead letters.
//! - [`events`]: recording the workers' events: job phases, drift, inventories.
//! - [`job_events`]: applying a batch of job phases to the rows in a fixed number of statements.
//! - [`reconcile`]: a host's inventory against the database (the periodic sync).
//! - [`schedule`]: the api's periodic jobs: stale-row cleanup and auto-purge.
//! - [`monitor`]: the containers inside each running server.
//! - [`hosts`]: which worker hosts are alive.
//! - [`accounts`]: the rules of users and tokens (who may create, revoke, disable what).
//! - [`activity`]: the activity log: who did what to what, when, and how it ended.
//! - [`redact`]: host paths out of what tenants read.
//! - [`store`]: the database (SQLite or PostgreSQL), the only place that holds SQL, and its typed rows.
//! - [`servers`], [`jobs`], [`users`]: what the api does with those rows (views, payloads, tokens).
//! - [`error`]: the one HTTP error type.

pub mod accounts;
pub mod activity;
pub mod app;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod hosts;
pub mod http;
pub mod inbound;
pub mod job_events;
pub mod jobs;
pub mod lifecycle;
pub mod monitor;
pub mod reconcile;
pub mod redact;
pub mod schedule;
pub mod servers;
pub mod store;
pub mod users;
pub mod watchdog;

pub use app::{AppState, Application};

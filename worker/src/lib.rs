//! The vsfleet worker: one or more per Docker host. It needs only NATS and
//! the local Docker engine.
//!
//! - [`app`]: checks Docker and the runtime, connects, runs the rest.
//! - [`consumer`]: pulls this host's jobs, runs each under the server's lock, reports, acks.
//! - [`control`]: requests answered at once, outside the queue (forced stop, port offer).
//! - [`ports`]: the host ports this host can offer a new server.
//! - [`dead`]: jobs that will never run, copied to the dead-letter stream.
//! - [`ops`]: the lifecycle operations, each idempotent.
//! - [`docker`]: the container of a server: find by name, recognise by labels, create, start, stop, remove.
//! - [`layout`]: every path under the data root, derived from a validated id.
//! - [`stack`]: the system stack: a template rendered into a new server and brought up inside it.
//! - [`lock`]: one job per server at a time across processes (`flock`).
//! - [`report`]: job events to the api; [`publish`]: JetStream publishing with acknowledgement.
//! - [`inventory`]: what the host has, for the periodic sync.
//! - [`watch`]: Docker's event stream, for drift within a second.
//! - [`monitor`]: the containers inside each running server.
//! - [`presence`]: this host in the hosts bucket.
//! - [`error`]: why a job failed and whether a retry can help.
//! - [`health`]: whether Docker answers; the host is degraded while it does not
//!   (also what `/readyz` on `worker.health_listen` reports).
//! - [`metrics`]: the worker's Prometheus metrics.

pub mod app;
pub mod consumer;
pub mod control;
pub mod dead;
pub mod docker;
pub mod error;
pub mod fence;
pub mod health;
pub mod inventory;
pub mod layout;
pub mod lock;
pub mod metrics;
pub mod monitor;
pub mod ops;
pub mod ports;
pub mod presence;
pub mod publish;
pub mod report;
pub mod retry;
pub mod stack;
pub mod watch;

pub use app::Worker;

//! The contract every vsfleet service agrees on, by construction.
//!
//! - [`ids`]: `ServerId` and `JobId`, the only values paths and subjects are built from.
//! - [`name`]: `ServerName`, a display name that can only hold a valid value (seed 000 §3.3).
//! - [`state`]: server and job states, lifecycle actions, and which action each state allows.
//! - [`subjects`]: NATS subject, stream, consumer and bucket names, all derived from one prefix.
//! - [`job`]: the job payload a worker consumes (plain JSON an operator can write by hand).
//! - [`event`]: what workers report back: job phases, observations, host presence.
//! - [`schedule`]: the periodic jobs the scheduler emits (sync, cleanup, purge).
//! - [`labels`]: the Docker labels that re-link a container to its server (seed 001).
//! - [`settings`]: layered configuration shared by the three binaries.
//! - [`connect`], [`permissions`]: authenticated connections to NATS, and what each role may do there.
//! - [`jetstream`]: the streams, consumers and bucket, created by the api and bound by the others.
//! - [`process`], [`telemetry`]: signals, consumer loops and logging, done once for all services.
//! - [`metrics`], [`health`]: Prometheus metrics; the worker's and scheduler's `/metrics`, `/healthz`, `/readyz`.
//! - [`cli`]: the configuration argument, `--version` with the commit, and exit 78 for a bad configuration.

pub mod cli;
#[cfg(any(feature = "sqlx", feature = "rusqlite"))]
pub mod column;
pub mod connect;
pub mod dead;
pub mod domain;
pub mod event;
pub mod health;
pub mod ids;
pub mod jetstream;
pub mod job;
pub mod labels;
pub mod metrics;
pub mod name;
pub mod permissions;
pub mod ports;
pub mod process;
pub mod publish;
pub mod schedule;
pub mod settings;
pub mod state;
pub mod subjects;
pub mod telemetry;
pub mod trace;

pub use domain::DomainName;
pub use event::{
    ContainerState, HostPresence, InnerContainer, InnerContainers, Inventory, JobEvent, JobPhase, KillReply,
    Observation, Observed, PortsReply, PortsRequest, SeenContainer,
};
pub use ids::{JobId, ServerId};
pub use job::{JobRequest, ServerSpec};
pub use name::ServerName;
pub use ports::{MAX_PORTS, PortList, PortRange, PublishedPort};
pub use settings::Settings;
pub use state::{Action, JobStatus, ServerStatus};
pub use subjects::Subjects;

//! What workers report: job phases on `{prefix}.events.{host}.job`, drift
//! on `.observed`, inventories on `.inventory` (JetStream, durable); inner
//! containers on `{prefix}.monitor.{host}` (core NATS: a lost snapshot is
//! replaced by the next); presence in the `{prefix}_hosts` KV bucket.
//!
//! ```text
//! {"job_id": "…", "server_id": 42, "action": "stop", "host": "h1", "attempt": 1,
//!  "at": "2026-11-22T10:00:00Z", "phase": "succeeded",
//!  "observed": {"container": "stopped", "container_id": "…", "data_exists": true, "archived": false}}
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{JobId, ServerId};
use crate::state::Action;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: JobId,
    pub server_id: ServerId,
    pub action: Action,
    pub host: String,
    /// JetStream's delivery count for this attempt (1 on first delivery).
    pub attempt: u64,
    pub at: DateTime<Utc>,
    /// The job message's sequence in the jobs stream. The api checks a job
    /// it did not issue (published by hand) against that message before it
    /// records anything for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_seq: Option<u64>,
    #[serde(flatten)]
    pub phase: JobPhase,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum JobPhase {
    Started,
    Succeeded {
        observed: Observation,
        /// What the action produced, for actions that produce something
        /// (cleanup: the space reclaimed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<serde_json::Value>,
    },
    Failed {
        error: String,
        /// True when retrying cannot help (invalid spec, name clash, poison).
        permanent: bool,
        /// What the host looked like after the failure, when it could be seen.
        #[serde(default)]
        observed: Option<Observation>,
    },
}

/// One server as its host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub container: ContainerState,
    pub container_id: Option<String>,
    /// `data_root/{id}` exists.
    pub data_exists: bool,
    /// At least one `data_root/{id}-deleted-*` archive exists.
    pub archived: bool,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Running,
    /// Created, exited, paused or dead: present but not serving.
    Stopped,
    Absent,
}

/// A change Docker reported for a managed container (start, die, stop,
/// destroy, oom), observed under the server's lock so it never races a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub server_id: ServerId,
    pub host: String,
    pub at: DateTime<Utc>,
    /// The Docker event that prompted the look (`die`, `destroy`, …).
    pub cause: String,
    pub observed: Observation,
}

/// Everything one host has, in parts of bounded size (a host of thousands
/// of servers would not fit in one NATS message). The api reconciles once
/// all `parts` of a `sync_id` arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub host: String,
    pub sync_id: uuid::Uuid,
    pub part: u32,
    pub parts: u32,
    pub at: DateTime<Utc>,
    /// Containers carrying our labels for this host.
    pub containers: Vec<SeenContainer>,
    /// Servers with a live data directory `data_root/{id}`.
    pub data_dirs: Vec<ServerId>,
    /// Servers with at least one archive `data_root/{id}-deleted-*`.
    pub archives: Vec<ServerId>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenContainer {
    pub server_id: ServerId,
    pub container_id: String,
    pub state: ContainerState,
}

/// The containers inside one running server (seed 000 §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InnerContainers {
    pub server_id: ServerId,
    pub host: String,
    pub at: DateTime<Utc>,
    pub containers: Vec<InnerContainer>,
}

/// One line of `docker ps -a` inside a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InnerContainer {
    pub id: String,
    pub image: String,
    pub names: String,
    pub state: String,
    pub status: String,
    pub ports: String,
    pub labels: String,
    pub created: String,
}

/// The answer to a forced stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillReply {
    /// What the host looks like after the kill, or why it could not be done.
    pub result: Result<Observation, String>,
}

/// Asks a host for up to `count` ports of its `worker.port_range` that
/// are not in `exclude` (the ones the api has allocated on it already).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsRequest {
    pub count: u16,
    #[serde(default)]
    pub exclude: Vec<u16>,
}

/// The host's offer, lowest first: ports that no container publishes and
/// that a bind test on the host found free; or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortsReply {
    pub result: Result<Vec<u16>, String>,
}

/// A worker's entry in the hosts bucket, refreshed every heartbeat; the
/// bucket's max age drops hosts that stop refreshing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostPresence {
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
    pub version: String,
    /// Why the host cannot do its work right now (Docker unreachable), if
    /// it cannot. A degraded host takes no new servers and fetches no jobs;
    /// its jobs wait in the queue until it recovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// The most servers the host takes (`worker.capacity`); none from a
    /// worker older than the setting, which then has no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_flat_json() {
        let ev = JobEvent {
            job_id: JobId::new(),
            server_id: ServerId::new(3).unwrap(),
            action: Action::Stop,
            host: "h".into(),
            attempt: 1,
            at: Utc::now(),
            job_seq: Some(4),
            phase: JobPhase::Failed { error: "boom".into(), permanent: true, observed: None },
        };
        let json: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["phase"], "failed");
        assert_eq!(json["error"], "boom");
        assert_eq!(serde_json::from_value::<JobEvent>(json).unwrap(), ev);
    }
}

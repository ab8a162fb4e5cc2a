//! The job payload on `{prefix}.jobs.{host}.{action}`. The action is the
//! subject's last token; the body is plain JSON an operator can write:
//!
//! ```text
//! nats pub vs.jobs.host1.stop '{"server_id": 42}'
//! ```
//!
//! The api also sends `job_id` (equal to the `Nats-Msg-Id` header), the
//! `deadline` past which the job must not run, and, for create and start,
//! the `spec` the container is built from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{JobId, ServerId};
use crate::ports::{PublishedPort, check_ports, has_duplicates};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub server_id: ServerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServerSpec>,
    /// When the api's watchdog fails the job if it has not finished. A
    /// worker does not start a job past it, and gives up one that runs
    /// into it, so a late delivery never acts on a server whose job the
    /// api already reported failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Grows with every job the api accepts for the server (its creation
    /// time in microseconds; the api accepts one job per server at a time,
    /// so a newer job was always created after an older one finished). A
    /// host runs no job older than one it has already started for the
    /// server: a stale redelivery (its worker was cut off after the work,
    /// the api recorded the outcome and accepted the next job) cannot undo
    /// a newer job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<i64>,
    /// Purge only: forget the server but leave its archives on disk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_data: bool,
    /// Purge only: the server is failed, not deleted, so live data is
    /// expected: it is archived first (as a delete does), then purged with
    /// the archives. Without it a purge refuses a server with live data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live_data: bool,
}

/// What a server's container is built from, beyond the worker's own
/// configuration (image, runtime, network).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// CPU limit in cores (fractions allowed); `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in MiB; `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// TCP ports of the server published on its host, each with the host
    /// port the api allocated for it (seed 002's port allocation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
}

/// The hard bounds of any spec, whatever the configuration: what Docker
/// accepts and what the arithmetic below can hold.
pub const MAX_CPUS: f64 = 1024.0;
pub const MAX_MEMORY_MB: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidSpec {
    #[error("cpus must be between 0.01 and {max}")]
    Cpus { max: f64 },
    #[error("memory_mb must be between 6 and {max} (Docker's minimum is 6 MiB)")]
    Memory { max: u64 },
    #[error("{0}")]
    Ports(String),
}

impl InvalidSpec {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            InvalidSpec::Cpus { .. } => "cpus",
            InvalidSpec::Memory { .. } => "memory_mb",
            InvalidSpec::Ports(_) => "ports",
        }
    }
}

impl ServerSpec {
    /// Within the hard bounds: what a worker checks before it acts on a spec.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        self.validate_within(MAX_CPUS, MAX_MEMORY_MB)
    }

    /// Within the hard bounds and the given maxima (the api's configured ones).
    pub fn validate_within(&self, max_cpus: f64, max_memory_mb: u64) -> Result<(), InvalidSpec> {
        let max_cpus = max_cpus.min(MAX_CPUS);
        let max_memory_mb = max_memory_mb.min(MAX_MEMORY_MB);
        if let Some(c) = self.cpus
            && !(0.01..=max_cpus).contains(&c)
        {
            return Err(InvalidSpec::Cpus { max: max_cpus });
        }
        if let Some(m) = self.memory_mb
            && !(6..=max_memory_mb).contains(&m)
        {
            return Err(InvalidSpec::Memory { max: max_memory_mb });
        }
        check_ports(self.ports.iter().map(|p| p.container))?;
        let hosts = self.ports.iter().map(|p| p.host);
        if hosts.clone().any(|p| p == 0) || has_duplicates(hosts) {
            return Err(InvalidSpec::Ports("host ports must be 1 to 65535 and distinct".into()));
        }
        Ok(())
    }

    /// Docker's `NanoCpus`; `None` for no limit or a value out of bounds.
    pub fn nano_cpus(&self) -> Option<i64> {
        self.cpus.filter(|c| (0.01..=MAX_CPUS).contains(c)).map(|c| (c * 1e9).round() as i64)
    }

    /// Docker's `Memory`, in bytes; `None` for no limit or a value that
    /// does not fit (checked arithmetic: never a wrap to 0, i.e. no limit).
    pub fn memory_bytes(&self) -> Option<i64> {
        self.memory_mb.and_then(|m| m.checked_mul(1024 * 1024)).and_then(|b| i64::try_from(b).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_written_payload_needs_only_the_server_id() {
        let job: JobRequest = serde_json::from_str(r#"{"server_id": 42}"#).unwrap();
        assert_eq!(job.server_id.get(), 42);
        assert!(job.job_id.is_none() && job.spec.is_none() && job.deadline.is_none());
        assert!(serde_json::from_str::<JobRequest>(r#"{"server_id": 0}"#).is_err());
        assert!(serde_json::from_str::<JobRequest>(r#"{"server": 1}"#).is_err());
    }

    #[test]
    fn limits_are_converted_for_docker() {
        let spec = ServerSpec { cpus: Some(1.5), memory_mb: Some(512), ports: vec![] };
        assert_eq!(spec.nano_cpus(), Some(1_500_000_000));
        assert_eq!(spec.memory_bytes(), Some(512 * 1024 * 1024));
        assert_eq!(
            ServerSpec { cpus: Some(0.0), memory_mb: None, ..Default::default() }.validate().unwrap_err().field(),
            "cpus"
        );
        assert_eq!(
            ServerSpec { cpus: None, memory_mb: Some(1), ..Default::default() }.validate().unwrap_err().field(),
            "memory_mb"
        );
        let huge = ServerSpec { cpus: None, memory_mb: Some(17_592_186_044_416), ..Default::default() };
        assert_eq!(huge.validate().unwrap_err().field(), "memory_mb");
        assert_eq!(huge.memory_bytes(), None);
        assert_eq!(
            ServerSpec { cpus: Some(f64::NAN), memory_mb: None, ..Default::default() }.validate().unwrap_err().field(),
            "cpus"
        );
        assert_eq!(
            ServerSpec { cpus: Some(2.0), memory_mb: None, ..Default::default() }
                .validate_within(1.0, 64)
                .unwrap_err()
                .field(),
            "cpus"
        );
    }

    #[test]
    fn ports_are_few_in_range_and_distinct() {
        let port = |container, host| PublishedPort { container, host };
        let spec = |ports| ServerSpec { ports, ..Default::default() };
        assert!(spec(vec![port(22, 20000), port(80, 20001)]).validate().is_ok());
        assert_eq!(spec(vec![port(22, 20000), port(22, 20001)]).validate().unwrap_err().field(), "ports");
        assert_eq!(spec(vec![port(22, 20000), port(80, 20000)]).validate().unwrap_err().field(), "ports");
        assert_eq!(spec(vec![port(0, 20000)]).validate().unwrap_err().field(), "ports");
        assert_eq!(spec(vec![port(22, 0)]).validate().unwrap_err().field(), "ports");
        let job: JobRequest = serde_json::from_str(r#"{"server_id": 1, "keep_data": true}"#).unwrap();
        assert!(job.keep_data);
        let spec: ServerSpec = serde_json::from_str(r#"{"ports": [{"container": 22, "host": 20000}]}"#).unwrap();
        assert_eq!(spec.ports, vec![port(22, 20000)]);
        assert!(serde_json::from_str::<ServerSpec>(r#"{"ports": [{"container": 70000, "host": 1}]}"#).is_err());
    }
}

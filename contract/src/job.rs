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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSpec {
    #[error("cpus must be between 0.01 and 1024")]
    Cpus,
    #[error("memory_mb must be between 6 and 4194304 (Docker's minimum is 6 MiB)")]
    Memory,
}

impl ServerSpec {
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        if let Some(c) = self.cpus
            && !(0.01..=1024.0).contains(&c)
        {
            return Err(InvalidSpec::Cpus);
        }
        if let Some(m) = self.memory_mb
            && !(6..=4 * 1024 * 1024).contains(&m)
        {
            return Err(InvalidSpec::Memory);
        }
        Ok(())
    }

    /// Docker's `NanoCpus`.
    pub fn nano_cpus(&self) -> Option<i64> {
        self.cpus.map(|c| (c * 1e9).round() as i64)
    }

    /// Docker's `Memory`, in bytes.
    pub fn memory_bytes(&self) -> Option<i64> {
        self.memory_mb.map(|m| (m * 1024 * 1024) as i64)
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
        let spec = ServerSpec { cpus: Some(1.5), memory_mb: Some(512) };
        assert_eq!(spec.nano_cpus(), Some(1_500_000_000));
        assert_eq!(spec.memory_bytes(), Some(512 * 1024 * 1024));
        assert_eq!(ServerSpec { cpus: Some(0.0), memory_mb: None }.validate(), Err(InvalidSpec::Cpus));
        assert_eq!(ServerSpec { cpus: None, memory_mb: Some(1) }.validate(), Err(InvalidSpec::Memory));
    }
}

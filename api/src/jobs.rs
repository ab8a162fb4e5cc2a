//! Jobs: what a worker receives, and how a job reads to its viewer. The
//! rows are [`crate::store::Job`].

use chrono::{DateTime, Utc};
use vsfleet_contract::{JobId, JobRequest, ServerId, ServerSpec};

pub use crate::store::{Job, NewJob};

impl Job {
    /// The job as `user` may read it: without host paths in `error` unless
    /// they are an admin.
    pub fn for_viewer(mut self, user: &crate::store::User) -> Self {
        if !user.is_admin {
            crate::redact::optional(&mut self.error);
            if let Some(result) = self.result.as_mut() {
                crate::redact::json(&mut result.0);
            }
        }
        self
    }
}

/// How a purge treats the server's data (see [`JobRequest`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Purge {
    pub keep_data: bool,
    pub live_data: bool,
}

/// What a worker receives: the exact JSON published, kept in the row so the
/// outbox republishes it unchanged. The fence is the creation time in
/// microseconds: later jobs of a server carry larger fences.
pub fn payload(
    server_id: ServerId,
    id: JobId,
    spec: Option<ServerSpec>,
    created_at: DateTime<Utc>,
    limit: std::time::Duration,
    purge: Purge,
) -> String {
    let request = JobRequest {
        server_id,
        job_id: Some(id),
        spec,
        deadline: Some(created_at + limit),
        fence: Some(created_at.timestamp_micros()),
        keep_data: purge.keep_data,
        live_data: purge.live_data,
    };
    serde_json::to_string(&request).expect("a job request is plain data and always serializes")
}

/// When a new job of a server is created: now, or just after its newest
/// job when that one is not older (another api replica's clock ran ahead),
/// so that fences grow whichever replica accepts the job.
pub fn created_at(last_job_at: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let now = crate::store::now();
    match last_job_at {
        Some(last) if last >= now => last + chrono::Duration::microseconds(1),
        _ => now,
    }
}

/// Whether a stored job is a purge that keeps the archives.
pub fn keeps_data(job: &Job) -> bool {
    serde_json::from_str::<JobRequest>(&job.payload).is_ok_and(|r| r.keep_data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_job_is_created_after_the_servers_newest_even_from_a_slow_clock() {
        let ahead = crate::store::now() + chrono::Duration::seconds(5);
        assert_eq!(created_at(Some(ahead)), ahead + chrono::Duration::microseconds(1));
        let behind = crate::store::now() - chrono::Duration::seconds(5);
        assert!(created_at(Some(behind)) > behind + chrono::Duration::seconds(4));
        assert!(created_at(None) <= crate::store::now());
    }
}

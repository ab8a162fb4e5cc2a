//! The server state machine and the lifecycle actions (seed 004's state set).
//!
//! The database is the source of truth (seed 001); Docker is its runtime
//! image. The api checks `Action::allowed_from` before it accepts a request;
//! the server's status after a job is derived from what the worker observed
//! (`ServerStatus::after`), so a retried or hand-published job converges too.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{ContainerState, Observation};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerStatus {
    Creating,
    Running,
    Stopped,
    /// Container gone, configuration and data kept: start recreates it.
    Missing,
    Failed,
    Deleting,
    /// Soft-deleted: data archived, restorable until `purge_after`.
    Deleted,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Start,
    Stop,
    Restart,
    Delete,
    Restore,
    Purge,
    /// `docker system prune -a -f --volumes` inside a running server (seed 000 §9.2).
    Cleanup,
    /// Remove a stopped container that carries our labels but belongs to no
    /// live server (an orphan). Never its data. Not an API action: the api
    /// sends it after a sync when `api.remove_orphans` is on.
    Reap,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Create,
        Action::Start,
        Action::Stop,
        Action::Restart,
        Action::Delete,
        Action::Restore,
        Action::Purge,
        Action::Cleanup,
        Action::Reap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Delete => "delete",
            Action::Restore => "restore",
            Action::Purge => "purge",
            Action::Cleanup => "cleanup",
            Action::Reap => "reap",
        }
    }

    /// Whether a server in `status` accepts this action. `Create` is never
    /// allowed on an existing server: it makes a new one.
    pub fn allowed_from(self, status: ServerStatus) -> bool {
        use ServerStatus::*;
        match self {
            Action::Create => false,
            // A failed create is retried by start: it recreates from the spec.
            Action::Start => matches!(status, Stopped | Missing | Failed),
            Action::Stop => matches!(status, Running),
            Action::Restart => matches!(status, Running | Stopped),
            Action::Delete => matches!(status, Running | Stopped | Missing | Failed),
            Action::Restore => matches!(status, Deleted),
            // A failed server's live data is archived and purged with it.
            Action::Purge => matches!(status, Deleted | Failed),
            Action::Cleanup => matches!(status, Running),
            Action::Reap => false,
        }
    }

    /// Every status from which a server accepts this action.
    pub fn allowed_statuses(self) -> Vec<ServerStatus> {
        ServerStatus::ALL.into_iter().filter(|s| self.allowed_from(*s)).collect()
    }

    /// The status a server shows while this action's job is in flight, if it
    /// changes at all (seed 004: `creating`, `deleting`).
    pub fn in_flight_status(self) -> Option<ServerStatus> {
        match self {
            Action::Create => Some(ServerStatus::Creating),
            Action::Delete => Some(ServerStatus::Deleting),
            _ => None,
        }
    }
}

impl ServerStatus {
    pub const ALL: [ServerStatus; 7] = [
        ServerStatus::Creating,
        ServerStatus::Running,
        ServerStatus::Stopped,
        ServerStatus::Missing,
        ServerStatus::Failed,
        ServerStatus::Deleting,
        ServerStatus::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Creating => "creating",
            ServerStatus::Running => "running",
            ServerStatus::Stopped => "stopped",
            ServerStatus::Missing => "missing",
            ServerStatus::Failed => "failed",
            ServerStatus::Deleting => "deleting",
            ServerStatus::Deleted => "deleted",
        }
    }

    /// The status after a job of `action` ended, from what the worker saw on
    /// the host. `None` for a successful purge: the row goes away.
    pub fn after(action: Action, succeeded: bool, seen: &Observation) -> Option<ServerStatus> {
        if succeeded {
            match action {
                Action::Purge => return None,
                Action::Delete => return Some(ServerStatus::Deleted),
                _ => {}
            }
        } else if action == Action::Create {
            return Some(ServerStatus::Failed);
        }
        Some(match seen.container {
            ContainerState::Running => ServerStatus::Running,
            ContainerState::Stopped => ServerStatus::Stopped,
            ContainerState::Absent if seen.data_exists => ServerStatus::Missing,
            ContainerState::Absent if seen.archived => ServerStatus::Deleted,
            ContainerState::Absent => ServerStatus::Failed,
        })
    }
}

impl ServerStatus {
    /// The status a server should have given what its host shows, outside
    /// any job (Docker's event stream, a sync); `None` to leave it. Servers
    /// in a job's transient state, and deleted ones, are left alone; a
    /// failed server stays failed until a container shows up.
    pub fn drifted(self, seen: ContainerState) -> Option<ServerStatus> {
        use ServerStatus::*;
        let next = match (self, seen) {
            (Creating | Deleting | Deleted, _) => return None,
            (_, ContainerState::Running) => Running,
            (_, ContainerState::Stopped) => Stopped,
            (Failed, ContainerState::Absent) => return None,
            (_, ContainerState::Absent) => Missing,
        };
        (next != self).then_some(next)
    }
}

/// What the rules say of a server once a job of it ended: its status, and
/// the deletion times a deleted server carries. The api applies this and
/// decides nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The row goes away (a successful purge).
    Gone,
    Becomes(ServerStatus),
}

impl ServerStatus {
    /// The status after a job of `action` ended (`succeeded` or not), from
    /// what the worker saw (`None` when it could not look). Without an
    /// observation a failed create is a failed server, a transient state
    /// cannot stay, and the rest stays.
    pub fn after_job(self, action: Action, succeeded: bool, seen: Option<&Observation>) -> Outcome {
        let next = match seen {
            Some(seen) => ServerStatus::after(action, succeeded, seen),
            None if action == Action::Create => Some(ServerStatus::Failed),
            None => Some(match self {
                ServerStatus::Creating | ServerStatus::Deleting => ServerStatus::Failed,
                other => other,
            }),
        };
        next.map_or(Outcome::Gone, Outcome::Becomes)
    }

    /// The status a sync leaves a server in given its container on the
    /// host (`Absent` when there is none); `None` to leave the row as it
    /// is, container and data included: a server in a job's transient
    /// state, and a deleted one, are the jobs' to change.
    pub fn synced(self, seen: ContainerState) -> Option<ServerStatus> {
        match self {
            ServerStatus::Creating | ServerStatus::Deleting | ServerStatus::Deleted => None,
            other => Some(other.drifted(seen).unwrap_or(other)),
        }
    }

    /// Whether a server in this status keeps the container id it had when
    /// its host shows none (a failed server keeps it, for the operator).
    pub fn keeps_container_id(self) -> bool {
        self == ServerStatus::Failed
    }

    /// Whether the server occupies a place on its host and can have inner
    /// containers: everything but deleted and being deleted (seed 000
    /// §5.2: a deleted server's inner containers go with it).
    pub fn is_live(self) -> bool {
        !matches!(self, ServerStatus::Deleted | ServerStatus::Deleting)
    }

    /// Whether the containers labelled with this server's id are its own:
    /// those of a deleted server (or of no server) are orphans.
    pub fn owns_its_containers(self) -> bool {
        self != ServerStatus::Deleted
    }

    /// Whether it can be force-stopped: a container may be there to kill.
    pub fn may_force_stop(self) -> bool {
        self.is_live()
    }

    /// Whether it can be renamed: anything but a deleted server.
    pub fn may_rename(self) -> bool {
        self != ServerStatus::Deleted
    }
}

impl Outcome {
    /// Whether the server's inner containers go (it is gone or deleted).
    pub fn clears_inner_containers(self) -> bool {
        matches!(self, Outcome::Gone | Outcome::Becomes(ServerStatus::Deleted))
    }
}

/// When a deleted server was deleted and when it is purged: the first
/// deletion time is kept (a repeated delete does not restart the clock),
/// and the purge comes `retention` after it. Nothing for other statuses.
pub fn deletion_times(
    status: ServerStatus,
    deleted_at: Option<DateTime<Utc>>,
    purge_after: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
    retention: chrono::Duration,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    if status != ServerStatus::Deleted {
        return (None, None);
    }
    let deleted_at = deleted_at.unwrap_or(at);
    (Some(deleted_at), Some(purge_after.unwrap_or(deleted_at + retention)))
}

/// `Display` and `FromStr` from `as_str` and `ALL`, so adding a variant
/// cannot leave its text behind.
macro_rules! text_enum {
    ($ty:ty, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue { what: $what, value: s.to_owned() })
            }
        }
    };
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown {what} {value:?}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

impl JobStatus {
    pub const ALL: [JobStatus; 4] = [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded, JobStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }
}

text_enum!(Action, "action");
text_enum!(ServerStatus, "server status");
text_enum!(JobStatus, "job status");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_without_an_observation_fails_a_create_and_a_transient_state_and_keeps_the_rest() {
        use ServerStatus::*;
        assert_eq!(Creating.after_job(Action::Create, false, None), Outcome::Becomes(Failed));
        assert_eq!(Deleting.after_job(Action::Delete, false, None), Outcome::Becomes(Failed));
        assert_eq!(Running.after_job(Action::Stop, false, None), Outcome::Becomes(Running));
        let gone =
            Observation { container: ContainerState::Absent, container_id: None, data_exists: false, archived: false };
        assert_eq!(Deleted.after_job(Action::Purge, true, Some(&gone)), Outcome::Gone);
        assert!(Outcome::Gone.clears_inner_containers() && Outcome::Becomes(Deleted).clears_inner_containers());
        assert!(!Outcome::Becomes(Stopped).clears_inner_containers());
    }

    #[test]
    fn a_sync_follows_the_container_but_leaves_transient_and_deleted_servers_and_keeps_a_failed_one() {
        use ServerStatus::*;
        assert_eq!(Running.synced(ContainerState::Absent), Some(Missing));
        assert_eq!(Stopped.synced(ContainerState::Stopped), Some(Stopped), "unchanged, still synced (data may move)");
        assert_eq!(Failed.synced(ContainerState::Absent), Some(Failed));
        for status in [Creating, Deleting, Deleted] {
            assert_eq!(status.synced(ContainerState::Running), None, "{status}");
        }
        assert!(Failed.keeps_container_id() && !Missing.keeps_container_id());
    }

    #[test]
    fn only_live_servers_are_force_stopped_and_all_but_deleted_ones_renamed() {
        for status in ServerStatus::ALL {
            assert_eq!(status.may_force_stop(), !matches!(status, ServerStatus::Deleted | ServerStatus::Deleting));
            assert_eq!(status.may_rename(), status != ServerStatus::Deleted);
            assert_eq!(status.owns_its_containers(), status != ServerStatus::Deleted);
        }
    }

    #[test]
    fn a_deleted_server_keeps_its_first_deletion_time_and_is_purged_after_the_retention() {
        let (first, later) = (DateTime::from_timestamp(1_000, 0).unwrap(), DateTime::from_timestamp(2_000, 0).unwrap());
        let week = chrono::Duration::days(7);
        assert_eq!(deletion_times(ServerStatus::Deleted, None, None, first, week), (Some(first), Some(first + week)));
        assert_eq!(
            deletion_times(ServerStatus::Deleted, Some(first), Some(first + week), later, week),
            (Some(first), Some(first + week))
        );
        assert_eq!(deletion_times(ServerStatus::Stopped, Some(first), Some(first), later, week), (None, None));
    }

    fn seen(container: ContainerState, data_exists: bool, archived: bool) -> Observation {
        Observation { container, container_id: None, data_exists, archived }
    }

    #[test]
    fn every_status_and_action_round_trips_through_text() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>().unwrap(), a);
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
        for s in ServerStatus::ALL {
            assert_eq!(s.as_str().parse::<ServerStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("reboot".parse::<Action>().is_err());
    }

    #[test]
    fn allowed_statuses_are_those_an_action_is_allowed_from() {
        assert_eq!(Action::Stop.allowed_statuses(), [ServerStatus::Running]);
        assert_eq!(Action::Restore.allowed_statuses(), [ServerStatus::Deleted]);
        assert!(Action::Create.allowed_statuses().is_empty());
    }

    #[test]
    fn transitions_follow_the_seed_state_machine() {
        use ServerStatus::*;
        assert!(Action::Stop.allowed_from(Running));
        assert!(!Action::Stop.allowed_from(Stopped));
        assert!(Action::Start.allowed_from(Missing));
        assert!(!Action::Start.allowed_from(Deleted));
        assert!(!Action::Delete.allowed_from(Creating));
        assert!(!Action::Delete.allowed_from(Deleted));
        assert!(Action::Restore.allowed_from(Deleted));
        assert!(!Action::Purge.allowed_from(Running));
    }

    #[test]
    fn drift_follows_the_container_but_never_a_job_or_a_deleted_server() {
        use ServerStatus::*;
        assert_eq!(Running.drifted(ContainerState::Absent), Some(Missing));
        assert_eq!(Running.drifted(ContainerState::Stopped), Some(Stopped));
        assert_eq!(Stopped.drifted(ContainerState::Running), Some(Running));
        assert_eq!(Running.drifted(ContainerState::Running), None);
        assert_eq!(Missing.drifted(ContainerState::Running), Some(Running));
        assert_eq!(Failed.drifted(ContainerState::Absent), None);
        assert_eq!(Creating.drifted(ContainerState::Absent), None);
        assert_eq!(Deleting.drifted(ContainerState::Running), None);
        assert_eq!(Deleted.drifted(ContainerState::Running), None);
    }

    #[test]
    fn status_after_a_job_follows_the_host() {
        use ServerStatus::*;
        let running = seen(ContainerState::Running, true, false);
        let gone = seen(ContainerState::Absent, true, false);
        assert_eq!(ServerStatus::after(Action::Start, true, &running), Some(Running));
        assert_eq!(ServerStatus::after(Action::Stop, true, &gone), Some(Missing));
        assert_eq!(ServerStatus::after(Action::Create, false, &running), Some(Failed));
        assert_eq!(
            ServerStatus::after(Action::Delete, true, &seen(ContainerState::Absent, false, true)),
            Some(Deleted)
        );
        assert_eq!(ServerStatus::after(Action::Purge, true, &gone), None);
        assert_eq!(
            ServerStatus::after(Action::Delete, false, &seen(ContainerState::Stopped, true, false)),
            Some(Stopped)
        );
    }

    #[test]
    fn only_create_and_delete_show_a_status_of_their_own_while_in_flight() {
        for action in Action::ALL {
            let want = match action {
                Action::Create => Some(ServerStatus::Creating),
                Action::Delete => Some(ServerStatus::Deleting),
                _ => None,
            };
            assert_eq!(action.in_flight_status(), want, "{action}");
        }
    }

    #[test]
    fn a_server_whose_container_is_gone_is_missing_deleted_or_failed_by_its_data() {
        use ServerStatus::*;
        let archived_only = seen(ContainerState::Absent, false, true);
        let nothing = seen(ContainerState::Absent, false, false);
        let both = seen(ContainerState::Absent, true, true);
        // Not a delete or a purge: what is on disk decides.
        assert_eq!(ServerStatus::after(Action::Start, false, &archived_only), Some(Deleted));
        assert_eq!(ServerStatus::after(Action::Start, false, &nothing), Some(Failed));
        assert_eq!(ServerStatus::after(Action::Restore, true, &both), Some(Missing));
        assert_eq!(ServerStatus::after(Action::Stop, true, &seen(ContainerState::Stopped, true, false)), Some(Stopped));
        // A delete that succeeded is deleted, whatever is left to see.
        assert_eq!(ServerStatus::after(Action::Delete, true, &nothing), Some(Deleted));
        // A failed purge leaves the server as the host shows it.
        assert_eq!(ServerStatus::after(Action::Purge, false, &archived_only), Some(Deleted));
    }

    #[test]
    fn job_statuses_round_trip_and_only_outcomes_are_finished() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        let finished: Vec<_> = JobStatus::ALL.into_iter().filter(|s| s.is_finished()).collect();
        assert_eq!(finished, [JobStatus::Succeeded, JobStatus::Failed]);
    }
}

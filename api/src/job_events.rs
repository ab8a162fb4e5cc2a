//! Recording a batch of job events in one write transaction: the
//! job and server rows the batch touches are read once, the events are
//! applied to them in memory in delivery order, and each changed row is
//! written once. Through sqlx, one statement per event (three or four for
//! an outcome) made this the limit of end-to-end dispatch, each statement
//! being a round trip to sqlx's connection thread; on the writer a
//! statement costs microseconds, and the batch shares the requests'
//! transaction, which keeps the read, the changes and the writes atomic.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use vsfleet_contract::state::{Outcome, deletion_times};
use vsfleet_contract::{
    Action, ContainerState, JobEvent, JobId, JobPhase, JobStatus, Observation, ServerId, ServerStatus,
};

use crate::store::{Job, NewJob, Server, StoreError, Tx};

/// Why an event was not applied. Nothing of a rejected event is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A job the api neither issued nor recorded: the caller checks it
    /// against the jobs stream ([`crate::inbound::Inbound::verify_hand_job`])
    /// and records it again with the job among `hand_jobs`, or rejects it.
    UnknownJob,
    /// The event contradicts its job or its server.
    Contradicts(String),
}

/// Applies `events` in order inside the caller's transaction, except those
/// that fail the checks against their job and server rows, which are
/// returned by index. Applying an event twice changes nothing: a finished
/// job ignores later events. `hand_jobs` are jobs published by hand whose
/// message was verified: their first event creates their row.
pub async fn record(
    tx: &mut Tx<'_>,
    events: &[JobEvent],
    retention: chrono::Duration,
    hand_jobs: &HashSet<JobId>,
) -> Result<Vec<(usize, Rejection)>, StoreError> {
    let mut ids: Vec<JobId> = events.iter().map(|ev| ev.job_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let jobs = tx.jobs_by_ids(&ids).await?.into_iter().map(|job| (job.id, job)).collect();
    let mut server_ids: Vec<ServerId> =
        events.iter().filter(|ev| !matches!(ev.phase, JobPhase::Started)).map(|ev| ev.server_id).collect();
    server_ids.sort_unstable();
    server_ids.dedup();
    let servers = tx.servers_by_ids(&server_ids).await?.into_iter().map(|s| (s.id, s)).collect();

    let mut rows = Rows { jobs, servers, ..Default::default() };
    let mut rejected = Vec::new();
    for (index, ev) in events.iter().enumerate() {
        let span = tracing::info_span!("event", job_id = %ev.job_id, server_id = %ev.server_id, action = %ev.action);
        let _guard = span.enter();
        if let Err(why) = rows.apply(ev, retention, hand_jobs) {
            rejected.push((index, why));
        }
    }

    let new: Vec<&Job> = rows.new_jobs.iter().map(|id| &rows.jobs[id]).collect();
    let changed: Vec<&Job> =
        rows.changed_jobs.iter().filter(|id| !rows.new_jobs.contains(*id)).map(|id| &rows.jobs[id]).collect();
    tx.insert_jobs(&new).await?;
    tx.update_job_progress(&changed).await?;
    let cleared: Vec<ServerId> = rows.cleared.iter().copied().collect();
    tx.clear_containers(&cleared).await?;
    tx.clear_domains(&cleared).await?;
    tx.delete_servers(&rows.purged).await?;
    let servers: Vec<&Server> = rows.changed_servers.iter().filter_map(|id| rows.servers.get(id)).collect();
    tx.update_server_outcome(&servers).await?;
    for entry in &rows.outcomes {
        tx.record_activity(entry).await?;
    }
    Ok(rejected)
}

/// The rows a batch touches, as the events leave them.
#[derive(Default)]
struct Rows {
    jobs: HashMap<JobId, Job>,
    /// A purged server is removed, so later events find no row, as they would in the table.
    servers: HashMap<ServerId, Server>,
    new_jobs: BTreeSet<JobId>,
    changed_jobs: BTreeSet<JobId>,
    changed_servers: BTreeSet<ServerId>,
    /// Servers whose inner containers' rows go (deleted or purged).
    cleared: BTreeSet<ServerId>,
    purged: Vec<ServerId>,
    /// The activity log's lines for the jobs that ended in this batch.
    outcomes: Vec<crate::activity::Entry>,
}

impl Rows {
    fn apply(
        &mut self,
        ev: &JobEvent,
        retention: chrono::Duration,
        hand_jobs: &HashSet<JobId>,
    ) -> Result<(), Rejection> {
        let id = ev.job_id;
        match self.jobs.get(&id) {
            Some(job) => matches_job(job, ev)?,
            None if hand_jobs.contains(&ev.job_id) => {}
            None => return Err(Rejection::UnknownJob),
        }
        if self.jobs.get(&id).is_some_and(|job| job.status.is_finished()) {
            return Ok(()); // a late or repeated event
        }
        if !matches!(ev.phase, JobPhase::Started) {
            // A job published by hand cannot ask to keep the archives.
            let keep_data = self.jobs.get(&id).is_some_and(crate::jobs::keeps_data);
            self.check_server(ev, keep_data)?;
        }
        let job = self.jobs.entry(id).or_insert_with(|| {
            // A job published by hand: it shows in the API from its first event.
            tracing::info!("recorded a job published directly on NATS");
            self.new_jobs.insert(id);
            Job::queued(NewJob {
                id: ev.job_id,
                server_id: ev.server_id,
                action: ev.action,
                host: ev.host.clone(),
                origin: "nats",
                payload: "{}".to_owned(),
                requested_by: None,
                created_at: ev.at,
            })
        });
        self.changed_jobs.insert(id);
        let attempt = ev.attempt as i64;
        job.attempts = job.attempts.max(attempt);
        job.started_at = job.started_at.or(Some(ev.at));
        job.published_at = job.published_at.or(Some(ev.at));
        let requested_by = job.requested_by;
        let result = match &ev.phase {
            JobPhase::Started => {
                job.status = JobStatus::Running;
                return Ok(());
            }
            JobPhase::Succeeded { detail, .. } => {
                finish(job, ev.at, JobStatus::Succeeded, None, detail.clone());
                "succeeded".to_owned()
            }
            JobPhase::Failed { error, .. } => {
                finish(job, ev.at, JobStatus::Failed, Some(error), None);
                format!("failed: {error}")
            }
        };
        // Whose log it belongs to: the requester, else the server's owner
        // (read before a purge removes the row).
        let owner = requested_by.or_else(|| self.servers.get(&ev.server_id).map(|s| s.owner_id));
        let entry = crate::activity::Entry::new(
            owner,
            format!("host {}", ev.host),
            ev.action.as_str(),
            format!("server:{}", ev.server_id),
            result,
        );
        self.outcomes.push(entry.with_detail(format!("job {}", ev.job_id)));
        match &ev.phase {
            JobPhase::Started => {}
            JobPhase::Succeeded { observed, detail } => {
                // A job can succeed with something its owner should know (a
                // system stack that did not start): it is the server's last error.
                let warning = detail.as_ref().and_then(warning_of);
                self.record_server(ev, true, Some(observed), warning.as_deref(), retention)
            }
            JobPhase::Failed { error, observed, .. } => {
                self.record_server(ev, false, observed.as_ref(), Some(error), retention)
            }
        }
        Ok(())
    }

    /// An outcome may speak only for a server of the reporting host, and a
    /// purge may report success only when nothing of the server is left
    /// (but its archives, for a purge that keeps them).
    fn check_server(&self, ev: &JobEvent, keep_data: bool) -> Result<(), Rejection> {
        if let Some(server) = self.servers.get(&ev.server_id)
            && server.host != ev.host
        {
            return Err(Rejection::Contradicts(format!(
                "server {} lives on host {}, not on the reporting host {}",
                ev.server_id, server.host, ev.host
            )));
        }
        // A purge removes a deleted server, or a failed one: never a server
        // the api knows as running, whatever the host reports.
        if let (Action::Purge, JobPhase::Succeeded { .. }, Some(server)) =
            (ev.action, &ev.phase, self.servers.get(&ev.server_id))
            && !matches!(server.status, ServerStatus::Deleted | ServerStatus::Failed)
        {
            return Err(Rejection::Contradicts(format!(
                "a purge reported success for server {} that is {}",
                ev.server_id, server.status
            )));
        }
        if let (Action::Purge, JobPhase::Succeeded { observed, .. }) = (ev.action, &ev.phase)
            && (observed.container != ContainerState::Absent
                || observed.data_exists
                || (observed.archived && !keep_data))
        {
            return Err(Rejection::Contradicts(format!(
                "a purge reported success while the host still has {observed:?}"
            )));
        }
        Ok(())
    }

    fn record_server(
        &mut self,
        ev: &JobEvent,
        succeeded: bool,
        seen: Option<&Observation>,
        error: Option<&str>,
        retention: chrono::Duration,
    ) {
        let Some(server) = self.servers.get_mut(&ev.server_id) else {
            return; // purged, or a hand-published job for a server we never had
        };
        let outcome = server.status.after_job(ev.action, succeeded, seen);
        let id = server.id;
        if outcome.clears_inner_containers() {
            self.cleared.insert(id);
        }
        let Outcome::Becomes(status) = outcome else {
            self.servers.remove(&id);
            self.purged.push(id);
            tracing::info!("server purged");
            return;
        };
        (server.deleted_at, server.purge_after) =
            deletion_times(status, server.deleted_at, server.purge_after, ev.at, retention);
        server.status = status;
        if let Some(seen) = seen {
            server.container_id.clone_from(&seen.container_id);
            server.data_exists = seen.data_exists;
        }
        server.last_error = error.map(str::to_owned);
        server.updated_at = crate::store::now();
        self.changed_servers.insert(id);
        tracing::info!(status = %status, "server state recorded");
    }
}

/// An event must be about its job: the same server, action and host.
fn matches_job(job: &Job, ev: &JobEvent) -> Result<(), Rejection> {
    if job.server_id == ev.server_id && job.action == ev.action && job.host == ev.host {
        return Ok(());
    }
    Err(Rejection::Contradicts(format!(
        "job {} is a {} of server {} on host {}; the event says a {} of server {} on host {}",
        job.id, job.action, job.server_id, job.host, ev.action, ev.server_id, ev.host
    )))
}

/// Longest warning kept as a server's `last_error`.
const WARNING_MAX_CHARS: usize = 500;

/// The `warning` a succeeded job's result carries, if any, bounded.
fn warning_of(detail: &serde_json::Value) -> Option<String> {
    let warning = detail.get("warning")?.as_str()?;
    Some(match warning.char_indices().nth(WARNING_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &warning[..cut]),
        None => warning.to_owned(),
    })
}

fn finish(job: &mut Job, at: DateTime<Utc>, status: JobStatus, error: Option<&str>, result: Option<serde_json::Value>) {
    let metrics = crate::metrics::get();
    let labels = [job.action.as_str(), status.as_str()];
    metrics.jobs.with_label_values(&labels).inc();
    let seconds = (at - job.created_at).to_std().unwrap_or_default().as_secs_f64();
    metrics.job_seconds.with_label_values(&labels).observe(seconds);
    job.status = status;
    job.error = error.map(str::to_owned);
    job.result = result.map(sqlx::types::Json);
    job.finished_at = Some(at);
}

#[cfg(test)]
mod tests {
    use vsfleet_contract::{ContainerState, JobId, ServerId, ServerStatus};

    use super::*;
    use crate::store::{Store, scratch, scratch_server};

    async fn queued_job(db: &Store, server_id: i64, action: Action) -> JobId {
        let id = JobId::new();
        let job = Job::queued(NewJob {
            id,
            server_id: ServerId::new(server_id).unwrap(),
            action,
            host: "h1".into(),
            origin: "api",
            payload: "{}".into(),
            requested_by: None,
            created_at: crate::store::now(),
        });
        db.write(move |tx| Box::pin(async move { tx.insert_jobs(&[&job]).await })).await.unwrap();
        id
    }

    /// The SQLite pools under a scratch store, for rows the store has no read for.
    fn sqlite(db: &Store) -> &crate::store::SqliteStore {
        let Store::Sqlite(s) = db else { unreachable!("scratch stores are SQLite") };
        s
    }

    fn event(job_id: JobId, server_id: i64, action: Action, phase: JobPhase) -> JobEvent {
        JobEvent {
            job_id,
            server_id: ServerId::new(server_id).unwrap(),
            action,
            host: "h1".into(),
            attempt: 1,
            at: Utc::now(),
            job_seq: None,
            phase,
        }
    }

    fn succeeded(container: ContainerState) -> JobPhase {
        let container_id = (container != ContainerState::Absent).then(|| "c1".to_owned());
        JobPhase::Succeeded {
            observed: Observation { container, container_id, data_exists: true, archived: false },
            detail: None,
        }
    }

    /// A success after which nothing of the server is left on the host.
    fn nothing_left() -> JobPhase {
        let observed =
            Observation { container: ContainerState::Absent, container_id: None, data_exists: false, archived: false };
        JobPhase::Succeeded { observed, detail: None }
    }

    async fn record_all(db: &Store, events: &[JobEvent]) -> Vec<(usize, Rejection)> {
        record_with(db, events, &HashSet::new()).await
    }

    async fn record_with(db: &Store, events: &[JobEvent], hand_jobs: &HashSet<JobId>) -> Vec<(usize, Rejection)> {
        let (events, hand_jobs) = (events.to_vec(), hand_jobs.clone());
        let retention = chrono::Duration::days(7);
        db.write(move |tx| Box::pin(async move { record(tx, &events, retention, &hand_jobs).await })).await.unwrap()
    }

    async fn job(db: &Store, id: JobId) -> Job {
        db.job(id).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_start_and_its_success_in_one_batch_finish_the_job_and_move_the_server() {
        let (_dir, db) = scratch().await;
        let server = scratch_server(&db, "stopped").await;
        let id = queued_job(&db, server, Action::Start).await;
        let events = [event(id, server, Action::Start, JobPhase::Started), {
            let mut e = event(id, server, Action::Start, succeeded(ContainerState::Running));
            e.attempt = 2;
            e
        }];
        record_all(&db, &events).await;
        let row = job(&db, id).await;
        assert_eq!((row.status.as_str(), row.attempts, row.error), ("succeeded", 2, None));
        assert_eq!(
            (row.started_at, row.published_at, row.finished_at),
            (Some(events[0].at), Some(events[0].at), Some(events[1].at))
        );
        let row = db.server(server).await.unwrap().unwrap();
        assert_eq!((row.status.as_str(), row.container_id.as_deref(), row.data_exists), ("running", Some("c1"), true));

        // Redelivered: a finished job ignores them.
        record_all(&db, &[event(id, server, Action::Start, JobPhase::Started)]).await;
        assert_eq!(job(&db, id).await.status.as_str(), "succeeded");
    }

    #[tokio::test]
    async fn a_failure_records_its_error_on_the_job_and_the_server() {
        let (_dir, db) = scratch().await;
        let server = scratch_server(&db, "creating").await;
        let id = queued_job(&db, server, Action::Create).await;
        let failed = JobPhase::Failed { error: "no space".into(), permanent: true, observed: None };
        record_all(&db, &[event(id, server, Action::Create, failed)]).await;
        let row = job(&db, id).await;
        assert_eq!((row.status.as_str(), row.error.as_deref(), row.attempts), ("failed", Some("no space"), 1));
        assert!(row.started_at.is_some() && row.finished_at.is_some());
        let row = db.server(server).await.unwrap().unwrap();
        assert_eq!((row.status.as_str(), row.last_error.as_deref()), ("failed", Some("no space")));
        // The outcome is in the owner's activity log.
        let (action, target, result): (String, String, String) =
            sqlx::query_as("SELECT action, target, result FROM activity WHERE user_id = $1")
                .bind(row.owner_id)
                .fetch_one(&sqlite(&db).read)
                .await
                .unwrap();
        assert_eq!(
            (action.as_str(), target, result.as_str()),
            ("create", format!("server:{server}"), "failed: no space")
        );
    }

    #[tokio::test]
    async fn a_success_with_a_warning_leaves_the_server_running_with_it_as_last_error() {
        let (_dir, db) = scratch().await;
        let server = scratch_server(&db, "creating").await;
        let id = queued_job(&db, server, Action::Create).await;
        let JobPhase::Succeeded { observed, .. } = succeeded(ContainerState::Running) else { unreachable!() };
        let warning = format!("system stack sistema did not start: {}", "x".repeat(600));
        let detail = serde_json::json!({ "system_stack": { "status": "failed" }, "warning": warning });
        record_all(&db, &[event(id, server, Action::Create, JobPhase::Succeeded { observed, detail: Some(detail) })])
            .await;
        assert_eq!(job(&db, id).await.status.as_str(), "succeeded");
        let row = db.server(server).await.unwrap().unwrap();
        let last_error = row.last_error.unwrap();
        assert_eq!(row.status.as_str(), "running");
        assert!(last_error.starts_with("system stack sistema did not start: xxx"), "{last_error}");
        assert_eq!(last_error.chars().count(), WARNING_MAX_CHARS + 1, "bounded, with an ellipsis");

        // The next success without one clears it.
        let stop = queued_job(&db, server, Action::Stop).await;
        record_all(&db, &[event(stop, server, Action::Stop, succeeded(ContainerState::Stopped))]).await;
        assert_eq!(db.server(server).await.unwrap().unwrap().last_error, None);
    }

    #[tokio::test]
    async fn a_delete_then_a_hand_published_purge_remove_the_server_and_its_containers() {
        let (_dir, db) = scratch().await;
        let server = scratch_server(&db, "deleting").await;
        sqlx::query(
            "INSERT INTO server_containers (server_id, docker_id, image, names, state, status, ports, labels, created, updated_at)
             VALUES ($1, 'd1', 'i', 'n', 'running', 'Up', '', '', '', '2025-01-01T00:00:00Z')",
        )
        .bind(server)
        .execute(&sqlite(&db).write)
        .await
        .unwrap();
        let delete = queued_job(&db, server, Action::Delete).await;
        let purge = JobId::new(); // never requested through the api
        let cleanup = JobId::new();
        let nothing_left = nothing_left();
        let events = [
            event(delete, server, Action::Delete, succeeded(ContainerState::Absent)),
            event(purge, server, Action::Purge, JobPhase::Started),
            event(purge, server, Action::Purge, nothing_left),
            // The server is gone: this one only finishes its job.
            event(cleanup, server, Action::Cleanup, succeeded(ContainerState::Running)),
        ];
        let rejected = record_with(&db, &events, &HashSet::from([purge, cleanup])).await;
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(job(&db, delete).await.status.as_str(), "succeeded");
        let hand = job(&db, purge).await;
        assert_eq!((hand.origin.as_str(), hand.status.as_str(), hand.action.as_str()), ("nats", "succeeded", "purge"));
        assert!(db.server(server).await.unwrap().is_none());
        let (left,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM server_containers").fetch_one(&sqlite(&db).read).await.unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn events_that_contradict_their_job_or_server_change_nothing() {
        let (_dir, db) = scratch().await;
        let server = scratch_server(&db, "running").await;
        let stop = queued_job(&db, server, Action::Stop).await;
        let gone = nothing_left();
        let mut foreign = event(stop, server, Action::Stop, succeeded(ContainerState::Stopped));
        foreign.host = "h2".into();
        let events = [
            // A purge nobody asked for, claiming success.
            event(JobId::new(), server, Action::Purge, gone.clone()),
            // The stop job, reported as a purge.
            event(stop, server, Action::Purge, gone),
            // The stop job, from another host.
            foreign,
        ];
        let rejected = record_all(&db, &events).await;
        assert_eq!(rejected.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rejected[0].1, Rejection::UnknownJob);
        assert!(matches!(&rejected[1].1, Rejection::Contradicts(why) if why.contains("purge")), "{rejected:?}");
        assert_eq!(job(&db, stop).await.status.as_str(), "queued");
        let row = db.server(server).await.unwrap().unwrap();
        assert_eq!(row.status, ServerStatus::Running);

        // A purge of a running server is not a success, whatever the host says.
        let purge = JobId::new();
        let rejected =
            record_with(&db, &[event(purge, server, Action::Purge, nothing_left())], &HashSet::from([purge])).await;
        assert!(matches!(&rejected[0].1, Rejection::Contradicts(why) if why.contains("is running")), "{rejected:?}");
        assert!(db.server(server).await.unwrap().is_some());

        // Nor one of a failed server whose data is still there.
        let failed = scratch_server(&db, "failed").await;
        let purge = JobId::new();
        let rejected = record_with(
            &db,
            &[event(purge, failed, Action::Purge, succeeded(ContainerState::Absent))],
            &HashSet::from([purge]),
        )
        .await;
        assert!(matches!(&rejected[0].1, Rejection::Contradicts(why) if why.contains("still has")), "{rejected:?}");
        assert!(db.server(failed).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_deleted_server_keeps_its_deletion_time_and_gets_a_purge_date() {
        let (_dir, db) = scratch().await;
        let server = scratch_server(&db, "deleting").await;
        let id = queued_job(&db, server, Action::Delete).await;
        let done = event(id, server, Action::Delete, succeeded(ContainerState::Absent));
        record_all(&db, std::slice::from_ref(&done)).await;
        let row = db.server(server).await.unwrap().unwrap();
        assert_eq!(row.status, ServerStatus::Deleted);
        assert_eq!((row.deleted_at, row.purge_after), (Some(done.at), Some(done.at + chrono::Duration::days(7))));
    }
}

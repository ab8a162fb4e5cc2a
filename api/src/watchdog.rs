//! Nothing stays stuck. Every action has a deadline (`api.deadlines`),
//! counted from the request: a job still queued or running past it (its
//! worker vanished, its host was lost, Docker never came back) is failed
//! here with the reason, exactly as if its worker had reported the failure,
//! so its server leaves `creating`/`deleting` and the next request is
//! possible. The deadline also travels in the job's payload, and a worker
//! neither starts a job past it nor runs on beyond it: a late delivery
//! cannot act on a server whose job was already reported failed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{JobEvent, JobPhase};

use crate::job_events;
use crate::jobs::Job;
use crate::store::Store;
use vsfleet_contract::Settings;

pub async fn run(db: Store, settings: std::sync::Arc<Settings>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(settings.api.watchdog_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = sweep(&db, &settings, Utc::now()).await {
            tracing::warn!(error = format!("{error:#}"), "watchdog: cannot fail overdue jobs; trying again");
        }
    }
}

/// Fails every job in flight whose deadline is before `now`; returns how many.
pub async fn sweep(db: &Store, settings: &Settings, now: DateTime<Utc>) -> anyhow::Result<usize> {
    // Jobs in flight are at most one per server: a small set, on an index.
    let in_flight = db.jobs_in_flight().await?;
    let overdue: Vec<(Job, JobEvent)> = in_flight.into_iter().filter_map(|job| overdue(settings, job, now)).collect();
    if overdue.is_empty() {
        return Ok(0);
    }
    for (job, _) in &overdue {
        tracing::error!(
            job_id = %job.id,
            server_id = %job.server_id,
            action = %job.action,
            status = %job.status,
            "job failed by the watchdog: past its deadline"
        );
    }
    let count = overdue.len();
    let failures: Vec<JobEvent> = overdue.into_iter().map(|(_, failure)| failure).collect();
    let retention = settings.retention();
    // Recorded as the workers' own reports are, in one transaction that
    // re-reads each job: one that finished meanwhile is left as it is.
    db.write(move |tx| {
        Box::pin(async move { job_events::record(tx, &failures, retention, &Default::default()).await.map(drop) })
    })
    .await?;
    Ok(count)
}

/// The failure to record for `job` if it is past its deadline.
fn overdue(settings: &Settings, job: Job, now: DateTime<Utc>) -> Option<(Job, JobEvent)> {
    let action = job.action;
    let limit = settings.api.deadlines.of(action);
    let deadline = job.created_at + limit;
    if now < deadline {
        return None;
    }
    let error = format!(
        "deadline exceeded: the {action} job was still {} {}s after it was requested (api.deadlines.{action} = {}s); \
         its worker or host may be gone",
        job.status,
        (now - job.created_at).num_seconds(),
        limit.as_secs(),
    );
    let failure = JobEvent {
        job_id: job.id,
        server_id: job.server_id,
        action,
        host: job.host.clone(),
        attempt: job.attempts.max(0) as u64,
        at: now,
        job_seq: None,
        phase: JobPhase::Failed { error, permanent: true, observed: None },
    };
    Some((job, failure))
}

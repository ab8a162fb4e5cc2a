//! Consuming workers' events and recording them: job phases into `jobs`,
//! what the host looked like into `servers`, drift seen in Docker's event
//! stream, and whole-host inventories (reconciled by [`crate::reconcile`]).
//! Applying an event twice changes nothing (a finished job ignores later
//! events; drift and inventories are states, not deltas), so redelivery is
//! harmless.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::Message;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use vsfleet_contract::{
    Action, ContainerState, Inventory, JobEvent, JobPhase, JobStatus, Observation, Observed, ServerStatus,
};

use crate::app::{AppState, HostSync};
use crate::db::{Db, begin_write};
use crate::error::ApiError;
use crate::jobs::{self, NewJob};
use crate::reconcile::{self, HostInventory};
use crate::{lifecycle, servers};

pub async fn consumer(
    events: &jetstream::stream::Stream,
    settings: &vsfleet_contract::Settings,
) -> anyhow::Result<PullConsumer> {
    let subjects = settings.subjects();
    let name = subjects.api_events_consumer();
    events
        .get_or_create_consumer(
            &name,
            jetstream::consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subjects.api_events_filter(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating events consumer {name}"))
}

/// Records events until shut down, reopening the message stream after errors.
pub async fn run(consumer: PullConsumer, state: AppState, shutdown: CancellationToken) {
    let subjects = state.settings.subjects();
    let mut partial: HashMap<uuid::Uuid, Vec<Inventory>> = HashMap::new();
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "events: cannot pull; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = messages.next() => next,
            };
            let first = match first {
                Some(Ok(m)) => m,
                Some(Err(error)) => {
                    tracing::warn!(error = format!("{error:#}"), "events: pull failed");
                    break;
                }
                None => break,
            };
            // What has already arrived joins the batch: one transaction for
            // many job events keeps the single writer connection free.
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(m))) => batch.push(m),
                    _ => break,
                }
            }
            let mut rest = batch.as_slice();
            while !rest.is_empty() {
                let jobs = rest.iter().take_while(|m| subjects.event_kind(&m.subject) == Some("job")).count();
                if jobs > 0 {
                    record_jobs(&state, &rest[..jobs]).await;
                    rest = &rest[jobs..];
                } else {
                    let message = &rest[0];
                    let outcome = match subjects.event_kind(&message.subject) {
                        Some("observed") => match parse::<Observed>(&message.payload) {
                            Ok(seen) => apply_observed(&state.db, &seen).await.map_err(Fault::Retry),
                            Err(fault) => Err(fault),
                        },
                        Some("inventory") => match parse::<Inventory>(&message.payload) {
                            Ok(part) => match assemble(&mut partial, part) {
                                Some((host, whole)) => sync(&state, &host, &whole).await.map_err(Fault::Retry),
                                None => Ok(()),
                            },
                            Err(fault) => Err(fault),
                        },
                        _ => Err(Fault::Unreadable("unknown event kind".into())),
                    };
                    settle(message, outcome).await;
                    rest = &rest[1..];
                }
            }
        }
    }
}

/// Events recorded per transaction at most.
const BATCH: usize = 256;

/// Records job events in one transaction; all of them are redelivered if
/// it fails (applying an event twice changes nothing).
async fn record_jobs(state: &AppState, messages: &[Message]) {
    let mut readable = Vec::with_capacity(messages.len());
    for message in messages {
        match parse::<JobEvent>(&message.payload) {
            Ok(event) => readable.push((message, event)),
            Err(fault) => settle(message, Err(fault)).await,
        }
    }
    let retention = state.settings.retention();
    let outcome: anyhow::Result<()> = async {
        let mut tx = begin_write(&state.db).await?;
        for (_, event) in &readable {
            let span = tracing::info_span!("event", job_id = %event.job_id, server_id = %event.server_id, action = %event.action);
            apply_in(&mut tx, event, retention).instrument(span).await?;
        }
        tx.commit().await?;
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            futures::future::join_all(readable.iter().map(|(m, _)| settle(m, Ok(())))).await;
        }
        Err(error) => {
            let error = format!("{error:#}");
            for (message, _) in &readable {
                settle(message, Err(Fault::Retry(anyhow::anyhow!(error.clone())))).await;
            }
        }
    }
}

async fn settle(message: &Message, outcome: Result<(), Fault>) {
    let ack = match outcome {
        Ok(()) => message.ack().await,
        Err(Fault::Unreadable(why)) => {
            tracing::error!(subject = %message.subject, why, "events: unreadable event dropped");
            message.ack_with(AckKind::Term).await
        }
        Err(Fault::Retry(error)) => {
            tracing::warn!(subject = %message.subject, error = format!("{error:#}"), "events: recording failed; redelivery in 1s");
            message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await
        }
    };
    if let Err(error) = ack {
        tracing::warn!(%error, "events: ack failed; the event will be redelivered");
    }
}

/// Why an event was not recorded.
enum Fault {
    /// No retry can help.
    Unreadable(String),
    /// The database refused; try again.
    Retry(anyhow::Error),
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Fault> {
    serde_json::from_slice(payload).map_err(|e| Fault::Unreadable(e.to_string()))
}

/// Collects an inventory's parts; returns the whole once the last arrived.
fn assemble(partial: &mut HashMap<uuid::Uuid, Vec<Inventory>>, part: Inventory) -> Option<(String, HostInventory)> {
    let (id, parts) = (part.sync_id, part.parts as usize);
    let got = partial.entry(id).or_default();
    if !got.iter().any(|p| p.part == part.part) {
        got.push(part);
    }
    // Parts of syncs that never complete (a worker died mid-way) are dropped
    // once a newer sync of the same host completes, below.
    if got.len() < parts {
        return None;
    }
    let got = partial.remove(&id)?;
    let host = got[0].host.clone();
    partial.retain(|_, v| v.first().is_none_or(|p| p.host != host));
    let mut whole = HostInventory { at: got[0].at, ..Default::default() };
    for p in got {
        whole.containers.extend(p.containers);
        whole.data_dirs.extend(p.data_dirs);
    }
    Some((host, whole))
}

/// Reconciles a host, then deals with its orphans: reported always, removed
/// (when stopped, never their data) only when `api.remove_orphans` says so.
async fn sync(state: &AppState, host: &str, inventory: &HostInventory) -> anyhow::Result<()> {
    let plan = reconcile::apply(&state.db, host, inventory).await?;
    for orphan in &plan.orphans {
        tracing::warn!(host, server_id = %orphan.server_id, container = orphan.container_id, state = ?orphan.state, "orphan container: labelled for this host, no live server");
        if state.settings.api.remove_orphans && orphan.state != ContainerState::Running {
            match lifecycle::reap(state, host, orphan.server_id).await {
                Ok(_) | Err(ApiError::JobInFlight(_)) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "cannot request orphan removal"),
            }
        }
    }
    let summary = HostSync {
        at: inventory.at,
        containers: inventory.containers.len(),
        orphans: plan.orphans,
        changed: plan.changes.len(),
    };
    state.syncs.lock().expect("not poisoned").insert(host.to_owned(), summary);
    Ok(())
}

/// Drift seen in Docker's event stream: the server follows its container,
/// unless a job is in flight (the job will say) or it is in a state only a
/// job may leave.
pub async fn apply_observed(db: &Db, seen: &Observed) -> anyhow::Result<()> {
    let mut tx = begin_write(db).await?;
    let id = seen.server_id.as_i64();
    let Some(server) = servers::get(&mut *tx, id).await? else { return Ok(()) };
    if server.host != seen.host || jobs::in_flight(&mut *tx, id).await?.is_some() {
        return Ok(());
    }
    let Some(status) = server.status().drifted(seen.observed.container) else { return Ok(()) };
    sqlx::query("UPDATE servers SET status = ?, container_id = ?, data_exists = ?, updated_at = ? WHERE id = ?")
        .bind(status.as_str())
        .bind(&seen.observed.container_id)
        .bind(seen.observed.data_exists)
        .bind(Utc::now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(server_id = id, cause = seen.cause, %status, "drift recorded");
    Ok(())
}

/// Records one event inside the caller's transaction.
pub(crate) async fn apply_in(
    tx: &mut sqlx::SqliteConnection,
    ev: &JobEvent,
    retention: chrono::Duration,
) -> anyhow::Result<()> {
    let id = ev.job_id.to_string();
    if matches!(ev.phase, JobPhase::Started) && mark_started(tx, ev).await? {
        return Ok(()); // the common case, in one statement
    }
    let job = match jobs::get(&mut *tx, &id).await? {
        Some(job) => job,
        // A job published by hand: it shows in the API from its first event.
        None => {
            let job = jobs::insert(
                &mut *tx,
                NewJob {
                    id: ev.job_id,
                    server_id: ev.server_id.as_i64(),
                    action: ev.action,
                    host: &ev.host,
                    status: JobStatus::Queued,
                    origin: "nats",
                    payload: "{}",
                    requested_by: None,
                    created_at: ev.at,
                },
            )
            .await?;
            tracing::info!("recorded a job published directly on NATS");
            job
        }
    };
    if job.job_status().is_finished() {
        return Ok(()); // a late or repeated event
    }
    match &ev.phase {
        JobPhase::Started => {
            mark_started(tx, ev).await?;
        }
        JobPhase::Succeeded { observed, detail } => {
            finish(&mut *tx, ev, JobStatus::Succeeded, None, detail.as_ref()).await?;
            record_server(&mut *tx, ev, true, Some(observed), None, retention).await?;
        }
        JobPhase::Failed { error, observed, .. } => {
            finish(&mut *tx, ev, JobStatus::Failed, Some(error), None).await?;
            record_server(&mut *tx, ev, false, observed.as_ref(), Some(error), retention).await?;
        }
    }
    Ok(())
}

/// A job that is queued or running becomes running; `false` when the job is
/// unknown (published by hand) or already finished.
async fn mark_started(tx: &mut sqlx::SqliteConnection, ev: &JobEvent) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'running', attempts = MAX(attempts, ?), started_at = COALESCE(started_at, ?),
         published_at = COALESCE(published_at, ?) WHERE id = ? AND status IN ('queued', 'running')",
    )
    .bind(ev.attempt as i64)
    .bind(ev.at)
    .bind(ev.at)
    .bind(ev.job_id.to_string())
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn finish(
    tx: &mut sqlx::SqliteConnection,
    ev: &JobEvent,
    status: JobStatus,
    error: Option<&str>,
    result: Option<&serde_json::Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET status = ?, error = ?, result = ?, attempts = MAX(attempts, ?), finished_at = ?,
         started_at = COALESCE(started_at, ?), published_at = COALESCE(published_at, ?) WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(error)
    .bind(result.map(sqlx::types::Json))
    .bind(ev.attempt as i64)
    .bind(ev.at)
    .bind(ev.at)
    .bind(ev.at)
    .bind(ev.job_id.to_string())
    .execute(tx)
    .await?;
    Ok(())
}

async fn record_server(
    tx: &mut sqlx::SqliteConnection,
    ev: &JobEvent,
    succeeded: bool,
    seen: Option<&Observation>,
    error: Option<&str>,
    retention: chrono::Duration,
) -> anyhow::Result<()> {
    let Some(server) = servers::get(&mut *tx, ev.server_id.as_i64()).await? else {
        return Ok(()); // purged, or a hand-published job for a server we never had
    };
    if server.host != ev.host {
        // A worker can only speak for its own host.
        tracing::warn!(
            server_host = server.host,
            event_host = ev.host,
            "event from another host ignored for the server row"
        );
        return Ok(());
    }
    let next = match seen {
        Some(seen) => ServerStatus::after(ev.action, succeeded, seen),
        None if ev.action == Action::Create => Some(ServerStatus::Failed),
        // Nothing was observed: a transient state cannot stay, the rest can.
        None => Some(match server.status() {
            ServerStatus::Creating | ServerStatus::Deleting => ServerStatus::Failed,
            other => other,
        }),
    };
    if matches!(next, None | Some(ServerStatus::Deleted)) {
        // Seed 000 §5.2: a deleted server's inner containers go with it.
        sqlx::query("DELETE FROM server_containers WHERE server_id = ?").bind(server.id).execute(&mut *tx).await?;
    }
    let Some(status) = next else {
        sqlx::query("DELETE FROM servers WHERE id = ?").bind(server.id).execute(&mut *tx).await?;
        tracing::info!("server purged");
        return Ok(());
    };
    let (deleted_at, purge_after): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = if status == ServerStatus::Deleted {
        let deleted_at = server.deleted_at.unwrap_or(ev.at);
        (Some(deleted_at), Some(server.purge_after.unwrap_or(deleted_at + retention)))
    } else {
        (None, None)
    };
    sqlx::query(
        "UPDATE servers SET status = ?, container_id = ?, data_exists = ?, last_error = ?, deleted_at = ?, purge_after = ?, updated_at = ?
         WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(seen.map_or(server.container_id.clone(), |s| s.container_id.clone()))
    .bind(seen.map_or(server.data_exists, |s| s.data_exists))
    .bind(error)
    .bind(deleted_at)
    .bind(purge_after)
    .bind(Utc::now())
    .bind(server.id)
    .execute(&mut *tx)
    .await?;
    tracing::info!(status = %status, "server state recorded");
    Ok(())
}

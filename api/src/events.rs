//! Consuming workers' events and recording them: job phases into `jobs`,
//! what the host looked like into `servers`. Applying an event twice changes
//! nothing (a finished job ignores later events), so redelivery is harmless.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{Action, JobEvent, JobPhase, JobStatus, Observation, ServerStatus};

use crate::db::{Db, begin_write};
use crate::jobs::{self, NewJob};
use crate::servers;

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
pub async fn run(
    consumer: PullConsumer,
    db: Db,
    retention: chrono::Duration,
    shutdown: CancellationToken,
) {
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "events: cannot pull; retrying"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(error)) => {
                    tracing::warn!(error = format!("{error:#}"), "events: pull failed");
                    break;
                }
                None => break,
            };
            let event: JobEvent = match serde_json::from_slice(&message.payload) {
                Ok(e) => e,
                Err(error) => {
                    tracing::error!(subject = %message.subject, %error, "events: unreadable event dropped");
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let span = tracing::info_span!("event", job_id = %event.job_id, server_id = %event.server_id, action = %event.action);
            let outcome = {
                let _guard = span.enter();
                tracing::debug!(phase = ?event.phase, "recording event");
                apply(&db, &event, retention).await
            };
            let ack = match outcome {
                Ok(()) => message.ack().await,
                Err(error) => {
                    tracing::warn!(parent: &span, error = format!("{error:#}"), "events: recording failed; redelivery in 1s");
                    message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await
                }
            };
            if let Err(error) = ack {
                tracing::warn!(parent: &span, %error, "events: ack failed; the event will be redelivered");
            }
        }
    }
}

/// Records one event in one transaction.
pub async fn apply(db: &Db, ev: &JobEvent, retention: chrono::Duration) -> anyhow::Result<()> {
    let mut tx = begin_write(db).await?;
    let id = ev.job_id.to_string();
    let job = match jobs::get(&mut *tx, &id).await? {
        Some(job) => job,
        // A job published by hand: it shows in the API from its first event.
        None => {
            let job = jobs::insert(
                &mut tx,
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
            sqlx::query(
                "UPDATE jobs SET status = 'running', attempts = MAX(attempts, ?), started_at = COALESCE(started_at, ?),
                 published_at = COALESCE(published_at, ?) WHERE id = ?",
            )
            .bind(ev.attempt as i64)
            .bind(ev.at)
            .bind(ev.at)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
        JobPhase::Succeeded { observed } => {
            finish(&mut tx, ev, JobStatus::Succeeded, None).await?;
            record_server(&mut tx, ev, true, Some(observed), None, retention).await?;
        }
        JobPhase::Failed {
            error, observed, ..
        } => {
            finish(&mut tx, ev, JobStatus::Failed, Some(error)).await?;
            record_server(
                &mut tx,
                ev,
                false,
                observed.as_ref(),
                Some(error),
                retention,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn finish(
    tx: &mut sqlx::SqliteConnection,
    ev: &JobEvent,
    status: JobStatus,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET status = ?, error = ?, attempts = MAX(attempts, ?), finished_at = ?,
         started_at = COALESCE(started_at, ?), published_at = COALESCE(published_at, ?) WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(error)
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
    let Some(status) = next else {
        sqlx::query("DELETE FROM servers WHERE id = ?")
            .bind(server.id)
            .execute(&mut *tx)
            .await?;
        tracing::info!("server purged");
        return Ok(());
    };
    let (deleted_at, purge_after): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        if status == ServerStatus::Deleted {
            let deleted_at = server.deleted_at.unwrap_or(ev.at);
            (
                Some(deleted_at),
                Some(server.purge_after.unwrap_or(deleted_at + retention)),
            )
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

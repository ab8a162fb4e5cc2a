//! The api's share of the periodic jobs: dropping stale inner-container
//! rows (cleanup) and purging deleted servers whose `purge_after` has passed
//! (seed 004's never-built 24-hour auto-purge). Sync ticks are the workers'.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::Action;
use vsfleet_contract::schedule::{Periodic, Tick};

use crate::error::ApiError;
use crate::lifecycle::Lifecycle;
use crate::lifecycle::{self, Actor};

pub async fn consumer(
    schedule: &jetstream::stream::Stream,
    settings: &vsfleet_contract::Settings,
) -> anyhow::Result<PullConsumer> {
    let name = settings.subjects().api_schedule_consumer();
    schedule
        .get_or_create_consumer(&name, vsfleet_contract::jetstream::api_schedule_consumer(settings))
        .await
        .with_context(|| format!("creating schedule consumer {name}"))
}

pub async fn run(consumer: PullConsumer, state: Lifecycle, shutdown: CancellationToken) {
    vsfleet_contract::process::each_message(&consumer, "schedule", &shutdown, |message| {
        let state = &state;
        async move {
            let outcome = match serde_json::from_slice::<Tick>(&message.payload) {
                Ok(tick) => handle(state, &tick).await,
                Err(error) => {
                    tracing::error!(%error, "schedule: unreadable tick dropped");
                    Ok(())
                }
            };
            let ack = match outcome {
                Ok(()) => AckKind::Ack,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "schedule: periodic job failed; retrying");
                    AckKind::Nak(Some(Duration::from_secs(2)))
                }
            };
            let _ = message.ack_with(ack).await;
        }
    })
    .await
}

async fn handle(state: &Lifecycle, tick: &Tick) -> anyhow::Result<()> {
    match tick.kind {
        Periodic::Sync => Ok(()),
        Periodic::Cleanup => {
            let dropped = drop_stale_containers(state).await?;
            if dropped > 0 {
                tracing::info!(dropped, "cleanup: stale inner-container rows dropped");
            }
            let kept = chrono::Duration::seconds(state.settings.api.events_retention_secs as i64);
            let dropped = state.db.drop_changes(Utc::now() - kept).await?;
            if dropped > 0 {
                tracing::info!(dropped, "cleanup: change-feed entries past api.events_retention_secs dropped");
            }
            Ok(())
        }
        Periodic::Purge => purge_expired(state).await,
    }
}

/// Seed 003 §7.1: rows not refreshed for five minutes (configurable).
pub async fn drop_stale_containers(state: &Lifecycle) -> Result<u64, crate::store::StoreError> {
    let ttl = chrono::Duration::seconds(state.settings.api.container_rows_ttl_secs as i64);
    state.db.drop_stale_containers(Utc::now() - ttl).await
}

/// Requests a purge for every deleted server past its `purge_after`. A
/// server restored meanwhile is no longer `deleted` and is left alone.
pub async fn purge_expired(state: &Lifecycle) -> anyhow::Result<()> {
    let due = state.db.purge_due(Utc::now(), 500).await?;
    for id in due {
        match lifecycle::request(state, Actor::Scheduler, id, Action::Purge).await {
            Ok(job) => tracing::info!(server_id = id, job_id = %job.id, "auto-purge: retention over"),
            // Already being purged, or restored in the meantime.
            Err(ApiError::JobInFlight(_) | ApiError::InvalidTransition { .. } | ApiError::NotFound(_)) => {}
            Err(error) => return Err(anyhow::Error::new(error).context(format!("auto-purge of server {id}"))),
        }
    }
    Ok(())
}

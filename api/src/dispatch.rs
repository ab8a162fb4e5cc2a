//! Publishing jobs to JetStream, and the outbox that makes it reliable.
//!
//! A request commits its job row first, then publishes with
//! `Nats-Msg-Id` = job id and waits for JetStream's acknowledgement before it
//! marks the row published. If NATS is down or the api dies in between, the
//! row stays unpublished and [`run_outbox`] publishes it again until it is
//! acknowledged: an accepted job is never lost, and the message id keeps a
//! second publish from running it twice.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::Subjects;

use crate::db::Db;
use crate::jobs::{self, Job};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("job row has an unknown action {0:?}")]
    BadRow(String),
    #[error("publishing to JetStream: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    #[error("JetStream did not acknowledge the publish within {0:?}")]
    Timeout(Duration),
    #[error("recording the publish: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Clone)]
pub struct Dispatcher {
    js: jetstream::Context,
    subjects: Subjects,
    timeout: Duration,
    db: Db,
}

impl Dispatcher {
    pub fn new(js: jetstream::Context, subjects: Subjects, timeout: Duration, db: Db) -> Self {
        Self { js, subjects, timeout, db }
    }

    /// Publishes a committed job and waits for JetStream to store it.
    pub async fn publish(&self, job: &Job) -> Result<(), DispatchError> {
        let action = job.action().ok_or_else(|| DispatchError::BadRow(job.action.clone()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, job.id.as_str());
        let subject = self.subjects.job(&job.host, action);
        let publish = async {
            let ack = self.js.publish_with_headers(subject, headers, Bytes::from(job.payload.clone())).await?;
            ack.await
        };
        match tokio::time::timeout(self.timeout, publish).await {
            Err(_) => return Err(DispatchError::Timeout(self.timeout)),
            Ok(result) => result?,
        };
        jobs::mark_published(&self.db.write, job.job_id()).await?;
        Ok(())
    }

    /// Publishes the jobs a request could not, until shut down.
    pub async fn run_outbox(self, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // The grace period leaves a fresh job to the request publishing it.
            let before = Utc::now() - chrono::Duration::seconds(2);
            let pending = match jobs::unpublished(&self.db.read, before, 200).await {
                Ok(pending) => pending,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "outbox: reading unpublished jobs");
                    continue;
                }
            };
            for job in pending {
                let span =
                    tracing::info_span!("outbox", job_id = %job.id, server_id = job.server_id, action = %job.action);
                let _guard = span.enter();
                match self.publish(&job).await {
                    Ok(()) => {
                        tracing::info!("outbox: published job that had not been acknowledged")
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "outbox: publish failed; will retry");
                        // NATS is likely down: the rest would fail the same way.
                        break;
                    }
                }
            }
        }
    }
}

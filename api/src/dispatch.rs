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
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{JobId, Subjects, publish};

use crate::jobs::Job;
use crate::store::Store;

pub use vsfleet_contract::publish::PublishError as DispatchError;

#[derive(Clone)]
pub struct Dispatcher {
    js: jetstream::Context,
    subjects: Subjects,
    timeout: Duration,
    db: Store,
    /// Acknowledged jobs, marked published in batches by [`Marker`].
    marks: mpsc::UnboundedSender<JobId>,
}

/// Records `published_at` for acknowledged jobs, many per statement and in
/// the writer's next transaction: under load one UPDATE per job would take
/// the single writer connection's time from the requests. A mark lost in a
/// crash only means one more publish by the outbox, which JetStream drops
/// as a duplicate.
pub struct Marker {
    db: Store,
    marks: mpsc::UnboundedReceiver<JobId>,
}

impl Dispatcher {
    pub fn new(js: jetstream::Context, subjects: Subjects, timeout: Duration, db: Store) -> (Self, Marker) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { js, subjects, timeout, db: db.clone(), marks: tx }, Marker { db, marks: rx })
    }

    /// Publishes a committed job and waits for JetStream to store it.
    pub async fn publish(&self, job: &Job) -> Result<(), DispatchError> {
        let mut headers = publish::with_id(&job.id.to_string());
        if let Some(trace) = vsfleet_contract::trace::TraceId::current() {
            headers.insert(vsfleet_contract::trace::HEADER, trace.traceparent().as_str());
        }
        let subject = self.subjects.job(&job.host, job.action);
        publish::acked(&self.js, subject, headers, Bytes::from(job.payload.clone()), self.timeout).await?;
        // The marker outlives every dispatcher clone but the last.
        let _ = self.marks.send(job.id);
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
            let pending = match self.db.unpublished(before, 200).await {
                Ok(pending) => pending,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "outbox: reading unpublished jobs");
                    continue;
                }
            };
            for job in pending {
                let span =
                    tracing::info_span!("outbox", job_id = %job.id, server_id = %job.server_id, action = %job.action);
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

impl Marker {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::new();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => None,
                id = self.marks.recv() => id,
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < 500
                && let Ok(id) = self.marks.try_recv()
            {
                batch.push(id);
            }
            let ids = std::mem::take(&mut batch);
            if let Err(error) = mark_published(&self.db, ids).await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "marking jobs published; the outbox will publish them again"
                );
            }
        }
        // Whatever is still queued at shutdown.
        while let Ok(id) = self.marks.try_recv() {
            batch.push(id);
        }
        if !batch.is_empty() {
            let _ = mark_published(&self.db, batch).await;
        }
    }
}

async fn mark_published(db: &Store, ids: Vec<JobId>) -> Result<(), crate::store::StoreError> {
    let at = crate::store::now();
    db.write(move |tx| Box::pin(async move { tx.mark_published(&ids, at).await })).await
}

//! Reporting job phases to the api through the events stream. A report is
//! sent before the job's message is acknowledged, so a crash in between
//! means the job runs (and reports) again rather than being forgotten.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, response::Response};
use vsfleet_contract::{JobEvent, JobPhase, Subjects};

use crate::publish::{self, PublishError};

#[derive(Clone)]
pub struct Reporter {
    js: jetstream::Context,
    subject: String,
    /// `CONSUMER.INFO` of the api's events consumer.
    api_consumer: String,
}

impl Reporter {
    pub fn new(js: jetstream::Context, subjects: &Subjects, host: &str) -> Self {
        let api_consumer = format!("CONSUMER.INFO.{}.{}", subjects.events_stream(), subjects.api_events_consumer());
        Self { js, subject: subjects.job_events(host), api_consumer }
    }

    /// Waits, up to `within`, until the api has processed every event up
    /// to stream sequence `seq`. A job published by hand is recorded only
    /// after the api found its message in the jobs stream (the message is
    /// the proof that someone allowed to enqueue published it), and the
    /// acknowledgement removes it: so such a job is acknowledged only once
    /// the api has seen its outcome.
    pub async fn wait_seen_by_api(&self, seq: u64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let info: Result<Response<consumer::Info>, _> =
                self.js.request(self.api_consumer.clone(), &serde_json::json!({})).await;
            if let Ok(Response::Ok(info)) = info
                && info.ack_floor.stream_sequence >= seq
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends the report; returns its sequence in the events stream.
    pub async fn send(&self, event: &JobEvent) -> Result<u64, PublishError> {
        let phase = match event.phase {
            JobPhase::Started => "started",
            JobPhase::Succeeded { .. } => "succeeded",
            JobPhase::Failed { .. } => "failed",
        };
        // A re-sent report of the same attempt is dropped by JetStream.
        let id = format!("{}-{phase}-{}", event.job_id, event.attempt);
        publish::json(&self.js, self.subject.clone(), &id, event).await
    }
}

//! Reporting job phases to the api through the events stream. A report is
//! sent before the job's message is acknowledged, so a crash in between
//! means the job runs (and reports) again rather than being forgotten.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use vsfleet_contract::{JobEvent, JobPhase, Subjects};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("publishing event: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    #[error("the events stream did not acknowledge within {0:?}")]
    Timeout(Duration),
}

#[derive(Clone)]
pub struct Reporter {
    js: jetstream::Context,
    subject: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl Reporter {
    pub fn new(js: jetstream::Context, subjects: &Subjects, host: &str) -> Self {
        Self {
            js,
            subject: subjects.job_events(host),
        }
    }

    pub async fn send(&self, event: &JobEvent) -> Result<(), ReportError> {
        let phase = match event.phase {
            JobPhase::Started => "started",
            JobPhase::Succeeded { .. } => "succeeded",
            JobPhase::Failed { .. } => "failed",
        };
        // A re-sent report of the same attempt is dropped by JetStream.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}-{phase}-{}", event.job_id, event.attempt).as_str(),
        );
        let payload = Bytes::from(serde_json::to_vec(event).expect("events serialise"));
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(self.subject.clone(), headers, payload)
                .await?;
            ack.await
        };
        match tokio::time::timeout(TIMEOUT, publish).await {
            Err(_) => Err(ReportError::Timeout(TIMEOUT)),
            Ok(result) => result.map(drop).map_err(Into::into),
        }
    }
}

//! Reporting job phases to the api through the events stream. A report is
//! sent before the job's message is acknowledged, so a crash in between
//! means the job runs (and reports) again rather than being forgotten.

use async_nats::jetstream;
use vsfleet_contract::{JobEvent, JobPhase, Subjects};

use crate::publish::{self, PublishError};

#[derive(Clone)]
pub struct Reporter {
    js: jetstream::Context,
    subject: String,
}

impl Reporter {
    pub fn new(js: jetstream::Context, subjects: &Subjects, host: &str) -> Self {
        Self { js, subject: subjects.job_events(host) }
    }

    pub async fn send(&self, event: &JobEvent) -> Result<(), PublishError> {
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

//! Dead letters: a job that will never run — poison (not a job payload, an
//! unknown action, another host's subject) or out of deliveries — is copied
//! to `{prefix}.dead.{host}.{action}` with why, then terminated. Operators
//! list and replay them with the NATS CLI (`nats/README.md`).

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message};
use vsfleet_contract::Subjects;

/// Headers on a dead letter.
pub const ORIGINAL_SUBJECT: &str = "Vsfleet-Subject";
pub const REASON: &str = "Vsfleet-Reason";
pub const DELIVERIES: &str = "Vsfleet-Deliveries";

#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    subjects: Subjects,
    host: String,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, subjects: Subjects, host: &str) -> Self {
        Self { js, subjects, host: host.to_owned() }
    }

    /// Copies `message` to the dead-letter stream and says how to settle
    /// it: `Term` once the copy is stored, else hand it back, so nothing is
    /// dropped unrecorded.
    pub async fn bury(&self, message: &Message, what: &str, reason: &str) -> AckKind {
        let (sequence, deliveries) = message.info().map(|i| (i.stream_sequence, i.delivered)).unwrap_or((0, 0));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ORIGINAL_SUBJECT, message.subject.as_str());
        headers.insert(REASON, reason.replace(['\r', '\n'], " ").as_str());
        headers.insert(DELIVERIES, deliveries.to_string().as_str());
        // The same message buried twice (a crash in between) is stored once.
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dead-{}-{sequence}", self.subjects.jobs_stream()).as_str(),
        );
        let subject = self.subjects.dead(&self.host, what);
        let publish = async {
            let ack = self.js.publish_with_headers(subject, headers, message.payload.clone()).await?;
            ack.await
        };
        match tokio::time::timeout(Duration::from_secs(5), publish).await {
            Ok(Ok(_)) => {
                tracing::error!(reason, "job buried in the dead-letter stream");
                AckKind::Term
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, reason, "cannot store the dead letter; the job is handed back");
                AckKind::Nak(Some(Duration::from_secs(5)))
            }
            Err(_) => {
                tracing::warn!(reason, "dead-letter stream did not answer; the job is handed back");
                AckKind::Nak(Some(Duration::from_secs(5)))
            }
        }
    }
}

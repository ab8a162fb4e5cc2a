//! Dead letters: a job that will never run — poison (not a job payload, an
//! unknown action, another host's subject) or out of deliveries — is copied
//! to `{prefix}.dead.{host}.{action}` with why ([`vsfleet_contract::dead`]),
//! then terminated. Operators list and replay them with the NATS CLI
//! (`nats/README.md`).

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message};
use vsfleet_contract::Subjects;
use vsfleet_contract::dead::{self, DeadLetter};

pub use vsfleet_contract::dead::{DELIVERIES, ORIGINAL_SUBJECT, REASON};

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
        let letter = DeadLetter {
            subject: self.subjects.dead(&self.host, what),
            original_subject: message.subject.as_str(),
            reason,
            deliveries: Some(deliveries.max(0) as u64),
            // The same message buried twice (a crash in between) is stored once.
            msg_id: Some(format!("dead-{}-{sequence}", self.subjects.jobs_stream())),
            payload: message.payload.clone(),
        };
        match dead::bury(&self.js, letter).await {
            Ok(()) => {
                crate::metrics::get().dead_letters.with_label_values(&[what]).inc();
                tracing::error!(reason, "job buried in the dead-letter stream");
                AckKind::Term
            }
            Err(error) => {
                tracing::warn!(%error, reason, "cannot store the dead letter; the job is handed back");
                AckKind::Nak(Some(Duration::from_secs(5)))
            }
        }
    }
}

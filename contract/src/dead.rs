//! Dead letters: messages that will never be acted on, kept in the
//! `{prefix}_dead` stream with why, for operators to read and replay
//! (`nats/README.md`). Workers bury jobs that cannot run (poison, out of
//! deliveries) on `{prefix}.dead.{host}.{action}`; the api buries messages
//! that failed its checks (forged, foreign, malformed) on
//! `{prefix}.dead.{host}.rejected`.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;

/// Headers on a dead letter.
pub const ORIGINAL_SUBJECT: &str = "Vsfleet-Subject";
pub const REASON: &str = "Vsfleet-Reason";
pub const DELIVERIES: &str = "Vsfleet-Deliveries";

/// The action token of a rejected message's dead-letter subject.
pub const REJECTED: &str = "rejected";

/// How long a dead letter's store may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The most of a reason kept in a header: a reason may quote input.
const MAX_REASON: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("storing the dead letter: {0}")]
    Publish(#[from] crate::publish::PublishError),
}

/// One message to bury.
pub struct DeadLetter<'a> {
    /// Where it goes: `Subjects::dead(host, what)`.
    pub subject: String,
    /// Where it came from.
    pub original_subject: &'a str,
    pub reason: &'a str,
    pub deliveries: Option<u64>,
    /// Makes a second burial of the same message a no-op (a crash or a
    /// redelivery in between).
    pub msg_id: Option<String>,
    pub payload: Bytes,
}

/// Stores the dead letter and waits for JetStream to acknowledge it.
pub async fn bury(js: &jetstream::Context, letter: DeadLetter<'_>) -> Result<(), DeadLetterError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(ORIGINAL_SUBJECT, letter.original_subject);
    headers.insert(REASON, one_line(letter.reason).as_str());
    if let Some(deliveries) = letter.deliveries {
        headers.insert(DELIVERIES, deliveries.to_string().as_str());
    }
    if let Some(id) = &letter.msg_id {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    }
    crate::publish::acked(js, letter.subject, headers, letter.payload, TIMEOUT).await?;
    Ok(())
}

/// A header value: one line, bounded.
pub fn one_line(text: &str) -> String {
    let mut line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if line.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_bounded_line() {
        assert_eq!(one_line("a\r\nb"), "a  b");
        let long = "é".repeat(1000);
        let line = one_line(&long);
        assert!(line.len() <= MAX_REASON + '…'.len_utf8() && line.ends_with('…'));
    }
}

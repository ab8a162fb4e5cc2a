//! Publishing a worker's reports on JetStream and waiting for the store.

use std::time::Duration;

use async_nats::jetstream;
use serde::Serialize;
use vsfleet_contract::publish;

const TIMEOUT: Duration = Duration::from_secs(5);

pub use vsfleet_contract::publish::PublishError;

/// Publishes `body` as JSON with `msg_id` (JetStream drops a repeat of it)
/// and waits for the acknowledgement; returns the message's stream sequence.
pub async fn json<T: Serialize>(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    body: &T,
) -> Result<u64, PublishError> {
    let payload = serde_json::to_vec(body).expect("reports serialise");
    let ack = publish::acked(js, subject, publish::with_id(msg_id), payload.into(), TIMEOUT).await?;
    Ok(ack.sequence)
}

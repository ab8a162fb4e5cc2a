//! Publishing a worker's reports on JetStream and waiting for the store.

use std::time::Duration;

use async_nats::jetstream;
use serde::Serialize;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publishing to JetStream: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    #[error("JetStream did not acknowledge within {0:?}")]
    Timeout(Duration),
}

/// Publishes `body` as JSON with `msg_id` (JetStream drops a repeat of it)
/// and waits for the acknowledgement; returns the message's stream sequence.
pub async fn json<T: Serialize>(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    body: &T,
) -> Result<u64, PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    let payload = serde_json::to_vec(body).expect("reports serialise");
    let publish = async {
        let ack = js.publish_with_headers(subject, headers, payload.into()).await?;
        ack.await
    };
    match tokio::time::timeout(TIMEOUT, publish).await {
        Err(_) => Err(PublishError::Timeout(TIMEOUT)),
        Ok(result) => result.map(|ack| ack.sequence).map_err(Into::into),
    }
}

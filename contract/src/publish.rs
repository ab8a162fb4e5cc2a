//! Publishing to JetStream and waiting for the store: the one way every
//! service does it (the api's jobs, the workers' reports, the scheduler's
//! ticks, the dead letters), with one timeout over the publish and its
//! acknowledgement.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, publish::PublishAck};
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publishing to JetStream: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    #[error("JetStream did not acknowledge within {0:?}")]
    Timeout(Duration),
}

/// Headers with `Nats-Msg-Id`: JetStream stores a message once per id
/// within its duplicate window, so a repeated publish is dropped.
pub fn with_id(msg_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    headers
}

/// Publishes and waits, at most `timeout` in all, for JetStream to store
/// the message. The acknowledgement says whether it was a duplicate.
pub async fn acked(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    timeout: Duration,
) -> Result<PublishAck, PublishError> {
    let publish = async {
        let ack: PublishAckFuture = js.publish_with_headers(subject, headers, payload).await?;
        ack.await
    };
    match tokio::time::timeout(timeout, publish).await {
        Err(_) => Err(PublishError::Timeout(timeout)),
        Ok(result) => Ok(result?),
    }
}

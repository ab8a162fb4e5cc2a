//! Requests to a host's workers answered at once, outside the job queue
//! (core NATS request/reply on `{prefix}.control.{host}.*`): a forced stop,
//! a port offer. A host that does not answer is a 503 the caller can retry.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// How long a host has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `body` to `host` on `subject` and reads its answer; `what` names
/// the request in the messages ("a forced stop").
pub async fn ask<T: DeserializeOwned>(
    nats: &async_nats::Client,
    subject: String,
    body: &impl Serialize,
    host: &str,
    what: &str,
) -> Result<T, ApiError> {
    let body = serde_json::to_vec(body).map_err(anyhow::Error::from)?;
    let answer = tokio::time::timeout(TIMEOUT, nats.request(subject, body.into()))
        .await
        .map_err(|_| unavailable(format!("host {host} did not answer {what} within {} s", TIMEOUT.as_secs())))?
        .map_err(|e| unavailable(format!("host {host} cannot be reached for {what}: {e}")))?;
    serde_json::from_slice(&answer.payload)
        .map_err(|e| unavailable(format!("host {host} answered {what} with something else: {e}")))
}

pub fn unavailable(message: String) -> ApiError {
    ApiError::Unavailable { code: "host_unavailable", message }
}

//! The longest a request may take to be answered (`api.request_timeout_secs`).
//! Past it the caller gets 503 `request_timeout` with `Retry-After`, in the
//! API's JSON error shape (tower-http's `TimeoutLayer` answers with an empty
//! body). Only the answer's head is timed: an event stream's body goes on.
//! A bulk request is not timed: its answer is each server's outcome, and
//! each of its publishes is bounded by `nats.publish_timeout_ms`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::ApiError;

/// Not timed: see above.
const UNTIMED: &str = "/v1/servers/bulk";

pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.uri().path() == UNTIMED {
        return next.run(request).await;
    }
    let limit = Duration::from_secs(state.settings.api.request_timeout_secs);
    let method = request.method().as_str().to_owned();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_secs = limit.as_secs(), "request not answered in time");
            // The route's own count was dropped with its future: counted
            // here, under a route of its own.
            let labels = ["timed_out", method.as_str(), "503"];
            crate::metrics::get().requests.with_label_values(&labels).inc();
            ApiError::Unavailable {
                code: "request_timeout",
                message: format!(
                    "the request was not answered within {}s; what it committed stays committed \
                     (look before repeating it)",
                    limit.as_secs()
                ),
            }
            .into_response()
        }
    }
}

//! The longest a request may take to be answered (`api.request_timeout_secs`).
//! Past it the caller gets 503 `request_timeout` with `Retry-After`, in the
//! API's JSON error shape (tower-http's `TimeoutLayer` answers with an empty
//! body). Only the answer's head is timed: an event stream's body goes on.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::ApiError;

pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = Duration::from_secs(state.settings.api.request_timeout_secs);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_secs = limit.as_secs(), "request not answered in time");
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

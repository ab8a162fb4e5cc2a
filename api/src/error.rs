//! The one HTTP error type. Every variant has a stable machine `code` and a
//! status; database and unexpected errors are logged in full and answered
//! with an opaque 500, never with their text.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vsfleet_contract::{JobId, ServerStatus};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a request the server cannot read (bad JSON, bad id in the path).
    #[error("{0}")]
    BadRequest(String),
    /// 422: a well-formed request with a value that is not allowed.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// 401: no token, or a token nobody holds.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 404: no such thing, or it belongs to someone else.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: the server's state does not allow the action.
    #[error("{action} is not allowed while the server is {status}")]
    InvalidTransition { action: &'static str, status: ServerStatus },
    /// 409: another job for the server has not finished.
    #[error("job {0} for this server is still in flight; wait for it to finish")]
    JobInFlight(JobId),
    /// 503: a dependency is down; the request was not accepted.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// 500: logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid { code, .. } | ApiError::Unavailable { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::InvalidTransition { .. } => "invalid_transition",
            ApiError::JobInFlight(_) => "job_in_flight",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidTransition { .. } | ApiError::JobInFlight(_) => StatusCode::CONFLICT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn invalid(code: &'static str, message: impl ToString) -> Self {
        ApiError::Invalid { code, message: message.to_string() }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<crate::writer::WriteError> for ApiError {
    fn from(e: crate::writer::WriteError) -> Self {
        ApiError::Internal(anyhow::Error::new(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                "internal error; the server log has the details".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = json!({ "error": { "code": self.code(), "message": message } });
        if let ApiError::JobInFlight(job) = &self {
            body["error"]["job_id"] = json!(job);
        }
        (self.status(), Json(body)).into_response()
    }
}

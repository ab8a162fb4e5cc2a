//! The one HTTP error type. Every variant has a stable machine `code` and a
//! status; database and unexpected errors are logged in full and answered
//! with an opaque 500, never with their text.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vsfleet_contract::{JobId, ServerStatus};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a request the server cannot read (bad JSON, bad id in the path).
    #[error("{0}")]
    BadRequest(String),
    /// 422: a well-formed request with a value that is not allowed, or
    /// past a limit; `field` names the request field at fault when one is.
    #[error("{message}")]
    Invalid { code: &'static str, message: String, field: Option<&'static str> },
    /// 401: no token, a token nobody holds, a revoked token or a disabled
    /// user's. Answered with `WWW-Authenticate: Bearer`.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 409: the request conflicts with what exists (an email taken, an
    /// admin disabling themself).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 403: the caller is known but may not have this (the access check
    /// of another user's server, or of a server that is not running).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// 405: the path exists, the method does not.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 413: a body over the limit.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
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
    /// 500: a stored value the api cannot read. Shown: it names the value,
    /// and an operator has to mend the row.
    #[error("{0}")]
    Corrupt(String),
    /// 500: logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Forbidden { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::InvalidTransition { .. } => "invalid_transition",
            ApiError::JobInFlight(_) => "job_in_flight",
            ApiError::Corrupt(_) => "corrupt_data",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidTransition { .. } | ApiError::JobInFlight(_) | ApiError::Conflict { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn invalid(code: &'static str, message: impl ToString) -> Self {
        ApiError::Invalid { code, message: message.to_string(), field: None }
    }

    /// A 422 naming the request field at fault.
    pub fn invalid_field(code: &'static str, field: &'static str, message: impl ToString) -> Self {
        ApiError::Invalid { code, message: message.to_string(), field: Some(field) }
    }

    /// The error as `user` may read it: a 503's message can carry a
    /// worker's or Docker's words (a socket path, a data directory), which
    /// users who are not admins read without host paths.
    pub fn for_viewer(self, user: &crate::store::User) -> Self {
        match self {
            ApiError::Unavailable { code, message } if !user.is_admin => {
                ApiError::Unavailable { code, message: crate::redact::paths(&message).into_owned() }
            }
            other => other,
        }
    }

    /// How a refusal reads in the activity log: `refused: <code>`.
    pub fn as_refusal(&self) -> String {
        format!("refused: {}", self.code())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        crate::store::StoreError::from(e).into()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "a stored row cannot be read");
                ApiError::Corrupt(e.to_string())
            }
            other => ApiError::Internal(anyhow::Error::new(other).context("database")),
        }
    }
}

/// `Retry-After` of a 503, in seconds.
pub const RETRY_AFTER_SECS: &str = "5";

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `not_found`, `invalid_transition`, … (README, Errors).
    pub code: &'static str,
    /// For people; its words may change.
    pub message: String,
    /// With `job_in_flight`: the job to wait for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// With a 422: the request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl ApiError {
    /// `{"code", "message", …}`. An internal error is logged here and
    /// answered without its text.
    pub fn detail(&self) -> ErrorDetail {
        let message = match self {
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                "internal error; the server log has the details".to_owned()
            }
            other => other.to_string(),
        };
        ErrorDetail {
            code: self.code(),
            message,
            job_id: match self {
                ApiError::JobInFlight(job) => Some(*job),
                _ => None,
            },
            field: match self {
                ApiError::Invalid { field, .. } => *field,
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.detail() };
        let mut response = (self.status(), Json(body)).into_response();
        match self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // A dependency is down, or every host is full: worth asking
            // again soon, not at once.
            ApiError::Unavailable { .. } => {
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::User;

    #[test]
    fn users_read_a_503_without_host_paths_and_admins_whole() {
        let unavailable = || ApiError::Unavailable {
            code: "no_host_available",
            message: "h1 is degraded (connecting to /var/run/docker.sock: No such file)".into(),
        };
        let user = User { id: 2, email: "u@example.test".into(), is_admin: false };
        let admin = User { is_admin: true, ..user.clone() };
        assert_eq!(unavailable().for_viewer(&user).to_string(), "h1 is degraded (connecting to <path>: No such file)");
        assert_eq!(unavailable().for_viewer(&admin).to_string(), unavailable().to_string());
    }
}

//! Extractors that answer in the API's JSON error shape instead of axum's
//! plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::ApiError;
use crate::users::User;

/// The most a request body may hold; past it, 413 `payload_too_large`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// `Authorization: Bearer <token>`, resolved to its user. The scheme is
/// matched without regard to case (RFC 9110 §11.1).
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        state.tokens.user(&state.db, token).await?.map(CurrentUser).ok_or(ApiError::Unauthorized)
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// A JSON body; a malformed one is a 400, a wrongly typed one a 422, one
/// over [`BODY_LIMIT`] a 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::invalid("invalid_body", e.body_text())),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT })
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A JSON body that may be left out: no body (or an empty one) is
/// `T::default()`; one that is there is checked as [`ApiJson`] checks it.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
            }
            Err(e) => return Err(ApiError::BadRequest(e.body_text())),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(OptionalJson(v)),
            Err(e) if e.is_data() => Err(ApiError::invalid("invalid_body", e.to_string())),
            Err(e) => Err(ApiError::BadRequest(format!("the body is not JSON: {e}"))),
        }
    }
}

/// A query string; one that does not parse is a 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(ApiError::BadRequest(query_message(&e))),
        }
    }
}

fn query_message(e: &QueryRejection) -> String {
    format!("bad query string: {}", e.body_text().trim_start_matches("Failed to deserialize query string: "))
}

/// Path parameters; ones that cannot be read are a 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::BadRequest(e.body_text())),
            Err(e) => Err(ApiError::Internal(anyhow::anyhow!("path parameters: {}", e.body_text()))),
        }
    }
}

/// A server id from the path: digits only, positive, no leading zero.
pub fn server_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<vsfleet_contract::ServerId>().map(|id| id.as_i64()).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// A user or token id from the path: the same rules as a server id.
pub fn row_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<vsfleet_contract::ServerId>().map(|id| id.as_i64()).map_err(|_| {
        ApiError::BadRequest(format!("a {what} id is a positive integer without leading zeros, not {raw:?}"))
    })
}

/// A job id from the path: a UUID in canonical form (lowercase, hyphenated) only.
pub fn job_id(raw: &str) -> Result<vsfleet_contract::JobId, ApiError> {
    vsfleet_contract::JobId::parse_canonical(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

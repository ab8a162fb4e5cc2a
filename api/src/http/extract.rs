//! Extractors that answer in the API's JSON error shape instead of axum's
//! plain-text rejections.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::ApiError;
use crate::users::User;

/// `Authorization: Bearer <token>`, resolved to its user.
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        state.tokens.user(&state.db, token).await?.map(CurrentUser).ok_or(ApiError::Unauthorized)
    }
}

/// A JSON body; a malformed one is a 400, a wrongly typed one a 422.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::invalid("invalid_body", e.body_text())),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A server id from the path: digits only, positive.
pub fn server_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<vsfleet_contract::ServerId>().map(|id| id.as_i64()).map_err(|e| ApiError::BadRequest(e.to_string()))
}

//! The seed platform's own API (seed 000 §3–§7), for a frontend written
//! against it: the access check the control plane's Caddy asks before it
//! lets a browser into a server's system stack, and `POST /api/vm/control`.
//! Both are mapped onto the same rules and jobs as `/v1`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vsfleet_contract::{Action, ServerStatus};

use super::AppState;
use super::extract::{ApiJson, ApiPath, CurrentUser, bearer, cookie};
use super::views::{JobView, ServerView};
use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::lifecycle::{self, Actor, Wanted};
use crate::store::User;

/// The cookie the access check reads the API token from when a browser,
/// not a client, asks (Caddy's `forward_auth` passes the browser's cookies).
pub const SESSION_COOKIE: &str = "vsfleet_session";

/// `GET /api/checkauth/vm/{id}`: 200 when the caller (a bearer token, or
/// the token in the `vsfleet_session` cookie) owns the server or is an
/// admin, and the server is running. 401 without a valid token, 404 for a
/// server that does not exist or is deleted, 403 for someone else's server
/// or one that is not running. Reads only (the token cache, one row).
#[utoipa::path(get, path = "/api/checkauth/vm/{id}", tag = "seed",
    params(("id" = String, Path, description = "the server's id")),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Allowed), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn checkauth(State(state): State<AppState>, headers: HeaderMap, ApiPath(id): ApiPath<String>) -> Response {
    match check(&state, &headers, &id).await {
        Ok(user) => (StatusCode::OK, Json(Allowed { ok: true, user: user.email, server_id: id })).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The access check's yes.
#[derive(Serialize, ToSchema)]
pub struct Allowed {
    ok: bool,
    /// The caller's email.
    user: String,
    server_id: String,
}

async fn check(state: &AppState, headers: &HeaderMap, id: &str) -> Result<User, ApiError> {
    let token = bearer(headers).or_else(|| cookie(headers, SESSION_COOKIE)).ok_or(ApiError::Unauthorized)?;
    let user = state.tokens.user(&state.db, token).await?.ok_or(ApiError::Unauthorized)?;
    let id: i64 = id.parse::<vsfleet_contract::ServerId>().map_err(|_| ApiError::NotFound("server"))?.as_i64();
    let server = match state.db.server(id).await? {
        Some(server) if server.status != ServerStatus::Deleted => server,
        _ => return Err(ApiError::NotFound("server")),
    };
    if !server.visible_to(&user) {
        return Err(ApiError::Forbidden { code: "not_yours", message: "this server is not yours".into() });
    }
    if server.status != ServerStatus::Running {
        return Err(ApiError::Forbidden {
            code: "server_not_running",
            message: format!("server {id} is {}; start it first", server.status),
        });
    }
    Ok(user)
}

/// A server id as the seed's frontend sends it: a string (`"42"`) or a number.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SeedId {
    Text(String),
    Number(i64),
}

impl SeedId {
    fn parse(&self) -> Result<i64, ApiError> {
        let text = match self {
            SeedId::Text(text) => text.clone(),
            SeedId::Number(n) => n.to_string(),
        };
        text.parse::<vsfleet_contract::ServerId>()
            .map(|id| id.as_i64())
            .map_err(|e| ApiError::invalid_field("invalid_body", "virtualServerID", e))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// create, start, stop, delete, rename, restore or purge.
    action: String,
    name: Option<String>,
    #[serde(rename = "virtualServerID")]
    virtual_server_id: Option<SeedId>,
    #[serde(rename = "newName")]
    new_name: Option<String>,
}

/// `POST /api/vm/control` (seed 000 §3–§6): `create` with `name`; `start`,
/// `stop`, `delete`, `restore`, `purge` with `virtualServerID`; `rename`
/// with `virtualServerID` and `newName`. The answer is the `/v1` one with
/// `"success": true` and the id as the seed spells it (a string); a refusal
/// is `"success": false` beside the usual error, with the same status.
#[utoipa::path(post, path = "/api/vm/control", tag = "seed", request_body = Control, responses(
    (status = 202, description = "a job accepted (a create also has the server)", body = Done,
        headers(("Location" = String, description = "the job: `/v1/jobs/{id}`"))),
    (status = 200, description = "renamed", body = Done),
    (status = "default", description = "refused", body = Refused)))]
pub async fn control(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<Control>,
) -> Response {
    match act(&state, &user, body).await {
        Ok((StatusCode::ACCEPTED, answer @ Done { job: Some(_), .. })) => {
            let job = answer.job.as_ref().map(|j| j.id).expect("matched");
            super::handlers::Accepted(job, answer).into_response()
        }
        Ok((status, answer)) => (status, Json(answer)).into_response(),
        Err(error) => {
            let mut response =
                (error.status(), Json(Refused { success: false, error: error.detail() })).into_response();
            if let ApiError::Unavailable { .. } = error {
                let retry = axum::http::HeaderValue::from_static(crate::error::RETRY_AFTER_SECS);
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry);
            }
            response
        }
    }
}

/// What an action did, as the seed's frontend reads it.
#[derive(Serialize, ToSchema)]
pub struct Done {
    /// Always true here.
    success: bool,
    /// The server's id, as a string.
    #[serde(rename = "virtualServerID")]
    virtual_server_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<ServerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<JobView>,
}

/// A refusal, as the seed's frontend reads it.
#[derive(Serialize, ToSchema)]
pub struct Refused {
    /// Always false here.
    success: bool,
    error: ErrorDetail,
}

async fn act(state: &AppState, user: &User, body: Control) -> Result<(StatusCode, Done), ApiError> {
    let done = |id: i64, server, job| Done { success: true, virtual_server_id: id.to_string(), server, job };
    let alive = || lifecycle::live_hosts_or_none(&state.lifecycle);
    let id = || {
        body.virtual_server_id
            .as_ref()
            .ok_or_else(|| {
                ApiError::invalid_field("invalid_body", "virtualServerID", "this action needs virtualServerID")
            })?
            .parse()
    };
    let action = match body.action.as_str() {
        "create" => {
            let name = body
                .name
                .as_deref()
                .ok_or_else(|| ApiError::invalid_field("invalid_name", "name", "create needs a name"))?;
            let (server, job) = lifecycle::create(&state.lifecycle, user, name, Wanted::default(), None).await?;
            let id = server.id.as_i64();
            let server = ServerView::new(server, user, alive().await.as_deref());
            let job = JobView::new(job, user);
            return Ok((StatusCode::ACCEPTED, done(id, Some(server), Some(job))));
        }
        "rename" => {
            let id = id()?;
            let name = body
                .new_name
                .as_deref()
                .ok_or_else(|| ApiError::invalid_field("invalid_name", "newName", "rename needs newName"))?;
            let server = lifecycle::rename(&state.lifecycle, user, id, name).await?;
            let server = ServerView::new(server, user, alive().await.as_deref());
            return Ok((StatusCode::OK, done(id, Some(server), None)));
        }
        "start" => Action::Start,
        "stop" => Action::Stop,
        "delete" => Action::Delete,
        "restore" => Action::Restore,
        "purge" => Action::Purge,
        other => {
            return Err(ApiError::invalid_field(
                "invalid_action",
                "action",
                format!("{other:?} is not one of create, start, stop, delete, rename, restore, purge"),
            ));
        }
    };
    let id = id()?;
    let job = lifecycle::request(&state.lifecycle, Actor::User(user), id, action).await?;
    Ok((StatusCode::ACCEPTED, done(id, None, Some(JobView::new(job, user)))))
}

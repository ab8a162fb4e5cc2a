//! Users, tokens and the activity log over HTTP. Thin: the rules are in
//! [`crate::accounts`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, CurrentUser, row_id};
use super::views::{self, AccountView, ActivityView, NewTokenView, TokenView};
use crate::accounts::{self, By};
use crate::error::ApiError;

type Reply = Result<(StatusCode, Json<Value>), ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    #[serde(default)]
    admin: bool,
}

/// `POST /v1/users` (admins): the user and their first token, shown once.
pub async fn create_user(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiJson(body): ApiJson<NewUser>,
) -> Reply {
    let (user, token) = accounts::create_user(&state.db, By::User(&me), &body.email, body.admin).await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": AccountView::from(user), "token": NewTokenView::from(token) }))))
}

/// `GET /v1/users` (admins).
pub async fn list_users(State(state): State<AppState>, CurrentUser(me): CurrentUser) -> Reply {
    let users = accounts::list_users(&state.db, By::User(&me)).await?;
    Ok((StatusCode::OK, Json(json!({ "users": views::all::<_, AccountView>(users) }))))
}

/// `POST /v1/users/{id}/tokens` (admins, or the user for themself).
pub async fn create_token(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let token = accounts::create_token(&state.db, By::User(&me), row_id(&id, "user")?).await?;
    Ok((StatusCode::CREATED, Json(json!({ "token": NewTokenView::from(token) }))))
}

/// `GET /v1/users/{id}/tokens` (admins, or the user for themself): never secrets.
pub async fn list_tokens(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let tokens = accounts::list_tokens(&state.db, By::User(&me), row_id(&id, "user")?).await?;
    Ok((StatusCode::OK, Json(json!({ "tokens": views::all::<_, TokenView>(tokens) }))))
}

/// `DELETE /v1/tokens/{id}` (admins, or the token's owner).
pub async fn revoke_token(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let token = accounts::revoke_token(&state.db, Some(&state.tokens), By::User(&me), row_id(&id, "token")?).await?;
    Ok((StatusCode::OK, Json(json!({ "token": TokenView::from(token) }))))
}

/// `POST /v1/users/{id}/disable` and `/enable` (admins).
pub async fn disable_user(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    set_disabled(state, me, &id, true).await
}

pub async fn enable_user(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    set_disabled(state, me, &id, false).await
}

async fn set_disabled(state: AppState, me: crate::users::User, id: &str, disabled: bool) -> Reply {
    let id = row_id(id, "user")?;
    let user = accounts::set_disabled(&state.db, Some(&state.tokens), By::User(&me), id, disabled).await?;
    Ok((StatusCode::OK, Json(json!({ "user": AccountView::from(user) }))))
}

/// Entries per page of `GET /v1/activity`: 50 unless asked, at most 500.
const PAGE_DEFAULT: u32 = 50;
const PAGE_MAX: u32 = 500;

#[derive(Deserialize)]
pub struct ActivityQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

/// `GET /v1/activity[?limit=N][&before=ID]`: newest first; `next` is the
/// `before` of the next page, or null on the last.
pub async fn activity(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> Reply {
    let limit = q.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let page = accounts::activity(&state.db, &me, q.before, limit).await?;
    Ok((StatusCode::OK, Json(json!({ "activity": views::all::<_, ActivityView>(page.entries), "next": page.next }))))
}

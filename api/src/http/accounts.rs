//! Users, tokens and the activity log over HTTP. Thin: the rules are in
//! [`crate::accounts`].

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, CurrentUser, row_id};
use super::handlers::{Reply, ok};
use super::page::PageQuery;
use super::views::bodies::*;
use super::views::{self, AccountView, ActivityView, NewTokenView, TokenView};
use crate::accounts::{self, By};
use crate::error::ErrorBody;

/// A user id in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The user's id.
    #[allow(dead_code)]
    id: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    #[serde(default)]
    admin: bool,
}

/// Creates a user (admins): the user and their first token, its secret shown once.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = NewUser, responses(
    (status = 201, body = NewUserBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiJson(body): ApiJson<NewUser>,
) -> Reply<NewUserBody> {
    let (user, token) = accounts::create_user(&state.db, By::User(&me), &body.email, body.admin).await?;
    ok(StatusCode::CREATED, NewUserBody { user: AccountView::from(user), token: NewTokenView::from(token) })
}

/// Every user (admins), by id, a page at a time.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(PageQuery), responses(
    (status = 200, body = UsersBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Reply<UsersBody> {
    let rows = accounts::list_users(&state.db, By::User(&me), page.after_id()?, page.fetch()).await?;
    let (rows, next) = page.split(rows, |u| u.id.to_string());
    ok(StatusCode::OK, UsersBody { users: views::all::<_, AccountView>(rows), next })
}

/// A new token (admins, or the user for themself): its secret shown once.
#[utoipa::path(post, path = "/v1/users/{id}/tokens", tag = "users", params(UserPath), responses(
    (status = 201, body = NewTokenBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply<NewTokenBody> {
    let token = accounts::create_token(&state.db, By::User(&me), row_id(&id, "user")?).await?;
    ok(StatusCode::CREATED, NewTokenBody { token: NewTokenView::from(token) })
}

/// A user's tokens (admins, or the user for themself), by id, a page at a
/// time: never their secrets.
#[utoipa::path(get, path = "/v1/users/{id}/tokens", tag = "users", params(UserPath, PageQuery), responses(
    (status = 200, body = TokensBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Reply<TokensBody> {
    let user = row_id(&id, "user")?;
    let rows = accounts::list_tokens(&state.db, By::User(&me), user, page.after_id()?, page.fetch()).await?;
    let (rows, next) = page.split(rows, |t| t.id.to_string());
    ok(StatusCode::OK, TokensBody { tokens: views::all::<_, TokenView>(rows), next })
}

/// Revokes a token (admins, or the token's owner).
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "users",
    params(("id" = i64, Path, description = "the token's id")),
    responses((status = 200, body = TokenBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply<TokenBody> {
    let token = accounts::revoke_token(&state.db, Some(&state.tokens), By::User(&me), row_id(&id, "token")?).await?;
    ok(StatusCode::OK, TokenBody { token: TokenView::from(token) })
}

/// Disables a user (admins): their tokens stop working at once.
#[utoipa::path(post, path = "/v1/users/{id}/disable", tag = "users", params(UserPath), responses(
    (status = 200, body = UserBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn disable_user(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply<UserBody> {
    set_disabled(state, me, &id, true).await
}

/// Enables a disabled user (admins).
#[utoipa::path(post, path = "/v1/users/{id}/enable", tag = "users", params(UserPath), responses(
    (status = 200, body = UserBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn enable_user(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply<UserBody> {
    set_disabled(state, me, &id, false).await
}

async fn set_disabled(state: AppState, me: crate::users::User, id: &str, disabled: bool) -> Reply<UserBody> {
    let id = row_id(id, "user")?;
    let user = accounts::set_disabled(&state.db, Some(&state.tokens), By::User(&me), id, disabled).await?;
    ok(StatusCode::OK, UserBody { user: AccountView::from(user) })
}

/// Entries per page of `GET /v1/activity`: 50 unless asked, at most 500.
const PAGE_DEFAULT: u32 = 50;
const PAGE_MAX: u32 = 500;

#[derive(Deserialize, IntoParams)]
pub struct ActivityQuery {
    /// Entries per page: 50 unless asked, at most 500.
    limit: Option<u32>,
    /// The `next` of the page before.
    before: Option<i64>,
}

/// The activity log (the caller's own; everyone's for an admin), newest
/// first; `next` is the `before` of the next page, or null on the last.
#[utoipa::path(get, path = "/v1/activity", tag = "users", params(ActivityQuery), responses(
    (status = 200, body = ActivityBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn activity(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> Reply<ActivityBody> {
    let limit = q.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let page = accounts::activity(&state.db, &me, q.before, limit).await?;
    ok(StatusCode::OK, ActivityBody { activity: views::all::<_, ActivityView>(page.entries), next: page.next })
}

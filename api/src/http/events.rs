//! `GET /v1/events`: the change feed (servers' statuses, jobs' progress) as
//! Server-Sent Events, filtered to the caller's servers (every server for
//! an admin). Each event's id is its place in the feed: a client that
//! reconnects with `Last-Event-ID` (or `?after=`) gets everything after it
//! that is still kept (`api.events_retention_secs`); without one it starts
//! from now.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::extract::{ApiQuery, CurrentUser, bearer};
use crate::error::ApiError;
use crate::store::{Change, Cursor, Store};
use crate::users::TokenCache;

/// How often a follower looks for changes when it has seen them all.
const POLL: Duration = Duration::from_millis(250);
/// The most changes one look sends.
const BATCH: i64 = 200;
/// How often a follower's token is checked again: a revoked token, or a
/// disabled user, ends the stream within this.
const RECHECK: Duration = Duration::from_secs(10);
/// How often an idle follower moves its place to the feed's end, past
/// other tenants' changes it would otherwise look through again.
const SKIP_AHEAD: Duration = Duration::from_secs(5);

#[derive(Deserialize, utoipa::IntoParams)]
pub struct FollowQuery {
    /// For clients that cannot set `Last-Event-ID`.
    after: Option<String>,
}

/// Server-Sent Events: `server` (a server's new status) and `job` (a job's
/// progress) events, each with its place in the feed as its `id`.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(FollowQuery, ("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    responses(
        (status = 200, description = "the event stream", body = String, content_type = "text/event-stream"),
        (status = "default", description = "refused", body = crate::error::ErrorBody)))]
pub async fn follow(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<FollowQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let given = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned).or(query.after);
    let start = match given {
        Some(text) => text.trim().parse::<Cursor>().map_err(ApiError::BadRequest)?,
        None => state.db.changes_head().await?,
    };
    let follower = Follower {
        db: state.db.clone(),
        tokens: state.tokens.clone(),
        token: bearer(&headers).unwrap_or_default().to_owned(),
        all: user.is_admin,
        owner: user.id,
    };
    let feed = futures::stream::unfold((follower, start), move |(follower, cursor)| async move {
        let (changes, next) = follower.next_changes(cursor).await?;
        Some((futures::stream::iter(changes.into_iter().map(|c| Ok(event(c)))), (follower, next)))
    })
    .flatten()
    .take_until(state.closing.clone().cancelled_owned());
    Ok(Sse::new(feed).keep_alive(KeepAlive::default()))
}

struct Follower {
    db: Store,
    tokens: TokenCache,
    token: String,
    all: bool,
    owner: i64,
}

impl Follower {
    /// Waits until there are changes after `cursor`; returns them and the
    /// new cursor, or `None` once the caller's token no longer holds.
    async fn next_changes(&self, mut cursor: Cursor) -> Option<(Vec<Change>, Cursor)> {
        let (mut checked, mut skipped) = (Instant::now(), Instant::now());
        loop {
            // The feed's end is read before the look: a change recorded in
            // between sorts after it, so skipping to it skips none of ours.
            let head = match skipped.elapsed() >= SKIP_AHEAD {
                true => {
                    skipped = Instant::now();
                    self.db.changes_head().await.ok()
                }
                false => None,
            };
            match self.db.changes_after(self.all, self.owner, cursor, BATCH).await {
                Ok(changes) if !changes.is_empty() => {
                    let next = changes.last().map_or(cursor, Change::cursor);
                    return Some((changes, next));
                }
                Ok(_) => cursor = cursor.max(head.unwrap_or_default()),
                Err(error) => tracing::warn!(%error, "events: cannot read the change feed; trying again"),
            }
            if checked.elapsed() >= RECHECK {
                checked = Instant::now();
                if let Ok(None) = self.tokens.user(&self.db, &self.token).await {
                    tracing::info!(user = self.owner, "events: the follower's token no longer holds; stream ended");
                    return None;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn event(change: Change) -> Event {
    let id = change.cursor().to_string();
    let (kind, data) = match &change.job_id {
        Some(job_id) => (
            "job",
            json!({
                "job_id": job_id,
                "server_id": change.server_id,
                "action": change.action,
                "status": change.status,
                "at": change.at,
            }),
        ),
        None => ("server", json!({ "server_id": change.server_id, "status": change.status, "at": change.at })),
    };
    Event::default().id(id).event(kind).data(data.to_string())
}

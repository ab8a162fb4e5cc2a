//! The HTTP surface: routes, extractors, handlers. Handlers stay thin; the
//! rules live in `lifecycle`.

mod extract;
mod handlers;

use axum::Router;
use axum::routing::{get, post};

use crate::app::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/v1/servers", post(handlers::create_server).get(handlers::list_servers))
        .route(
            "/v1/servers/{id}",
            get(handlers::get_server).patch(handlers::rename_server).delete(handlers::delete_server),
        )
        .route("/v1/servers/{id}/jobs", get(handlers::server_jobs))
        .route("/v1/servers/{id}/containers", get(handlers::server_containers))
        .route("/v1/hosts", get(handlers::hosts))
        .route("/v1/servers/{id}/{action}", post(handlers::server_action))
        .route("/v1/jobs/{id}", get(handlers::get_job))
        .fallback(handlers::not_found)
        .with_state(state)
}

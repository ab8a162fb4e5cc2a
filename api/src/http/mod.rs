//! The HTTP surface: routes, extractors, handlers, and the connection loop
//! that serves them. Handlers stay thin; the rules live in `lifecycle` and
//! `accounts`.

mod accounts;
mod deadline;
mod events;
mod extract;
mod handlers;
mod metrics;
mod openapi;
mod page;
pub mod seed;
pub mod serve;
mod ui;
pub mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use tower_http::LatencyUnit;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use extract::BODY_LIMIT;

use crate::events::Syncs;
use crate::lifecycle::Lifecycle;
use crate::store::Store;

/// What the handlers reach: the flows below them. One allocation shared
/// by every request: axum clones the state for each handler and
/// middleware that takes it, and the flows hold NATS clients whose clones
/// are not free (measured: the clones were a tenth of the accept path).
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Shared>);

pub struct Shared {
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

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(std::sync::Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Every route of the API, each from its handler's `#[utoipa::path]`, so
/// the OpenAPI document lists exactly what is served; the dashboard's files
/// are not API and are merged in beside it.
pub fn router(state: AppState) -> Router {
    let (api, _) = api().split_for_parts();
    api.merge(ui::routes())
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), deadline::limit))
        // The access log: one line a request, when its answer is ready
        // (status, latency), in the request's span.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|_: &axum::extract::Request| tracing::Span::none())
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Millis))
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(metrics::REQUEST_ID)))
        .layer(axum::middleware::from_fn(metrics::trace))
        .layer(SetRequestIdLayer::new(HeaderName::from_static(metrics::REQUEST_ID), MakeRequestUuid))
        .with_state(state)
}

/// The OpenAPI document of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::readyz))
        .routes(routes!(metrics::scrape))
        .routes(routes!(openapi::document))
        .routes(routes!(handlers::create_server, handlers::list_servers))
        .routes(routes!(handlers::get_server, handlers::rename_server, handlers::delete_server))
        .routes(routes!(handlers::server_jobs))
        .routes(routes!(handlers::server_containers))
        .routes(routes!(handlers::add_domain, handlers::server_domains))
        .routes(routes!(handlers::remove_domain))
        .routes(routes!(handlers::hosts))
        .routes(routes!(handlers::bulk))
        .routes(routes!(handlers::purge_server))
        .routes(routes!(handlers::server_action))
        .routes(routes!(handlers::get_job))
        .routes(routes!(events::follow))
        .routes(routes!(seed::checkauth))
        .routes(routes!(seed::control))
        .routes(routes!(accounts::create_user, accounts::list_users))
        .routes(routes!(accounts::create_token, accounts::list_tokens))
        .routes(routes!(accounts::disable_user))
        .routes(routes!(accounts::enable_user))
        .routes(routes!(accounts::revoke_token))
        .routes(routes!(accounts::activity))
}

#[cfg(test)]
mod tests {
    /// The router is built from `routes!`, which puts each route in the
    /// OpenAPI document; a plain `.route(` would serve a path the document
    /// does not list. Only the dashboard's files (not API) are routed so.
    #[test]
    fn every_route_is_documented() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut plain = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let source = std::fs::read_to_string(&path).unwrap();
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let routed = line.contains(".route(") || line.contains(".route_service(") || line.contains(".nest(");
                if routed && !(name == "ui.rs" && line.contains("\"/ui")) {
                    plain.push(format!("{name}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(plain.is_empty(), "routes outside the OpenAPI document: {plain:#?}");
        let doc = super::openapi();
        assert!(doc.paths.paths.contains_key("/v1/servers/{id}"));
        assert!(!doc.paths.paths.keys().any(|p| p.starts_with("/ui")));
    }
}

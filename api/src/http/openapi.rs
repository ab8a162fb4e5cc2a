//! The OpenAPI 3.1 document, `GET /openapi.json`. It is generated from the
//! handlers' `#[utoipa::path]` annotations and the body types they answer
//! with, and the router is built from the same annotations
//! ([`utoipa_axum::routes!`]): a route is in the document because it is in
//! the router.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "vsfleet", description = "The control plane of virtual servers: one Docker-in-Docker \
        container per customer. Every answer that is not a success is an `ErrorBody` with a stable `code`."),
    modifiers(&Security),
    security(("bearer" = [])),
    tags(
        (name = "servers", description = "Virtual servers and their lifecycle"),
        (name = "jobs", description = "The jobs that carry out each action"),
        (name = "domains", description = "A server's domain names"),
        (name = "hosts", description = "Worker hosts (admins)"),
        (name = "users", description = "Users, tokens and the activity log"),
        (name = "events", description = "Live changes"),
        (name = "seed", description = "The seed platform's API"),
        (name = "health", description = "Probes, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(super::seed::SESSION_COOKIE))),
        );
    }
}

/// This document, serialised on first use: the router is built from the
/// same annotations ([`super::openapi`]), so it is the one being served.
#[utoipa::path(get, path = "/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
pub async fn document() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let text = DOCUMENT.get_or_init(|| super::openapi().to_pretty_json().expect("the OpenAPI document serialises"));
    ([(CONTENT_TYPE, "application/json")], text.as_str())
}

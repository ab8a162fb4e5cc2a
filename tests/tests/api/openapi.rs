//! `GET /openapi.json`: every operation it lists is called for real, and
//! every answer (successes and refusals) validates against the schema the
//! document gives for its status. The schemas are made strict here (no
//! property the document does not name), so a field added to an answer
//! but not to its type fails too. That every route of the router is in the
//! document is the api's unit test `http::tests::every_route_is_documented`.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// The document and what the test has checked against it.
struct Spec {
    doc: Value,
    /// Strict copies of the component schemas, for `$ref`s to resolve in.
    components: Value,
    called: BTreeSet<(String, String)>,
    /// Operations whose documented success was seen and validated.
    succeeded: BTreeSet<(String, String)>,
}

impl Spec {
    fn new(doc: Value) -> Spec {
        let mut components = doc["components"].clone();
        for schema in components["schemas"].as_object_mut().expect("component schemas").values_mut() {
            strict(schema);
        }
        Spec { doc, components, called: BTreeSet::new(), succeeded: BTreeSet::new() }
    }

    /// Every operation of the document, as (METHOD, path template).
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                all.insert((method.to_uppercase(), path.clone()));
            }
        }
        all
    }

    /// The schema the document gives for `status` of `method template`,
    /// with its content type; `default` when the status is not listed.
    fn response(&self, method: &Method, template: &str, status: StatusCode) -> (String, Value) {
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let responses = &op["responses"];
        let documented = &responses[status.as_str()];
        let response = if documented.is_object() {
            documented
        } else {
            assert!(!status.is_success(), "{method} {template} answered {status}, which the document does not list");
            &responses["default"]
        };
        let (content_type, media) =
            response["content"].as_object().and_then(|c| c.iter().next()).expect("a documented body");
        (content_type.clone(), media["schema"].clone())
    }

    /// Checks one real answer against the document.
    fn check(&mut self, method: &Method, template: &str, status: StatusCode, content_type: &str, body: &Value) {
        self.called.insert((method.to_string(), template.to_owned()));
        if status.is_success() {
            self.succeeded.insert((method.to_string(), template.to_owned()));
        }
        let (documented_type, schema) = self.response(method, template, status);
        let media = |t: &str| t.split(';').next().unwrap_or_default().trim().to_owned();
        assert_eq!(media(content_type), media(&documented_type), "{method} {template} {status}: content type");
        if media(content_type) != "application/json" {
            return;
        }
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.components,
            "allOf": [strict_copy(&schema)],
        });
        let validator = jsonschema::validator_for(&root).expect("the document's schema compiles");
        let errors: Vec<String> =
            validator.iter_errors(body).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{method} {template} {status} does not match its schema: {errors:?}\n{body:#}");
    }
}

/// No property the schema does not name (responses only gain fields
/// through the document).
fn strict(schema: &mut Value) {
    if let Some(object) = schema.as_object_mut() {
        if object.contains_key("properties") && !object.contains_key("additionalProperties") {
            object.insert("additionalProperties".into(), json!(false));
        }
        for value in object.values_mut() {
            strict(value);
        }
    } else if let Some(list) = schema.as_array_mut() {
        list.iter_mut().for_each(strict);
    }
}

fn strict_copy(schema: &Value) -> Value {
    let mut copy = schema.clone();
    strict(&mut copy);
    copy
}

/// Calls the api and checks the answer; returns it.
async fn call(
    app: &TestApp,
    spec: &mut Spec,
    method: Method,
    template: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.http.request(method.clone(), format!("http://{}{path}", app.addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = if content_type.starts_with("text/event-stream") {
        // The stream never ends: the status and type are what there is to check.
        Value::Null
    } else {
        let text = response.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    spec.check(&method, template, status, &content_type, &body);
    (status, body)
}

#[tokio::test]
async fn every_documented_operation_answers_as_its_schema_says() {
    let app = spawn_app().await;
    let admin = app.admin_token.clone();
    let user = app.create_user("openapi@example.test").await;

    let response = app.http.get(format!("http://{}/openapi.json", app.addr)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, serde_json::to_value(vsfleet_api::http::openapi()).unwrap(), "served as generated");
    let mut spec = Spec::new(doc);

    // The checks can fail: a server missing its status, or with a field
    // the document does not name, does not pass.
    let server_schema = json!({ "$ref": "#/components/schemas/ServerBody" });
    let root = |s: &Value| json!({ "components": spec.components, "allOf": [s] });
    let validator = jsonschema::validator_for(&root(&server_schema)).unwrap();
    assert!(!validator.is_valid(&json!({ "server": { "id": 1 } })));
    assert!(!validator.is_valid(&json!({ "server": {}, "extra": 1 })));

    let s = &mut spec;
    let (u, a) = (Some(user.as_str()), Some(admin.as_str()));

    // Probes and documents, without a token.
    call(&app, s, Method::GET, "/healthz", "/healthz", None, None).await;
    call(&app, s, Method::GET, "/readyz", "/readyz", None, None).await;
    call(&app, s, Method::GET, "/metrics", "/metrics", None, None).await;
    call(&app, s, Method::GET, "/openapi.json", "/openapi.json", None, None).await;

    // A server's life, as its owner.
    let (status, created) =
        call(&app, s, Method::POST, "/v1/servers", "/v1/servers", u, Some(json!({ "name": "oa one" }))).await;
    assert_eq!(status, 202, "{created}");
    let id = created["server"]["id"].as_i64().unwrap();
    let create_job = created["job"]["id"].as_str().unwrap().to_owned();
    app.wait_status(id, "running").await;
    let one = format!("/v1/servers/{id}");
    call(&app, s, Method::GET, "/v1/servers", "/v1/servers?include_deleted=true", u, None).await;
    call(&app, s, Method::GET, "/v1/servers/{id}", &one, u, None).await;
    call(&app, s, Method::PATCH, "/v1/servers/{id}", &one, u, Some(json!({ "name": "oa renamed" }))).await;
    call(&app, s, Method::GET, "/v1/servers/{id}/jobs", &format!("{one}/jobs"), u, None).await;
    call(&app, s, Method::GET, "/v1/jobs/{id}", &format!("/v1/jobs/{create_job}"), u, None).await;
    call(&app, s, Method::GET, "/v1/servers/{id}/containers", &format!("{one}/containers"), u, None).await;
    let domains = format!("{one}/domains");
    let (status, _) =
        call(&app, s, Method::POST, "/v1/servers/{id}/domains", &domains, u, Some(json!({ "name": "oa.example.com" })))
            .await;
    assert_eq!(status, 201);
    call(&app, s, Method::GET, "/v1/servers/{id}/domains", &domains, u, None).await;
    let (status, _) =
        call(&app, s, Method::DELETE, "/v1/servers/{id}/domains/{name}", &format!("{domains}/oa.example.com"), u, None)
            .await;
    assert_eq!(status, 200);
    let (status, _) =
        call(&app, s, Method::GET, "/api/checkauth/vm/{id}", &format!("/api/checkauth/vm/{id}"), u, None).await;
    assert_eq!(status, 200);

    let (status, stopped) =
        call(&app, s, Method::POST, "/v1/servers/{id}/{action}", &format!("{one}/stop"), u, None).await;
    assert_eq!(status, 202, "{stopped}");
    app.wait_job(stopped["job"]["id"].as_str().unwrap()).await;
    // A refusal: stop while stopped.
    let (status, _) = call(&app, s, Method::POST, "/v1/servers/{id}/{action}", &format!("{one}/stop"), u, None).await;
    assert_eq!(status, 409);
    let (status, started) = call(
        &app,
        s,
        Method::POST,
        "/api/vm/control",
        "/api/vm/control",
        u,
        Some(json!({ "action": "start", "virtualServerID": id.to_string() })),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    app.wait_job(started["job"]["id"].as_str().unwrap()).await;
    let (status, _) = call(
        &app,
        s,
        Method::POST,
        "/api/vm/control",
        "/api/vm/control",
        u,
        Some(json!({ "action": "reboot", "virtualServerID": id })),
    )
    .await;
    assert_eq!(status, 422);

    let (status, deleted) = call(&app, s, Method::DELETE, "/v1/servers/{id}", &one, u, None).await;
    assert_eq!(status, 202, "{deleted}");
    app.wait_job(deleted["job"]["id"].as_str().unwrap()).await;
    let (status, purged) =
        call(&app, s, Method::POST, "/v1/servers/{id}/purge", &format!("{one}/purge"), u, None).await;
    assert_eq!(status, 202, "{purged}");
    app.wait_job(purged["job"]["id"].as_str().unwrap()).await;
    let (status, _) = call(&app, s, Method::GET, "/v1/servers/{id}", &one, u, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&app, s, Method::GET, "/v1/servers", "/v1/servers", None, None).await;
    assert_eq!(status, 401);

    // Admins: hosts, bulk, users and tokens, the activity log.
    call(&app, s, Method::GET, "/v1/hosts", "/v1/hosts", a, None).await;
    let (status, _) = call(&app, s, Method::GET, "/v1/hosts", "/v1/hosts", u, None).await;
    assert_eq!(status, 404);
    let (status, bulk) = call(
        &app,
        s,
        Method::POST,
        "/v1/servers/bulk",
        "/v1/servers/bulk",
        a,
        Some(json!({ "action": "stop", "ids": [id, 999_999] })),
    )
    .await;
    assert_eq!((status.as_u16(), bulk["refused"].as_u64()), (200, Some(2)), "{bulk}");
    let (status, made) =
        call(&app, s, Method::POST, "/v1/users", "/v1/users", a, Some(json!({ "email": "oa-new@example.test" }))).await;
    assert_eq!(status, 201, "{made}");
    let new_user = made["user"]["id"].as_i64().unwrap();
    call(&app, s, Method::GET, "/v1/users", "/v1/users", a, None).await;
    let tokens = format!("/v1/users/{new_user}/tokens");
    let (status, token) = call(&app, s, Method::POST, "/v1/users/{id}/tokens", &tokens, a, None).await;
    assert_eq!(status, 201);
    call(&app, s, Method::GET, "/v1/users/{id}/tokens", &tokens, a, None).await;
    let token_id = token["token"]["id"].as_i64().unwrap();
    call(&app, s, Method::DELETE, "/v1/tokens/{id}", &format!("/v1/tokens/{token_id}"), a, None).await;
    call(&app, s, Method::POST, "/v1/users/{id}/disable", &format!("/v1/users/{new_user}/disable"), a, None).await;
    call(&app, s, Method::POST, "/v1/users/{id}/enable", &format!("/v1/users/{new_user}/enable"), a, None).await;
    call(&app, s, Method::GET, "/v1/activity", "/v1/activity?limit=5", a, None).await;
    call(&app, s, Method::GET, "/v1/events", "/v1/events", u, None).await;

    let missed: Vec<_> = spec.operations().difference(&spec.called).cloned().collect();
    assert!(missed.is_empty(), "documented operations the test did not call: {missed:?}");
    let failed: Vec<_> = spec.operations().difference(&spec.succeeded).cloned().collect();
    assert!(failed.is_empty(), "documented operations never answered with a success: {failed:?}");
    app.teardown().await;
}

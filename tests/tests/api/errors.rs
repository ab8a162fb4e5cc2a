//! Refusals: each with its documented status and stable code, and nothing
//! written for a refused request.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{eventually, spawn_app};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test]
async fn bad_input_gets_the_documented_error() {
    let app = spawn_app().await;
    let token = app.admin_token.clone();

    let (status, body) = app.call(Method::GET, "/v1/servers", None, None).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (status, _) = app.call(Method::GET, "/v1/servers", Some("vsf_not_a_token"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    for name in ["ab", "web-server", "x".repeat(31).as_str(), "ok/../../etc", " lead"] {
        let (status, body) = app.post("/v1/servers", json!({ "name": name })).await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_name"), "{name:?}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("name"), "{body}");
    }
    let (status, body) = app.post("/v1/servers", json!({ "name": "geras", "cpus": 0 })).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"));
    let (status, body) = app.post("/v1/servers", json!({ "nme": "geras" })).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"), "{body}");
    let resp = app
        .http
        .post(format!("http://{}/v1/servers", app.addr))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "bad_request");

    for bad in ["abc", "0", "-1", "1.5", "99999999999999999999"] {
        let (status, body) = app.get(&format!("/v1/servers/{bad}")).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"), "{bad}: {body}");
    }
    let (status, body) = app.get("/v1/servers/424242").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = app.get("/v1/jobs/not-a-uuid").await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"));

    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM servers").fetch_one(&app.db).await.unwrap();
    assert_eq!(rows, 0, "a refused request wrote a server");
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs").fetch_one(&app.db).await.unwrap();
    assert_eq!(rows, 0, "a refused request wrote a job");
    app.teardown().await;
}

#[tokio::test]
async fn another_users_server_is_not_found() {
    let app = spawn_app().await;
    let id = app.create_running("svetimas", json!({})).await;
    let other = app.create_user("other@example.test").await;
    for (method, path) in [
        (Method::GET, format!("/v1/servers/{id}")),
        (Method::POST, format!("/v1/servers/{id}/stop")),
        (Method::DELETE, format!("/v1/servers/{id}")),
        (Method::GET, format!("/v1/servers/{id}/jobs")),
    ] {
        let (status, body) = app.call(method.clone(), &path, Some(&other), Some(json!({}))).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{method} {path}: {body}");
    }
    let (_, job_id): (i64, String) = sqlx::query_as("SELECT server_id, id FROM jobs WHERE server_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let (status, _) = app.call(Method::GET, &format!("/v1/jobs/{job_id}"), Some(&other), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.call(Method::GET, "/v1/servers", Some(&other), None).await;
    assert_eq!(list["servers"], json!([]));
    assert_eq!(app.server(id).await["status"], "running", "the other user changed nothing");
    app.teardown().await;
}

#[tokio::test]
async fn a_transition_the_state_does_not_allow_gets_409() {
    let app = spawn_app().await;
    let id = app.create_running("būsena", json!({})).await;
    for action in ["start", "restore", "purge"] {
        let (status, body) = app.post(&format!("/v1/servers/{id}/{action}"), json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "invalid_transition"), "{action}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("running"), "{body}");
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_request_while_a_job_is_in_flight_gets_409_naming_it() {
    let mut app = spawn_app().await;
    let id = app.create_running("užimtas", json!({})).await;
    // No worker: the next job stays queued for as long as the test needs.
    app.stop_worker().await;
    let (status, body) = app.post(&format!("/v1/servers/{id}/stop"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let queued = body["job"]["id"].as_str().unwrap().to_owned();
    for action in ["start", "restart", "stop"] {
        let (status, body) = app.post(&format!("/v1/servers/{id}/{action}"), json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "job_in_flight"), "{body}");
        assert_eq!(body["error"]["job_id"], queued.as_str());
        assert!(body["error"]["message"].as_str().unwrap().contains(&queued));
    }
    app.start_worker().await;
    assert_eq!(app.wait_job(&queued).await["status"], "succeeded");
    app.wait_status(id, "stopped").await;
    app.teardown().await;
}

#[tokio::test]
async fn concurrent_requests_for_one_server_accept_exactly_one_and_never_lock_the_database() {
    let mut app = spawn_app().await;
    let id = app.create_running("lenktynės", json!({})).await;
    app.stop_worker().await;
    let token = app.admin_token.clone();
    let app_ref = &app;
    let requests = (0..40).map(|n| {
        let token = token.clone();
        async move {
            if n % 2 == 0 {
                app_ref.call(Method::POST, &format!("/v1/servers/{id}/restart"), Some(&token), Some(json!({}))).await.0
            } else {
                let name = format!("vardas {n}");
                app_ref
                    .call(Method::PATCH, &format!("/v1/servers/{id}"), Some(&token), Some(json!({ "name": name })))
                    .await
                    .0
            }
        }
    });
    let statuses = futures::future::join_all(requests).await;
    let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
    let conflicts = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    let renamed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!((accepted, conflicts, renamed), (1, 19, 20), "{statuses:?}");
    let (in_flight,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE server_id = $1 AND status IN ('queued', 'running')")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(in_flight, 1);
    app.start_worker().await;
    eventually("the restart finishes", || async {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE server_id = $1 AND status = 'succeeded'")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .ok()?;
        (n == 2).then_some(())
    })
    .await;
    app.teardown().await;
}

#[tokio::test]
async fn the_worker_refuses_a_runtime_docker_does_not_know() {
    let mut settings = vsfleet_contract::Settings::default();
    settings.worker.runtime = "vsfleet-no-such-runtime".into();
    let dir = tempfile::tempdir().unwrap();
    settings.worker.data_root = dir.path().to_owned();
    let err = match vsfleet_worker::Worker::build(settings).await {
        Ok(_) => panic!("the worker started with an unregistered runtime"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("vsfleet-no-such-runtime") && err.contains("not registered"), "{err}");
    assert!(err.contains("runc"), "the message lists the registered runtimes: {err}");
}

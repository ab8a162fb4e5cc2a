//! Limits by default: a server gets the configured CPU and memory limits
//! when its request names none, a request above the configured maxima (or
//! below the hard minima) is refused naming the field, and a user who is
//! not an admin may hold only so many live servers.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

async fn create_as(app: &TestApp, token: &str, name: &str) -> (StatusCode, Value) {
    app.call(Method::POST, "/v1/servers", Some(token), Some(json!({ "name": name }))).await
}

#[tokio::test]
async fn a_server_without_limits_gets_the_defaults_and_limits_above_the_maxima_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let (status, created) = app.post("/v1/servers", json!({ "name": "numatytas" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!((created["server"]["cpus"].as_f64(), created["server"]["memory_mb"].as_i64()), (Some(1.0), Some(1024)));
    let job = created["job"]["id"].as_str().unwrap();
    let (payload,): (String,) =
        sqlx::query_as("SELECT payload FROM jobs WHERE id = $1").bind(job).fetch_one(&app.db).await.unwrap();
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["spec"], json!({ "cpus": 1.0, "memory_mb": 1024 }), "the job carries the defaults");
    assert_eq!(app.wait_job(job).await["status"], "succeeded");
    let id = created["server"]["id"].as_i64().unwrap();
    let host_config = app.inspect(id).await.unwrap().host_config.unwrap();
    assert_eq!((host_config.nano_cpus, host_config.memory), (Some(1_000_000_000), Some(1024 * 1024 * 1024)));

    // Defaults: max_cpus 4, max_memory_mb 16384; hard minima 0.01 and 6.
    for (body, field) in [
        (json!({ "name": "per daug", "cpus": 4.5 }), "cpus"),
        (json!({ "name": "per daug", "cpus": 0.001 }), "cpus"),
        (json!({ "name": "per daug", "memory_mb": 16385 }), "memory_mb"),
        (json!({ "name": "per daug", "memory_mb": 5 }), "memory_mb"),
        (json!({ "name": "per daug", "cpus": 2, "memory_mb": 1_u64 << 40 }), "memory_mb"),
    ] {
        let (status, answer) = app.post("/v1/servers", body.clone()).await;
        assert_eq!((status, code(&answer)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"), "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{answer}");
    }
    let (status, answer) = app.post("/v1/servers", json!({ "name": "x" })).await;
    assert_eq!((status, answer["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("name")));
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM servers").fetch_one(&app.db).await.unwrap();
    assert_eq!(rows, 1, "a refused create wrote a server");
    app.teardown().await;
}

/// `api.max_servers_per_user` is 10 by default; the test sets it to 2 so the
/// third server plays the part of the eleventh without creating ten.
#[tokio::test]
async fn a_user_past_max_servers_per_user_is_refused_while_an_admin_is_not() {
    let app = spawn_app_with(|s| s.api.max_servers_per_user = 2).await;
    let ona = app.create_user("ona@example.test").await;
    let mut ids = Vec::new();
    for name in ["pirmas", "antras"] {
        let (status, body) = create_as(&app, &ona, name).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["server"]["id"].as_i64().unwrap());
    }
    let (status, body) = create_as(&app, &ona, "trečias").await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_reached"), "{body}");
    assert_eq!(body["error"]["field"], "servers", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains('2'), "{body}");

    // Admins are exempt.
    for name in ["admino 1", "admino 2", "admino 3"] {
        let (status, body) = app.post("/v1/servers", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    // A deleted server does not count. (Marked in the database once its
    // create is done: the count is what is under test, the delete job is
    // tested elsewhere.)
    settled(&app, ids[0]).await;
    sqlx::query("UPDATE servers SET status = 'deleted' WHERE id = $1").bind(ids[0]).execute(&app.db).await.unwrap();
    let (status, body) = create_as(&app, &ona, "trečias").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Racing creates: the count is taken in the insert's transaction, so of
    // six at once for a user with none, exactly two pass.
    let jonas = app.create_user("jonas@example.test").await;
    let answers = join_all((0..6).map(|n| {
        let (app, jonas) = (&app, &jonas);
        async move { create_as(app, jonas, &format!("lenktynės {n}")).await }
    }))
    .await;
    let accepted = answers.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).count();
    let refused = answers.iter().filter(|(s, b)| *s == StatusCode::UNPROCESSABLE_ENTITY && code(b) == "limit_reached");
    assert_eq!((accepted, refused.count()), (2, 4), "{answers:?}");
    let (live,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM servers s JOIN users u ON u.id = s.owner_id WHERE u.email = 'jonas@example.test'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(live, 2);

    // Let the creates finish before teardown removes their containers.
    let (_, list) = app.get("/v1/servers").await;
    for server in list["servers"].as_array().unwrap() {
        settled(&app, server["id"].as_i64().unwrap()).await;
    }
    app.teardown().await;
}

/// Waits until server `id` has no job in flight.
async fn settled(app: &TestApp, id: i64) {
    eventually(&format!("server {id} has no job in flight"), || async move {
        let (busy,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE server_id = $1 AND status IN ('queued', 'running')")
                .bind(id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        (busy == 0).then_some(())
    })
    .await
}

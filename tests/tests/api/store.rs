//! The store on either database (`TEST_POSTGRES_URL` selects
//! PostgreSQL): a value the api cannot read is an error that names it, and
//! two api replicas on one database accept each request once.

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

async fn call_at(app: &vsfleet_tests::app::TestApp, addr: SocketAddr, path: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .request(Method::POST, format!("http://{addr}{path}"))
        .bearer_auth(&app.admin_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_corrupt_status_in_a_row_is_an_error_that_names_it_not_a_failed_server() {
    let app = spawn_app().await;
    let id = app.create_running("sugadintas", json!({})).await;
    sqlx::query("UPDATE servers SET status = 'bogus' WHERE id = $1").bind(id).execute(&app.db).await.unwrap();

    let (status, body) = app.get(&format!("/v1/servers/{id}")).await;
    assert_eq!((status, code(&body)), (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_data"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"bogus\"") && message.contains("server status"), "{message}");
    let (status, body) = app.get("/v1/servers").await;
    assert_eq!((status, code(&body)), (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_data"), "{body}");
    // A request reads the row on the write path: refused the same way, and nothing is queued.
    let (status, body) = app.post(&format!("/v1/servers/{id}/stop"), json!({})).await;
    assert_eq!((status, code(&body)), (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_data"), "{body}");
    let (jobs,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE server_id = $1").bind(id).fetch_one(&app.db).await.unwrap();
    assert_eq!(jobs, 1, "only the create");

    // A job whose server id is not a server id.
    let (job,): (String,) =
        sqlx::query_as("SELECT id FROM jobs WHERE server_id = $1").bind(id).fetch_one(&app.db).await.unwrap();
    sqlx::query("UPDATE jobs SET server_id = -$1 WHERE id = $2").bind(id).bind(&job).execute(&app.db).await.unwrap();
    let (status, body) = app.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!((status, code(&body)), (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_data"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("server id"), "{body}");
    sqlx::query("UPDATE jobs SET server_id = $1 WHERE id = $2").bind(id).bind(&job).execute(&app.db).await.unwrap();

    // Mended by hand, the server reads and acts again.
    sqlx::query("UPDATE servers SET status = 'running' WHERE id = $1").bind(id).execute(&app.db).await.unwrap();
    assert_eq!(app.act(id, "stop").await["status"], "succeeded");
    app.wait_status(id, "stopped").await;
    app.teardown().await;
}

#[tokio::test]
async fn two_api_replicas_on_one_database_accept_each_request_once_and_finish_every_job() {
    const SERVERS: usize = 10;
    const ROUNDS: usize = 5;
    let mut app = spawn_app().await;
    let second = app.start_api_replica().await;
    let app_ref = &app;
    let ids: Vec<i64> = futures::future::join_all(
        (0..SERVERS).map(|n| async move { app_ref.create_running(&format!("replika {n}"), json!({})).await }),
    )
    .await;

    // Each round asks both replicas, at once, to act on every server:
    // 2 × SERVERS × ROUNDS = 100 requests, half of them to each replica.
    let mut accepted_jobs = Vec::new();
    for round in 0..ROUNDS {
        let action = if round % 2 == 0 { "stop" } else { "start" };
        let requests = ids.iter().flat_map(|id| {
            let path = format!("/v1/servers/{id}/{action}");
            [app.addr, second].map(|addr| {
                let (app, path) = (&app, path.clone());
                async move { (*id, call_at(app, addr, &path).await) }
            })
        });
        let answers = futures::future::join_all(requests).await;
        for id in &ids {
            let mine: Vec<&(StatusCode, Value)> = answers.iter().filter(|(i, _)| i == id).map(|(_, a)| a).collect();
            let accepted: Vec<&Value> =
                mine.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).map(|(_, body)| body).collect();
            assert_eq!(accepted.len(), 1, "round {round}, server {id}: {mine:?}");
            let refused = mine.iter().find(|(s, _)| *s != StatusCode::ACCEPTED).unwrap();
            assert_eq!(refused.0, StatusCode::CONFLICT, "{refused:?}");
            accepted_jobs.push(accepted[0]["job"]["id"].as_str().unwrap().to_owned());
        }
        for job in &accepted_jobs[round * SERVERS..] {
            assert_eq!(app.wait_job(job).await["status"], "succeeded", "job {job}");
        }
    }

    // Every job ended, once: one row each, one outcome each in the activity log.
    let (rows,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE action IN ('stop', 'start')").fetch_one(&app.db).await.unwrap();
    assert_eq!(rows as usize, SERVERS * ROUNDS);
    let (unfinished,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE status <> 'succeeded'").fetch_one(&app.db).await.unwrap();
    assert_eq!(unfinished, 0);
    let (outcomes,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM activity WHERE action IN ('stop', 'start') AND result = 'succeeded'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(outcomes as usize, SERVERS * ROUNDS, "an event applied twice would log its outcome twice");
    for id in &ids {
        app.wait_status(*id, "stopped").await;
    }
    app.teardown().await;
}

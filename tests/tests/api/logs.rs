//! `log.format = "json"`: the services log one JSON object a line, each
//! with the spans it was in, so a job's lines carry its job and server ids,
//! and one request's api and worker lines share its trace id (the
//! `traceparent` it came with travels in the job's NATS headers); each
//! request has one access line with its request id, status and latency.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REQUEST_ID: &str = "req-7f3c";

fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect()
}

/// The messages of the lines that were in a span with `field` = `value`.
fn messages_in(lines: &[Value], field: &str, value: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["spans"].as_array().is_some_and(|spans| spans.iter().any(|s| s[field] == value)))
        .filter_map(|l| l["fields"]["message"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn json_logs_carry_the_job_and_server_ids_and_one_trace_id_from_api_to_worker() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    let env = [("VSFLEET_LOG__FORMAT", "json".to_owned())];
    let worker = app.start_worker_process(&env).await;
    app.stop_api().await;
    let api = app.spawn_service("vsfleet-api", &env);
    app.wait_api_answers().await;

    let response = app
        .http
        .post(format!("http://{}/v1/servers", app.addr))
        .bearer_auth(&app.admin_token)
        .header("traceparent", TRACEPARENT)
        .header("x-request-id", REQUEST_ID)
        .json(&json!({ "name": "zurnalas" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], REQUEST_ID, "the caller's request id is sent back");
    let body: Value = response.json().await.unwrap();
    let (id, job) = (body["server"]["id"].as_i64().unwrap(), body["job"]["id"].as_str().unwrap().to_owned());
    assert_eq!(app.wait_job(&job).await["status"], "succeeded");

    let worker_lines = json_lines(&app.services[worker].log());
    assert!(worker_lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    let of_job: Vec<&Value> = worker_lines
        .iter()
        .filter(|l| {
            l["spans"].as_array().is_some_and(|spans| {
                spans.iter().any(|s| s["job_id"] == job.as_str() && s["server_id"] == id.to_string().as_str())
            })
        })
        .collect();
    assert!(of_job.iter().any(|l| l["fields"]["message"] == "job started"), "{of_job:?}");
    assert!(messages_in(&worker_lines, "trace_id", TRACE_ID).contains(&"job started".to_owned()));
    let api_lines = json_lines(&app.services[api].log());
    let accepted = messages_in(&api_lines, "trace_id", TRACE_ID);
    assert!(accepted.contains(&"server accepted for creation".to_owned()), "{accepted:?}");
    // The access log: one line for the request, in its span (request id,
    // method, path), with its status and latency.
    let access: Vec<&Value> = api_lines
        .iter()
        .filter(|l| l["spans"].as_array().is_some_and(|spans| spans.iter().any(|s| s["request_id"] == REQUEST_ID)))
        .filter(|l| l["fields"]["status"] == 202)
        .collect();
    assert_eq!(access.len(), 1, "{access:?}");
    let span = access[0]["spans"].as_array().unwrap().iter().find(|s| s["request_id"] == REQUEST_ID).unwrap();
    assert_eq!((span["method"].as_str(), span["path"].as_str()), (Some("POST"), Some("/v1/servers")));
    assert!(access[0]["fields"]["latency"].is_string() || access[0]["fields"]["latency"].is_number(), "{access:?}");
    app.teardown().await;
}

//! `log.format = "json"`: the services log one JSON object a line, each
//! with the spans it was in, so a job's lines carry its job and server ids.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_job_and_server_ids() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    let env = [("VSFLEET_LOG__FORMAT", "json".to_owned())];
    let worker = app.start_worker_process(&env).await;
    let api = app.start_api_process().await;
    let (status, body) = app.post("/v1/servers", json!({ "name": "zurnalas" })).await;
    assert_eq!(status, 202, "{body}");
    let (id, job) = (body["server"]["id"].as_i64().unwrap(), body["job"]["id"].as_str().unwrap().to_owned());
    assert_eq!(app.wait_job(&job).await["status"], "succeeded");

    // The api runs here with the default format: human lines.
    assert!(app.services[api].log().lines().any(|l| !l.trim_start().starts_with('{')), "the default is human");
    let log = app.services[worker].log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    let of_job: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["spans"].as_array().is_some_and(|spans| {
                spans.iter().any(|s| s["job_id"] == job.as_str() && s["server_id"] == id.to_string().as_str())
            })
        })
        .collect();
    let messages: Vec<&str> = of_job.iter().filter_map(|l| l["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"job started"), "{messages:?}");
    app.teardown().await;
}

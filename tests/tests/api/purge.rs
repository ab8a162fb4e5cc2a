//! Purge with or without the data, and admins' bulk actions.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TEST_IMAGE, eventually, spawn_app, spawn_app_with};

fn archives(root: &std::path::Path, id: i64) -> Vec<std::path::PathBuf> {
    let prefix = format!("{id}-deleted-");
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_purge_that_keeps_the_data_forgets_the_server_and_leaves_its_archive() {
    let app = spawn_app().await;
    let (kept, gone) =
        (app.create_running("saugomas", json!({})).await, app.create_running("dingsta", json!({})).await);
    for id in [kept, gone] {
        assert_eq!(app.act(id, "delete").await["status"], "succeeded");
    }
    std::fs::write(archives(&app.data_root(), kept)[0].join("apps/notes.txt"), "keep me").unwrap();
    // Kept archives count against no quota: only an admin keeps them.
    let user = app.create_user("tenant@example.test").await;
    let path = format!("/v1/servers/{kept}/purge");
    let (status, body) = app.call(reqwest::Method::POST, &path, Some(&user), Some(json!({ "keep_data": true }))).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (422, Some("keep_data_not_allowed")), "{body}");

    let (status, body) = app.post(&format!("/v1/servers/{kept}/purge"), json!({ "keep_data": true })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(app.wait_job(body["job"]["id"].as_str().unwrap()).await["status"], "succeeded");
    let (status, _) = app.get(&format!("/v1/servers/{kept}")).await;
    assert_eq!(status, 404, "the server is forgotten");
    let left = archives(&app.data_root(), kept);
    assert_eq!(left.len(), 1, "the archive stays");
    assert_eq!(std::fs::read_to_string(left[0].join("apps/notes.txt")).unwrap(), "keep me");

    // Without the option (an empty body, or none at all) the data goes.
    assert_eq!(app.act(gone, "purge").await["status"], "succeeded");
    assert!(archives(&app.data_root(), gone).is_empty());
    let (status, body) = app.post(&format!("/v1/servers/{gone}/purge"), json!({ "keep": true })).await;
    assert_eq!(status, 422, "an unknown option is refused: {body}");

    std::fs::remove_dir_all(&left[0]).unwrap(); // the test's own cleanup
    app.teardown().await;
}

#[tokio::test]
async fn a_bulk_purge_of_failed_servers_purges_exactly_those() {
    let mut app = spawn_app_with(|s| s.worker.image = "vsfleet-no-such-image:latest".into()).await;
    let mut failed = Vec::new();
    for name in ["blogas1", "blogas2"] {
        let (status, body) = app.post("/v1/servers", json!({ "name": name })).await;
        assert_eq!(status, 202, "{body}");
        let id = body["server"]["id"].as_i64().unwrap();
        app.wait_status(id, "failed").await;
        failed.push(id);
    }
    // The worker gets the right image back; these servers are fine.
    app.stop_worker().await;
    app.settings.worker.image = TEST_IMAGE.into();
    app.start_worker().await;
    let running = app.create_running("geras", json!({})).await;
    let deleted = app.create_running("istrintas", json!({})).await;
    assert_eq!(app.act(deleted, "delete").await["status"], "succeeded");

    // Not for users.
    let user = app.create_user("user@example.test").await;
    let bulk = json!({ "action": "purge", "status": "failed" });
    let (status, _) = app.call(Method::POST, "/v1/servers/bulk", Some(&user), Some(bulk.clone())).await;
    assert_eq!(status, 404);
    for (body, why) in [
        (json!({ "action": "purge" }), "no selection"),
        (json!({ "action": "purge", "ids": [1], "status": "failed" }), "both selections"),
        (json!({ "action": "explode", "ids": [1] }), "no such action"),
        (json!({ "action": "purge", "status": "sad" }), "no such status"),
        (json!({ "action": "stop", "ids": [1], "keep_data": true }), "keep_data without purge"),
    ] {
        let (status, answer) = app.post("/v1/servers/bulk", body).await;
        assert_eq!(status, 422, "{why}: {answer}");
    }

    let (status, body) = app.post("/v1/servers/bulk", bulk).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["refused"].as_u64()), (Some(2), Some(0)), "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.iter().map(|r| r["server_id"].as_i64().unwrap()).collect::<Vec<_>>(), failed);
    for result in results {
        assert_eq!(app.wait_job(result["job"]["id"].as_str().unwrap()).await["status"], "succeeded", "{result}");
    }
    for id in &failed {
        let (status, _) = app.get(&format!("/v1/servers/{id}")).await;
        assert_eq!(status, 404, "server {id} is purged");
        assert!(!app.data_root().join(id.to_string()).exists() && archives(&app.data_root(), *id).is_empty());
    }
    assert_eq!(app.server(running).await["status"], "running");
    assert_eq!(app.server(deleted).await["status"], "deleted");
    assert_eq!(archives(&app.data_root(), deleted).len(), 1);

    // By id: one job or one refusal per server.
    let (status, body) =
        app.post("/v1/servers/bulk", json!({ "action": "purge", "ids": [running, deleted, 999999] })).await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<_> = body["results"].as_array().unwrap().iter().map(|r| r["error"]["code"].clone()).collect();
    assert_eq!(codes, vec![json!("invalid_transition"), serde_json::Value::Null, json!("not_found")], "{body}");
    let job = body["results"][1]["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_job(&job).await["status"], "succeeded");
    eventually("the deleted one is purged", || async {
        (app.get(&format!("/v1/servers/{deleted}")).await.0 == 404).then_some(())
    })
    .await;
    assert_eq!(app.server(running).await["status"], "running");
    app.teardown().await;
}

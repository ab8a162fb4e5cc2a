//! Every operation through the HTTP API, checked on the container, on disk
//! and in the database.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::spawn_app;

fn archives(root: &Path, id: i64) -> Vec<std::path::PathBuf> {
    let prefix = format!("{id}-deleted-");
    let mut found: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_server_goes_through_its_whole_lifecycle_through_the_api() {
    let app = spawn_app().await;
    let root = app.data_root();

    // Create.
    let (status, body) =
        app.post("/v1/servers", json!({ "name": "Mano serveris ąž", "cpus": 0.5, "memory_mb": 256 })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["server"]["status"], "creating");
    assert_eq!(body["server"]["host"], app.host());
    assert_eq!(body["job"]["action"], "create");
    let id = body["server"]["id"].as_i64().unwrap();
    let job = app.wait_job(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1);
    let server = app.wait_status(id, "running").await;
    assert_eq!(server["data_exists"], true);

    // The container is what seed 000 §3.2 describes.
    let c = app.inspect(id).await.expect("container exists");
    assert_eq!(c.name.as_deref(), Some(format!("/{}", app.container_name(id)).as_str()));
    assert_eq!(server["container_id"].as_str(), c.id.as_deref());
    let config = c.config.as_ref().unwrap();
    assert_eq!(config.hostname.as_deref(), Some(format!("server{id}").as_str()));
    assert_eq!(config.image.as_deref(), Some(crate::helpers::TEST_IMAGE));
    let labels = config.labels.as_ref().unwrap();
    assert_eq!(labels["vsfleet.managed"], "true");
    assert_eq!(labels["vsfleet.server_id"], id.to_string());
    assert_eq!(labels["vsfleet.host"], app.host());
    let host_config = c.host_config.as_ref().unwrap();
    assert_eq!(host_config.runtime.as_deref(), Some("runc"));
    assert_eq!(host_config.network_mode.as_deref(), Some(app.settings.worker.network.as_str()));
    assert_eq!(host_config.nano_cpus, Some(500_000_000));
    assert_eq!(host_config.memory, Some(256 * 1024 * 1024));
    assert_ne!(host_config.privileged, Some(true));
    let restart = host_config.restart_policy.as_ref().and_then(|p| p.name);
    assert_eq!(restart, Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED));
    let mut mounts: Vec<(String, String)> =
        c.mounts.unwrap().into_iter().map(|m| (m.source.unwrap(), m.destination.unwrap())).collect();
    mounts.sort();
    let apps = root.join(id.to_string()).join("apps");
    let docker_dir = root.join(id.to_string()).join("docker");
    assert_eq!(
        mounts,
        vec![
            (apps.display().to_string(), "/apps".to_owned()),
            (docker_dir.display().to_string(), "/var/lib/docker".to_owned()),
        ]
    );
    assert!(apps.is_dir() && docker_dir.is_dir());
    assert_eq!(c.state.unwrap().running, Some(true));

    // The rows behind it.
    let (row_status, data_exists): (String, String) =
        sqlx::query_as("SELECT status, CASE WHEN data_exists THEN 'yes' ELSE 'no' END FROM servers WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((row_status.as_str(), data_exists.as_str()), ("running", "yes"));

    // Stop, start, restart.
    assert_eq!(app.act(id, "stop").await["status"], "succeeded");
    app.wait_status(id, "stopped").await;
    assert_eq!(app.inspect(id).await.unwrap().state.unwrap().running, Some(false));
    assert_eq!(app.act(id, "start").await["status"], "succeeded");
    app.wait_status(id, "running").await;
    let first_container = app.inspect(id).await.unwrap().id;
    assert_eq!(app.act(id, "restart").await["status"], "succeeded");
    assert_eq!(app.inspect(id).await.unwrap().id, first_container, "restart keeps the container");

    // A container removed behind vsfleet's back is recreated by start, with
    // the same spec and mounts.
    app.act(id, "stop").await;
    app.docker
        .remove_container(&app.container_name(id), None::<bollard::query_parameters::RemoveContainerOptions>)
        .await
        .unwrap();
    assert_eq!(app.act(id, "start").await["status"], "succeeded");
    let recreated = app.inspect(id).await.expect("recreated");
    assert_ne!(recreated.id, first_container);
    assert_eq!(recreated.host_config.as_ref().unwrap().memory, Some(256 * 1024 * 1024));
    assert_eq!(app.wait_status(id, "running").await["container_id"].as_str(), recreated.id.as_deref());

    // Delete: container gone, docker/ removed, the rest archived.
    std::fs::write(apps.join("hello.txt"), "user data").unwrap();
    assert_eq!(app.act(id, "delete").await["status"], "succeeded");
    let deleted = app.wait_status(id, "deleted").await;
    assert!(app.inspect(id).await.is_none(), "container still exists after delete");
    assert!(!root.join(id.to_string()).exists());
    let archived = archives(&root, id);
    assert_eq!(archived.len(), 1, "{archived:?}");
    let archive_name = archived[0].file_name().unwrap().to_string_lossy().into_owned();
    let stamp = archive_name.rsplit('-').next().unwrap();
    assert!(stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()), "{archive_name}");
    assert_eq!(std::fs::read_to_string(archived[0].join("apps/hello.txt")).unwrap(), "user data");
    assert!(!archived[0].join("docker").exists(), "docker/ is not archived");
    let deleted_at = chrono::DateTime::parse_from_rfc3339(deleted["deleted_at"].as_str().unwrap()).unwrap();
    let purge_after = chrono::DateTime::parse_from_rfc3339(deleted["purge_after"].as_str().unwrap()).unwrap();
    assert_eq!(purge_after - deleted_at, chrono::Duration::hours(24));
    let (_, listed) = app.get("/v1/servers").await;
    assert!(listed["servers"].as_array().unwrap().is_empty(), "{listed}");
    let (_, listed) = app.get("/v1/servers?include_deleted=true").await;
    assert_eq!(listed["servers"][0]["id"], id);

    // Restore: the newest archive comes back; the server is missing until started.
    assert_eq!(app.act(id, "restore").await["status"], "succeeded");
    let restored = app.wait_status(id, "missing").await;
    assert!(restored["deleted_at"].is_null() && restored["purge_after"].is_null());
    assert_eq!(std::fs::read_to_string(apps.join("hello.txt")).unwrap(), "user data");
    assert!(archives(&root, id).is_empty());
    assert_eq!(app.act(id, "start").await["status"], "succeeded");
    app.wait_status(id, "running").await;

    // Delete again, then purge: container, archives and row gone; the jobs stay.
    app.act(id, "delete").await;
    app.wait_status(id, "deleted").await;
    let purge = app.act(id, "purge").await;
    assert_eq!(purge["status"], "succeeded", "{purge}");
    let (status, _) = app.get(&format!("/v1/servers/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(archives(&root, id).is_empty(), "archives survived the purge");
    assert!(!root.join(id.to_string()).exists());
    assert!(app.our_containers().await.is_empty());
    let (status, job) = app.get(&format!("/v1/jobs/{}", purge["id"].as_str().unwrap())).await;
    assert_eq!((status, job["job"]["action"].as_str()), (StatusCode::OK, Some("purge")));
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM servers").fetch_one(&app.db).await.unwrap();
    assert_eq!(rows, 0);
    let history: Vec<(String, String)> =
        sqlx::query_as("SELECT action, status FROM jobs WHERE server_id = $1 ORDER BY created_at")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    let actions: Vec<&str> = history.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["create", "stop", "start", "restart", "stop", "start", "delete", "restore", "start", "delete", "purge"]
    );
    assert!(history.iter().all(|(_, s)| s == "succeeded"), "{history:?}");

    app.teardown().await;
}

#[tokio::test]
async fn rename_changes_only_the_name_and_validates_it() {
    let app = spawn_app().await;
    let id = app.create_running("pirmas", json!({})).await;
    let path = format!("/v1/servers/{id}");
    let token = app.admin_token.clone();
    let (status, body) = app.call(Method::PATCH, &path, Some(&token), Some(json!({ "name": "antras serveris" }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server"]["name"], "antras serveris");
    assert_eq!(body["server"]["status"], "running");
    let (status, body) = app.call(Method::PATCH, &path, Some(&token), Some(json!({ "name": "x" }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_name")));
    let (name,): (String,) =
        sqlx::query_as("SELECT name FROM servers WHERE id = $1").bind(id).fetch_one(&app.db).await.unwrap();
    assert_eq!(name, "antras serveris");
    app.teardown().await;
}

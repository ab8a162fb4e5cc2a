//! The system stack: the configured template rendered into each new server
//! and brought up inside it with compose, on a real Docker daemon inside the
//! server (`vsfleet-dind-test`, which has Debian's docker-compose). No
//! registry is reachable: the stack's image travels in the template's
//! `images/` and is loaded into the inner Docker.

use std::path::Path;

use crate::helpers::{TestApp, eventually, spawn_app_with};
use serde_json::{Value, json};

const DIND_IMAGE: &str = "vsfleet-dind-test:latest";
const TEMPLATE: &str = "probe";

/// A template whose one service, busybox's httpd, publishes port 10080 of
/// the server and serves a page that names the server.
fn write_template(templates: &Path, image: &str, with_archive: bool) {
    let dir = templates.join(TEMPLATE);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "# server ${{SERVER_ID}}\n\
             services:\n\
             \x20 web:\n\
             \x20   container_name: sistema-web\n\
             \x20   image: {image}\n\
             \x20   command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n\
             \x20   volumes: [\"./www:/www:ro\"]\n\
             \x20   ports: [\"10080:80\"]\n\
             \x20   restart: unless-stopped\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("www/index.html"), "server ${SERVER_ID} (${SERVER_NAME}) on ${HOST_ID}\n").unwrap();
    if with_archive {
        std::fs::create_dir_all(dir.join("images")).unwrap();
        let archive = dir.join("images/busybox.tar");
        let saved = std::process::Command::new("docker")
            .args(["save", "-o", archive.to_str().unwrap(), "vsfleet-busybox:latest"])
            .status()
            .unwrap();
        assert!(saved.success(), "docker save vsfleet-busybox:latest (scripts/build-test-image makes it)");
    }
}

async fn with_system_template(templates: &Path, stack_timeout_secs: u64) -> TestApp {
    let templates = templates.to_owned();
    spawn_app_with(move |s| {
        s.worker.image = DIND_IMAGE.into();
        s.worker.unconfined = true;
        s.worker.stop_timeout_secs = 10;
        s.worker.templates_dir = Some(templates);
        s.worker.system_template = Some(TEMPLATE.into());
        s.worker.stack_timeout_secs = stack_timeout_secs;
    })
    .await
}

/// Creates a server and returns its id and its finished create job.
async fn create(app: &TestApp, body: Value) -> (i64, Value) {
    let (status, created) = app.post("/v1/servers", body).await;
    assert_eq!(status, 202, "{created}");
    let job = app.wait_job(created["job"]["id"].as_str().unwrap()).await;
    (created["server"]["id"].as_i64().unwrap(), job)
}

/// The server's port 10080 at its address on the servers' network: the
/// endpoint as the control plane's proxy reaches it.
async fn fetch_endpoint(app: &TestApp, id: i64) -> Option<String> {
    let inspect = app.inspect(id).await?;
    let networks = inspect.network_settings?.networks?;
    let address = networks.values().find_map(|n| n.ip_address.clone().filter(|ip| !ip.is_empty()))?;
    let url = format!("http://{address}:10080/");
    let response = app.http.get(url).timeout(std::time::Duration::from_secs(2)).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

#[tokio::test]
async fn a_new_server_runs_its_system_stack_from_the_template() {
    let templates = tempfile::Builder::new().prefix("vsfleet-templates-").tempdir().unwrap();
    write_template(templates.path(), "vsfleet-busybox:latest", true);
    // The host port the server's port 10080 is published on, as a
    // template would hand it to a service that must know it.
    std::fs::write(templates.path().join(TEMPLATE).join("www/port.txt"), "${PORT_10080}").unwrap();
    let app = with_system_template(templates.path(), 60).await;
    let (id, job) = create(&app, json!({ "name": "su stacku", "ports": [{ "container": 10080 }] })).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["system_stack"], json!({ "template": TEMPLATE, "status": "up" }), "{job}");
    assert!(job["result"].get("warning").is_none(), "{job}");
    let server = app.server(id).await;
    assert_eq!((server["status"].as_str(), &server["last_error"]), (Some("running"), &Value::Null), "{server}");

    let name = app.container_name(id);
    let stack = app.data_root().join(id.to_string()).join("apps/sistema");
    let compose = std::fs::read_to_string(stack.join("docker-compose.yml")).unwrap();
    assert!(compose.starts_with(&format!("# server {id}\n")), "{compose}");
    assert!(stack.join(".vsfleet-rendered").is_file());

    assert_eq!(server["ports"][0]["container"], 10080, "{server}");
    let host_port = server["ports"][0]["host"].as_u64().expect("a published port");
    assert_eq!(std::fs::read_to_string(stack.join("www/port.txt")).unwrap(), host_port.to_string());

    let page =
        eventually("the stack's endpoint answers on port 10080 of the server", || fetch_endpoint(&app, id)).await;
    assert_eq!(page, format!("server {id} ({name}) on {}\n", app.host()));
    app.teardown().await;
}

#[tokio::test]
async fn a_stack_that_cannot_start_leaves_the_server_running_with_a_warning() {
    let templates = tempfile::Builder::new().prefix("vsfleet-templates-").tempdir().unwrap();
    // No archive, and no registry to pull from.
    write_template(templates.path(), "vsfleet-no-such-image:latest", false);
    let app = with_system_template(templates.path(), 5).await;
    let (id, job) = create(&app, json!({ "name": "be stacko" })).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["system_stack"]["status"], "failed", "{job}");
    assert!(job["result"]["system_stack"]["error"].is_string(), "{job}");
    let server = app.server(id).await;
    assert_eq!(server["status"], "running", "{server}");
    let last_error = server["last_error"].as_str().unwrap_or_default();
    assert!(last_error.starts_with(&format!("system stack {TEMPLATE} did not start: ")), "{server}");
    app.teardown().await;
}

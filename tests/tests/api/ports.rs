//! Published ports (seed 002's port allocation): host ports free in the
//! database, in Docker and in a bind test, distinct under concurrent
//! creates, really bound on the host, kept through delete and restore, and
//! released by purge.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, TcpListener};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use serde_json::{Value, json};
use vsfleet_contract::PortRange;

use crate::helpers::{TEST_IMAGE, TestApp, spawn_app_with};

/// A range of its own for each test process: tests run in parallel on one
/// engine, and the bind test would see the other test's ports anyway.
fn range(size: u16) -> PortRange {
    let first = 31000 + (std::process::id() % 120) as u16 * 200;
    PortRange { first, last: first + size - 1 }
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// The host ports Docker has bound for the server's container.
async fn bound(app: &TestApp, id: i64) -> Vec<u16> {
    let inspect = app.inspect(id).await.expect("the container exists");
    let ports = inspect.network_settings.and_then(|n| n.ports).unwrap_or_default();
    let mut found: Vec<u16> =
        ports.into_values().flatten().flatten().filter_map(|b| b.host_port.and_then(|p| p.parse().ok())).collect();
    found.sort_unstable();
    found.dedup();
    found
}

fn host_ports(server: &Value) -> Vec<u16> {
    server["ports"].as_array().unwrap().iter().map(|p| p["host"].as_u64().unwrap() as u16).collect()
}

#[tokio::test]
async fn concurrent_creates_get_distinct_ports_bound_on_the_host_kept_until_purge() {
    let range = range(60);
    let app = spawn_app_with(|s| s.worker.port_range = range).await;
    // The bind test's layer: a process outside Docker holds the first port.
    let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, range.first)).unwrap();
    // Docker's layer: a stopped container that takes the second port back when it starts.
    let blocker = format!("vsfleet-port-blocker-{}", app.prefix());
    let binding = PortBinding { host_ip: None, host_port: Some((range.first + 1).to_string()) };
    let body = ContainerCreateBody {
        image: Some(TEST_IMAGE.into()),
        exposed_ports: Some(vec!["80/tcp".into()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([("80/tcp".to_owned(), Some(vec![binding]))])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions { name: Some(blocker.clone()), ..Default::default() };
    app.docker.create_container(Some(options), body).await.unwrap();

    let creates = (0..20).map(|i| {
        let app = &app;
        async move {
            let (status, body) =
                app.post("/v1/servers", json!({ "name": format!("uostas{i}"), "ports": [{"container": 80}] })).await;
            assert_eq!(status, 202, "{body}");
            (body["server"]["id"].as_i64().unwrap(), body["job"]["id"].as_str().unwrap().to_owned())
        }
    });
    let created = futures::future::join_all(creates).await;
    let mut all = HashSet::new();
    for (id, job) in &created {
        assert_eq!(app.wait_job(job).await["status"], "succeeded");
        let server = app.server(*id).await;
        let ports = host_ports(&server);
        assert_eq!(ports.len(), 1, "{server}");
        assert_eq!(server["ports"][0]["container"], 80);
        let port = ports[0];
        assert!(range.contains(port) && port > range.first + 1, "port {port} skips the held ones");
        assert!(all.insert(port), "port {port} given twice");
        assert_eq!(bound(&app, *id).await, vec![port], "Docker binds what the API shows");
        assert!(!bindable(port), "port {port} is really taken on the host");
    }
    assert_eq!(all.len(), 20);

    // Kept through delete and restore: the same port, bound again.
    let (id, _) = created[0];
    let port = host_ports(&app.server(id).await)[0];
    assert_eq!(app.act(id, "delete").await["status"], "succeeded");
    assert_eq!(host_ports(&app.wait_status(id, "deleted").await), vec![port]);
    assert!(bindable(port), "a deleted server's container is gone");
    let (status, body) = app.post("/v1/servers", json!({ "name": "vėlesnis", "ports": [{"container": 80}] })).await;
    assert_eq!(status, 202, "{body}");
    assert_ne!(host_ports(&body["server"]), vec![port], "a deleted server's port is not given away");
    app.wait_job(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(app.act(id, "restore").await["status"], "succeeded");
    assert_eq!(app.act(id, "start").await["status"], "succeeded");
    assert_eq!(bound(&app, id).await, vec![port]);

    // Released by purge.
    assert_eq!(app.act(id, "delete").await["status"], "succeeded");
    assert_eq!(app.act(id, "purge").await["status"], "succeeded");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM server_ports WHERE server_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert!(bindable(port));

    drop(held);
    let remove = RemoveContainerOptions { force: true, ..Default::default() };
    app.docker.remove_container(&blocker, Some(remove)).await.unwrap();
    app.teardown().await;
}

#[tokio::test]
async fn a_create_asking_for_bad_ports_is_refused_and_a_full_range_says_so() {
    let range = range(2);
    let app = spawn_app_with(|s| s.worker.port_range = range).await;
    for (ports, why) in [
        (json!([{"container": 0}]), "port 0"),
        (json!([{"container": 22}, {"container": 22}]), "twice"),
        (json!([{"container": 70000}]), "out of range"),
        (json!([{"container": 22, "host": 20000}]), "the host port is not the caller's to choose"),
        (json!((1..=17).map(|p| json!({"container": p})).collect::<Vec<_>>()), "too many"),
    ] {
        let (status, body) = app.post("/v1/servers", json!({ "name": "blogas", "ports": ports })).await;
        assert_eq!(status, 422, "{why}: {body}");
        let code = body["error"]["code"].as_str().unwrap();
        assert!(body["error"]["field"] == "ports" || code == "invalid_body", "{why}: {body}");
    }
    let (status, body) =
        app.post("/v1/servers", json!({ "name": "dvigubas", "ports": [{"container": 22}, {"container": 80}] })).await;
    assert_eq!(status, 202, "{body}");
    app.wait_job(body["job"]["id"].as_str().unwrap()).await;
    let (status, body) = app.post("/v1/servers", json!({ "name": "trecias", "ports": [{"container": 22}] })).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "no_port_available", "{body}");
    let (_, list) = app.get("/v1/servers").await;
    assert_eq!(list["servers"].as_array().unwrap().len(), 1, "a refused create leaves no server: {list}");

    // A job that names a host port outside the host's range, published by
    // hand, is refused by the worker before anything is published.
    let id = list["servers"][0]["id"].as_i64().unwrap();
    assert_eq!(app.act(id, "stop").await["status"], "succeeded");
    let job = json!({ "server_id": id, "spec": { "ports": [{ "container": 22, "host": 443 }] } });
    let subject = format!("{}.jobs.{}.start", app.prefix(), app.host());
    app.js.publish(subject, job.to_string().into()).await.unwrap().await.unwrap();
    let failed = crate::helpers::eventually("the hand-published start fails", || async {
        let (_, jobs) = app.get(&format!("/v1/servers/{id}/jobs")).await;
        let newest = jobs["jobs"][0].clone();
        (newest["action"] == "start" && newest["status"] == "failed").then_some(newest)
    })
    .await;
    assert!(failed["error"].as_str().unwrap().contains("outside this host's worker.port_range"), "{failed}");
    assert_eq!(app.server(id).await["status"], "stopped");
    app.teardown().await;
}

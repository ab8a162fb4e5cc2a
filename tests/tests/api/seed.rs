//! Seed parity through the API: a server's domain names, the access check
//! the control plane's Caddy asks, and the seed platform's own
//! `POST /api/vm/control`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test]
async fn domains_are_validated_unique_in_any_case_and_go_with_their_deleted_server() {
    let app = spawn_app().await;
    let (a, b) = (app.create_running("pirmas", json!({})).await, app.create_running("antras", json!({})).await);

    for bad in ["localhost", "*.example.com", "a_b.example.com", "10.0.0.1", "-x.example.com"] {
        let (status, body) = app.post(&format!("/v1/servers/{a}/domains"), json!({ "name": bad })).await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain"), "{bad}: {body}");
    }
    let (status, body) = app.post(&format!("/v1/servers/{a}/domains"), json!({ "name": "App.Example.com" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["domain"]["name"], "app.example.com");

    // Ten servers' worth of racing adds of one name, in another case: none wins, it is taken.
    let app_ref = &app;
    let racing = futures::future::join_all((0..10).map(|n| async move {
        let path = format!("/v1/servers/{}/domains", if n % 2 == 0 { a } else { b });
        app_ref.post(&path, json!({ "name": "APP.EXAMPLE.COM" })).await
    }))
    .await;
    assert!(racing.iter().all(|(s, body)| *s == StatusCode::CONFLICT && code(body) == "domain_taken"), "{racing:?}");
    // A new name raced onto both servers: exactly one add wins.
    let racing = futures::future::join_all((0..10).map(|n| async move {
        let path = format!("/v1/servers/{}/domains", if n % 2 == 0 { a } else { b });
        app_ref.post(&path, json!({ "name": "api.example.com" })).await.0
    }))
    .await;
    assert_eq!(racing.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{racing:?}");

    let (_, server) = app.get(&format!("/v1/servers/{a}")).await;
    let (_, list) = app.get("/v1/servers").await;
    let listed: Vec<&Value> = list["servers"].as_array().unwrap().iter().collect();
    let of = |id: i64| listed.iter().find(|s| s["id"] == id).unwrap()["domains"].clone();
    assert!(server["server"]["domains"].as_array().unwrap().contains(&json!("app.example.com")), "{server}");
    assert_eq!(
        of(a).as_array().unwrap().len() + of(b).as_array().unwrap().len(),
        2,
        "app and api, each on one server: {list}"
    );

    // Another user sees neither the server nor its domains.
    let other = app.create_user("kitas@example.test").await;
    let (status, _) = app.call(Method::GET, &format!("/v1/servers/{a}/domains"), Some(&other), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Removed by name (any case), then gone with the deleted server.
    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/servers/{a}/domains/APP.example.com"), Some(&app.admin_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.post(&format!("/v1/servers/{b}/domains"), json!({ "name": "app.example.com" })).await;
    assert_eq!(status, StatusCode::CREATED, "free again once removed");
    assert_eq!(app.act(b, "delete").await["status"], "succeeded");
    app.wait_status(b, "deleted").await;
    let (_, left) = app.get(&format!("/v1/servers/{b}/domains")).await;
    assert_eq!(left["domains"], json!([]), "a deleted server keeps no domain");
    let (status, body) = app.post(&format!("/v1/servers/{a}/domains"), json!({ "name": "app.example.com" })).await;
    assert_eq!(status, StatusCode::CREATED, "the deleted server's names are free: {body}");
    let (status, body) = app.post(&format!("/v1/servers/{b}/domains"), json!({ "name": "b.example.com" })).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "invalid_transition"), "{body}");
    app.teardown().await;
}

#[tokio::test]
async fn the_access_check_answers_owners_admins_others_stopped_and_missing_servers_as_documented() {
    let app = spawn_app().await;
    let owner = app.create_user("savininkas@example.test").await;
    let other = app.create_user("kitas@example.test").await;
    let (status, body) =
        app.call(Method::POST, "/v1/servers", Some(&owner), Some(json!({ "name": "tikrinamas" }))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["server"]["id"].as_i64().unwrap();
    assert_eq!(app.wait_job(body["job"]["id"].as_str().unwrap()).await["status"], "succeeded");

    let check = |token: Option<String>, cookie: Option<String>, id: String| {
        let mut request = app.http.get(format!("http://{}/api/checkauth/vm/{id}", app.addr));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(token) = cookie {
            request = request.header("cookie", format!("theme=dark; vsfleet_session={token}; virtual-server-id={id}"));
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let id_s = id.to_string();
    assert_eq!(check(Some(owner.clone()), None, id_s.clone()).await.0, StatusCode::OK);
    assert_eq!(check(None, Some(owner.clone()), id_s.clone()).await.0, StatusCode::OK, "the session cookie");
    assert_eq!(check(Some(app.admin_token.clone()), None, id_s.clone()).await.0, StatusCode::OK);
    let (status, body) = check(Some(other.clone()), None, id_s.clone()).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "not_yours"), "{body}");
    assert_eq!(check(None, None, id_s.clone()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(check(Some("vsf_nobody".into()), None, id_s.clone()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(check(Some(owner.clone()), None, "999999".into()).await.0, StatusCode::NOT_FOUND);
    assert_eq!(check(Some(owner.clone()), None, "../1".into()).await.0, StatusCode::NOT_FOUND);

    let (status, _) = app.call(Method::POST, &format!("/v1/servers/{id}/stop"), Some(&owner), Some(json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.wait_status(id, "stopped").await;
    let (status, body) = check(Some(owner.clone()), None, id_s.clone()).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "server_not_running"), "{body}");
    app.teardown().await;
}

#[tokio::test]
async fn every_seed_control_action_works_through_api_vm_control_and_a_foreign_user_is_refused() {
    let app = spawn_app().await;
    let control = |token: String, body: Value| {
        let app = &app;
        async move { app.call(Method::POST, "/api/vm/control", Some(&token), Some(body)).await }
    };
    let admin = app.admin_token.clone();
    let (status, created) = control(admin.clone(), json!({ "action": "create", "name": "Sėklos serveris" })).await;
    assert_eq!((status, &created["success"]), (StatusCode::ACCEPTED, &json!(true)), "{created}");
    let id: String = created["virtualServerID"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_job(created["job"]["id"].as_str().unwrap()).await["status"], "succeeded");
    let numeric: i64 = id.parse().unwrap();

    for (action, then) in [("stop", "stopped"), ("start", "running"), ("delete", "deleted"), ("restore", "missing")] {
        let (status, body) = control(admin.clone(), json!({ "action": action, "virtualServerID": id })).await;
        assert_eq!((status, &body["success"]), (StatusCode::ACCEPTED, &json!(true)), "{action}: {body}");
        assert_eq!(app.wait_job(body["job"]["id"].as_str().unwrap()).await["status"], "succeeded", "{action}");
        app.wait_status(numeric, then).await;
    }
    // The id as a number works too; rename answers the server.
    let (status, body) =
        control(admin.clone(), json!({ "action": "rename", "virtualServerID": numeric, "newName": "Naujas vardas" }))
            .await;
    assert_eq!((status, body["server"]["name"].as_str()), (StatusCode::OK, Some("Naujas vardas")), "{body}");

    // A foreign user: refused as /v1 refuses, with the seed's success flag.
    let other = app.create_user("svetimas@example.test").await;
    let (status, body) = control(other, json!({ "action": "start", "virtualServerID": id })).await;
    assert_eq!((status, code(&body), &body["success"]), (StatusCode::NOT_FOUND, "not_found", &json!(false)), "{body}");
    let (status, body) = control(admin.clone(), json!({ "action": "reboot", "virtualServerID": id })).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_action"), "{body}");
    let (status, body) = control(admin.clone(), json!({ "action": "stop" })).await;
    assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("virtualServerID")));

    let (status, body) = control(admin.clone(), json!({ "action": "delete", "virtualServerID": id })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_job(body["job"]["id"].as_str().unwrap()).await;
    let (status, body) = control(admin.clone(), json!({ "action": "purge", "virtualServerID": id })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.wait_job(body["job"]["id"].as_str().unwrap()).await["status"], "succeeded");
    let (status, _) = app.get(&format!("/v1/servers/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "purged");
    app.teardown().await;
}

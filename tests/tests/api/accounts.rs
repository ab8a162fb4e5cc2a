//! Users, tokens and the activity log: a revoked token and a disabled
//! user's tokens stop working on every api replica within a second; who
//! may manage whose tokens; the command line; the log of who did what.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vsfleet_tests::process::bin_dir;

use crate::helpers::{TestApp, WAIT, spawn_app};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

/// A second api replica on the same database and broker, with its own
/// token cache; stopped by cancelling the token.
async fn second_replica(app: &TestApp) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let mut settings = app.settings_as("api");
    settings.api.listen = "127.0.0.1:0".parse().unwrap();
    let listener = tokio::net::TcpListener::bind(settings.api.listen).await.unwrap();
    let api = vsfleet_api::Application::build(settings, listener).await.expect("second api builds");
    let base = format!("http://{}", api.local_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { api.run_until_stopped(stop).await.expect("second api runs") }
    });
    (base, stop, task)
}

/// `GET /v1/servers` on `base` with `token`: the status.
async fn servers_status(app: &TestApp, base: &str, token: &str) -> StatusCode {
    app.http.get(format!("{base}/v1/servers")).bearer_auth(token).send().await.unwrap().status()
}

/// Polls every 50 ms until `token` gets 401 on `base`; returns how long it took.
async fn time_to_401(app: &TestApp, base: &str, token: &str, since: Instant) -> Duration {
    loop {
        if servers_status(app, base, token).await == StatusCode::UNAUTHORIZED {
            return since.elapsed();
        }
        assert!(since.elapsed() < WAIT, "the token still works after {:?}", since.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_revoked_token_and_a_disabled_users_tokens_get_401_on_every_replica_within_a_second() {
    let app = spawn_app().await;
    let (replica, stop_replica, replica_task) = second_replica(&app).await;

    let (status, created) = app.post("/v1/users", json!({ "email": "ona@example.test" })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let user_id = created["user"]["id"].as_i64().unwrap();
    assert_eq!(created["user"]["admin"], false);
    let first = created["token"]["secret"].as_str().unwrap().to_owned();
    let first_id = created["token"]["id"].as_i64().unwrap();

    // The user makes a second token for themself.
    let (status, body) =
        app.call(Method::POST, &format!("/v1/users/{user_id}/tokens"), Some(&first), Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let second = body["token"]["secret"].as_str().unwrap().to_owned();
    let (status, listed) = app.call(Method::GET, &format!("/v1/users/{user_id}/tokens"), Some(&second), None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{listed}");
    assert!(tokens.iter().all(|t| t.get("secret").is_none() && t["revoked_at"].is_null()), "{listed}");

    // Both replicas know both tokens (and cache them).
    for token in [&first, &second] {
        assert_eq!(servers_status(&app, &replica, token).await, StatusCode::OK);
        assert_eq!(servers_status(&app, &format!("http://{}", app.addr), token).await, StatusCode::OK);
    }

    // Revoked on the first replica (by the user), refused on the second within a second.
    let since = Instant::now();
    let (status, body) = app.call(Method::DELETE, &format!("/v1/tokens/{first_id}"), Some(&second), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["token"]["revoked_at"].is_string(), "{body}");
    let took = time_to_401(&app, &replica, &first, since).await;
    assert!(took < Duration::from_secs(1), "a revoked token worked for {took:?} on the other replica");
    eprintln!("revoked token refused on the other replica after {took:?}");
    let (status, _) = app.call(Method::GET, "/v1/servers", Some(&first), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "and on the replica that revoked it");
    assert_eq!(servers_status(&app, &replica, &second).await, StatusCode::OK, "the other token still works");

    // An admin cannot disable themself; disabling the user refuses all their tokens.
    let (status, body) = app.post("/v1/users/1/disable", json!({})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "cannot_disable_self"), "{body}");
    let since = Instant::now();
    let (status, body) = app.post(&format!("/v1/users/{user_id}/disable"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["user"]["disabled_at"].is_string(), "{body}");
    let took = time_to_401(&app, &replica, &second, since).await;
    assert!(took < Duration::from_secs(1), "a disabled user's token worked for {took:?} on the other replica");
    eprintln!("disabled user's token refused on the other replica after {took:?}");

    // Enabled again: the unrevoked token works, the revoked one does not.
    let (status, _) = app.post(&format!("/v1/users/{user_id}/enable"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(servers_status(&app, &replica, &second).await, StatusCode::OK);
    assert_eq!(servers_status(&app, &replica, &first).await, StatusCode::UNAUTHORIZED);

    stop_replica.cancel();
    tokio::time::timeout(WAIT, replica_task).await.expect("the second replica stops").unwrap();
    app.teardown().await;
}

#[tokio::test]
async fn users_manage_only_their_own_tokens_and_admins_everything() {
    let app = spawn_app().await;
    let ona = app.create_user("ona@example.test").await;
    let jonas = app.create_user("jonas@example.test").await;
    let (_, users) = app.get("/v1/users").await;
    let id_of = |email: &str| {
        users["users"].as_array().unwrap().iter().find(|u| u["email"] == email).unwrap()["id"].as_i64().unwrap()
    };
    let (ona_id, jonas_id) = (id_of("ona@example.test"), id_of("jonas@example.test"));
    assert_eq!(users["users"].as_array().unwrap().len(), 3, "{users}");

    // Admin-only calls and someone else's account answer 404, like someone else's server.
    let refused = [
        (Method::GET, "/v1/users".to_owned(), None),
        (Method::POST, "/v1/users".to_owned(), Some(json!({ "email": "x@example.test" }))),
        (Method::POST, format!("/v1/users/{jonas_id}/tokens"), Some(json!({}))),
        (Method::GET, format!("/v1/users/{jonas_id}/tokens"), None),
        (Method::POST, format!("/v1/users/{jonas_id}/disable"), Some(json!({}))),
        (Method::POST, format!("/v1/users/{ona_id}/disable"), Some(json!({}))),
    ];
    for (method, path, body) in refused {
        let (status, answer) = app.call(method.clone(), &path, Some(&ona), body).await;
        assert_eq!((status, code(&answer)), (StatusCode::NOT_FOUND, "not_found"), "{method} {path}: {answer}");
    }
    let (_, tokens) = app.call(Method::GET, &format!("/v1/users/{jonas_id}/tokens"), None, None).await;
    assert_eq!(code(&tokens), "unauthorized");
    let (_, jonas_tokens) = app.get(&format!("/v1/users/{jonas_id}/tokens")).await;
    let jonas_token = jonas_tokens["tokens"][0]["id"].as_i64().unwrap();
    let (status, _) = app.call(Method::DELETE, &format!("/v1/tokens/{jonas_token}"), Some(&ona), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "ona cannot revoke jonas' token");
    assert_eq!(app.call(Method::GET, "/v1/servers", Some(&jonas), None).await.0, StatusCode::OK);

    // The email is checked and unique.
    let (status, body) = app.post("/v1/users", json!({ "email": "not an email" })).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"), "{body}");
    assert_eq!(body["error"]["field"], "email");
    let (status, body) = app.post("/v1/users", json!({ "email": "ona@example.test" })).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "email_taken"), "{body}");

    // An admin revokes anyone's token.
    let (status, _) =
        app.call(Method::DELETE, &format!("/v1/tokens/{jonas_token}"), Some(&app.admin_token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/v1/servers", Some(&jonas), None).await.0, StatusCode::UNAUTHORIZED);
    app.teardown().await;
}

/// Runs `vsfleet-api --config <test config> args…`; returns stdout. The
/// command runs off the test's runtime: the api under test lives on that
/// runtime, and a write it has begun must be able to finish while the
/// command waits for the database.
async fn cli(app: &TestApp, args: &[&str]) -> String {
    let config = app.write_config("api");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let shown = format!("{args:?}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin_dir().join("vsfleet-api"))
            .arg("--config")
            .arg(&config)
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("vsfleet-api runs")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{shown}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_command_line_creates_lists_and_revokes_tokens_and_disables_users() {
    let app = spawn_app().await;
    app.create_user("ona@example.test").await;
    let printed = cli(&app, &["token", "create", "--email", "ona@example.test"]).await;
    let token = printed.trim();
    assert!(token.starts_with("vsf_") && !token.contains(char::is_whitespace), "only the token: {printed:?}");
    assert_eq!(app.call(Method::GET, "/v1/servers", Some(token), None).await.0, StatusCode::OK);

    let listed = cli(&app, &["token", "list", "--email", "ona@example.test"]).await;
    assert!(!listed.contains("vsf_"), "no secrets in the list: {listed}");
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    let newest = rows[1].split_whitespace().next().unwrap();
    cli(&app, &["token", "revoke", newest]).await;
    let since = Instant::now();
    let took = time_to_401(&app, &format!("http://{}", app.addr), token, since).await;
    assert!(took < Duration::from_secs(1), "revoked from the command line, still worked after {took:?}");
    let listed = cli(&app, &["token", "list", "--email", "ona@example.test"]).await;
    let revoked = listed.lines().find(|l| l.starts_with(newest)).unwrap();
    assert!(!revoked.trim_end().ends_with('-'), "listed as revoked: {listed}");

    let fresh = cli(&app, &["token", "create", "--email", "ona@example.test"]).await;
    cli(&app, &["user", "disable", "--email", "ona@example.test"]).await;
    let took = time_to_401(&app, &format!("http://{}", app.addr), fresh.trim(), Instant::now()).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    cli(&app, &["user", "enable", "--email", "ona@example.test"]).await;
    assert_eq!(app.call(Method::GET, "/v1/servers", Some(fresh.trim()), None).await.0, StatusCode::OK);
    app.teardown().await;
}

/// Every page of `GET /v1/activity` for `token`, `limit` at a time.
async fn all_pages(app: &TestApp, token: &str, limit: usize) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut path = format!("/v1/activity?limit={limit}");
    loop {
        let (status, page) = app.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let got = page["activity"].as_array().unwrap();
        assert!(got.len() <= limit, "{page}");
        entries.extend(got.iter().cloned());
        match page["next"].as_i64() {
            Some(next) => path = format!("/v1/activity?limit={limit}&before={next}"),
            None => return entries,
        }
    }
}

#[tokio::test]
async fn the_activity_log_lists_requests_refusals_and_account_changes_newest_first_in_pages() {
    let app = spawn_app().await;
    let (_, created) = app.post("/v1/users", json!({ "email": "ona@example.test" })).await;
    let (ona_id, ona) =
        (created["user"]["id"].as_i64().unwrap(), created["token"]["secret"].as_str().unwrap().to_owned());

    // Accepted; refused by the state machine; refused: not hers; refused: a bad name.
    let (status, body) = app.call(Method::POST, "/v1/servers", Some(&ona), Some(json!({ "name": "žurnalas" }))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["server"]["id"].as_i64().unwrap();
    let job = body["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_job(&job).await["status"], "succeeded");
    let (status, _) = app.call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&ona), Some(json!({}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.call(Method::POST, "/v1/servers/424242/stop", Some(&ona), Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.call(Method::POST, "/v1/servers", Some(&ona), Some(json!({ "name": "x" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // An admin's request on her server, a rename, a token made and revoked.
    assert_eq!(app.act(id, "stop").await["status"], "succeeded");
    let (status, _) =
        app.call(Method::PATCH, &format!("/v1/servers/{id}"), Some(&ona), Some(json!({ "name": "naujas" }))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, token) = app.post(&format!("/v1/users/{ona_id}/tokens"), json!({})).await;
    let token_id = token["token"]["id"].as_i64().unwrap();
    let (status, _) = app.call(Method::DELETE, &format!("/v1/tokens/{token_id}"), Some(&ona), None).await;
    assert_eq!(status, StatusCode::OK);

    let (status, page) = app.get("/v1/activity").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let all = page["activity"].as_array().unwrap().clone();
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let find = |actor: &str, action: &str, target: &str, result: &str| {
        all.iter()
            .find(|e| e["actor"] == actor && e["action"] == action && e["target"] == target && e["result"] == result)
            .unwrap_or_else(|| panic!("no {actor} {action} {target} {result} in {page:#}"))
            .clone()
    };
    let ona_email = "ona@example.test";
    let admin = "admin@example.test";
    let server = format!("server:{id}");
    let accepted = find(ona_email, "create", &server, "accepted");
    assert_eq!(accepted["user_id"], ona_id);
    assert!(accepted["at"].is_string() && accepted["detail"].as_str().unwrap().contains(&job), "{accepted}");
    find(ona_email, "start", &server, "refused: invalid_transition");
    find(ona_email, "stop", "server:424242", "refused: not_found");
    find(ona_email, "create", "server:new", "refused: invalid_name");
    // The admin's stop of her server is in her log.
    assert_eq!(find(admin, "stop", &server, "accepted")["user_id"], ona_id);
    find(ona_email, "rename", &server, "succeeded");
    find(admin, "user.create", &format!("user:{ona_id}"), "succeeded");
    find(admin, "token.create", &format!("token:{token_id}"), "succeeded");
    find(ona_email, "token.revoke", &format!("token:{token_id}"), "succeeded");

    // Paged, the same entries; a user sees their own log only.
    let paged = all_pages(&app, &app.admin_token, 3).await;
    assert_eq!(paged, all, "three at a time, following `next`, gives the same log");
    let own = all_pages(&app, &ona, 2).await;
    assert!(!own.is_empty() && own.iter().all(|e| e["user_id"] == ona_id), "{own:#?}");
    assert!(own.len() < all.len(), "the admin's own user.create of the first admin is not hers");
    let (status, body) = app.call(Method::GET, "/v1/activity?limit=lots", Some(&ona), None).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"), "{body}");
    app.teardown().await;
}

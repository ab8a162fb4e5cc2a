//! What an HTTP client expects of any API: a 202's `Location` answers with
//! its job, a 503 says when to ask again, every list is paged with a cursor
//! that walks each row once while rows are added, and the `Bearer` scheme
//! is read in any case.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vsfleet_contract::ports::PortRange;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// Every row of a list, walked a page at a time; `between` runs after each
/// page (to change the list under the walk).
async fn walk(
    app: &TestApp,
    token: &str,
    path: &str,
    key: &str,
    limit: u32,
    mut between: impl AsyncFnMut(),
) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(after) = &after {
            url.push_str(&format!("&after={after}"));
        }
        let (status, body) = app.call(Method::GET, &url, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        let page = body[key].as_array().unwrap();
        assert!(page.len() <= limit as usize, "{url}: a page of {}", page.len());
        rows.extend(page.iter().cloned());
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return rows,
        }
        between().await;
    }
}

#[tokio::test]
async fn paging_walks_250_servers_and_250_jobs_each_once_while_rows_are_added() {
    let app = spawn_app().await;
    let token = app.create_user("pages@example.test").await;
    let (owner,): (i64,) =
        sqlx::query_as("SELECT id FROM users WHERE email = 'pages@example.test'").fetch_one(&app.db).await.unwrap();
    // Rows written directly, on a host no worker serves: 250 containers
    // are not the point here, the lists are.
    let insert_server = |name: String| {
        let db = app.db.clone();
        async move {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO servers (owner_id, name, host, status, created_at, updated_at)
                 VALUES ($1, $2, 'nowhere', 'stopped', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z') RETURNING id",
            )
            .bind(owner)
            .bind(name)
            .fetch_one(&db)
            .await
            .unwrap();
            id
        }
    };
    let mut servers = Vec::new();
    for n in 0..250 {
        servers.push(insert_server(format!("puslapis {n}")).await);
    }
    // Another user's server is in no page of this user's.
    app.create_user("other@example.test").await;
    let mut added = 0;
    let seen = walk(&app, &token, "/v1/servers", "servers", 17, async || {
        added += 1;
        insert_server(format!("naujas {added}")).await;
    })
    .await;
    let ids: Vec<i64> = seen.iter().map(|s| s["id"].as_i64().unwrap()).collect();
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a server listed twice");
    assert!(servers.iter().all(|id| unique.contains(id)), "a server missed");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id");

    // 250 jobs of one server, five to a timestamp: the walk breaks ties by id.
    let server = servers[0];
    let mut jobs = Vec::new();
    for n in 0..250 {
        let id = uuid::Uuid::new_v4().to_string();
        let at = format!("2026-02-01T00:{:02}:{:02}Z", n / 5 / 60, (n / 5) % 60);
        // `at` is ours; a literal, so each database reads it as its own timestamp type.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs (id, server_id, action, host, status, origin, payload, requested_by, created_at)
             VALUES ($1, $2, 'start', 'nowhere', 'succeeded', 'api', '{{}}', $3, '{at}')"
        )))
        .bind(&id)
        .bind(server)
        .bind(owner)
        .execute(&app.db)
        .await
        .unwrap();
        jobs.push(id);
    }
    let db = app.db.clone();
    let seen = walk(&app, &token, &format!("/v1/servers/{server}/jobs"), "jobs", 7, async || {
        // A newer job, at the head of the list, while it is walked.
        sqlx::query(
            "INSERT INTO jobs (id, server_id, action, host, status, origin, payload, requested_by, created_at)
             VALUES ($1, $2, 'stop', 'nowhere', 'succeeded', 'api', '{}', $3, '2026-03-01T00:00:00Z')",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(server)
        .bind(owner)
        .execute(&db)
        .await
        .unwrap();
    })
    .await;
    let ids: Vec<&str> = seen.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 250, "each job once, and none added behind the walk");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 250, "a job listed twice");
    assert!(jobs.iter().all(|j| ids.contains(&j.as_str())), "a job missed");
    let order: Vec<(String, &str)> =
        seen.iter().map(|j| (j["created_at"].to_string(), j["id"].as_str().unwrap())).collect();
    assert!(
        order.windows(2).all(|w| w[0].0 > w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1)),
        "newest first, then by id"
    );

    // Users and tokens page the same way; a cursor that is not one is a 400.
    let admin = app.admin_token.clone();
    let users = walk(&app, &admin, "/v1/users", "users", 1, async || {}).await;
    assert_eq!(users.len(), 3, "{users:?}");
    let (status, body) = app.call(Method::GET, "/v1/servers?after=abc", Some(&token), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    let (status, _) = app.call(Method::GET, &format!("/v1/servers/{server}/jobs?after=17"), Some(&token), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Another server's job is no place in this server's list.
    let other = format!("/v1/servers/{}/jobs?after={}", servers[1], jobs[0]);
    let (status, body) = app.call(Method::GET, &other, Some(&token), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    app.teardown().await;
}

#[tokio::test]
async fn a_202_locates_its_job_a_503_says_when_to_retry_and_bearer_is_read_in_any_case() {
    // One port in the range, held here: a create that asks for a port gets a 503.
    let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let app = spawn_app_with(|s| s.worker.port_range = PortRange { first: port, last: port }).await;
    let url = |path: &str| format!("http://{}{path}", app.addr);

    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = app
            .http
            .get(url("/v1/servers"))
            .header("Authorization", format!("{scheme} {}", app.admin_token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }

    let response = app
        .http
        .post(url("/v1/servers"))
        .bearer_auth(&app.admin_token)
        .json(&json!({ "name": "vieta" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let job = body["job"]["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/jobs/{job}"));
    let (status, found) = app.call(Method::GET, &location, Some(&app.admin_token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["job"]["id"], job, "the Location answers with the job");
    app.wait_job(job).await;

    let response = app
        .http
        .post(url("/v1/servers"))
        .bearer_auth(&app.admin_token)
        .json(&json!({ "name": "uostas", "ports": [{"container": 22}] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_port_available", "{body}");
    drop(held);
    app.teardown().await;
}

#[tokio::test]
async fn a_request_not_answered_in_time_gets_a_503_saying_so() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app_with(|s| s.api.request_timeout_secs = 6).await;
    // A client that sends its head and a tenth of its body, then stalls:
    // the handler waits for the rest until the request's time is up.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/servers HTTP/1.1\r\nHost: vsfleet\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\": ",
        app.admin_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("request_timeout") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .expect("an answer within the request timeout and a margin")
            .unwrap();
        assert!(n > 0, "closed without an answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after:"), "{answer}");
    assert!(answer.contains("x-request-id:"), "every answer names its request: {answer}");
    // Nothing was committed: the body never came.
    let (servers,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM servers").fetch_one(&app.db).await.unwrap();
    assert_eq!(servers, 0);
    app.teardown().await;
}

#[test]
fn a_bad_configuration_exits_78_in_one_line_and_the_version_names_the_commit() {
    use std::process::Command;
    let dir = vsfleet_tests::process::bin_dir();
    for bin in ["vsfleet-api", "vsfleet-worker", "vsfleet-scheduler"] {
        let missing = Command::new(dir.join(bin)).args(["--config", "/nonexistent/vsfleet.toml"]).output().unwrap();
        let bad_key = Command::new(dir.join(bin)).env("VSFLEET_NATS__PREFIX", "a b").output().unwrap();
        for (out, names) in [(missing, "/nonexistent/vsfleet.toml"), (bad_key, "nats.prefix")] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{bin}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{bin}: one line: {stderr}");
            assert!(stderr.contains(names), "{bin}: {stderr}");
        }
        let version = Command::new(dir.join(bin)).arg("--version").output().unwrap();
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok();
        match head.filter(|h| h.status.success()) {
            Some(head) => {
                let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
                assert_eq!(version, format!("{bin} {} ({head})", env!("CARGO_PKG_VERSION")));
            }
            None => assert!(version.starts_with(&format!("{bin} {} (", env!("CARGO_PKG_VERSION"))), "{version}"),
        }
    }
}

//! HTTP hygiene: every error is the JSON shape (413, 405, a bad query, a
//! bad path), 401 says how to authenticate, the scheme is matched without
//! regard to case, ids have one spelling, idle and half-open connections
//! are closed, and tenants never read host paths.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, spawn_app_with};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test]
async fn every_error_is_json_with_its_code_and_ids_have_one_spelling() {
    let app = spawn_app().await;
    let base = format!("http://{}", app.addr);

    // 413: a body over 64 KiB.
    let big = json!({ "name": "x".repeat(70 * 1024) });
    let (status, body) = app.post("/v1/servers", big).await;
    assert_eq!((status, code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"), "{body}");

    // 405: the path exists, the method does not.
    let (status, body) = app.call(Method::PUT, "/v1/servers", Some(&app.admin_token), Some(json!({}))).await;
    assert_eq!((status, code(&body)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"), "{body}");
    let (status, body) = app.call(Method::DELETE, "/v1/activity", Some(&app.admin_token), None).await;
    assert_eq!((status, code(&body)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"), "{body}");

    // A query string that does not parse.
    for path in ["/v1/servers?include_deleted=maybe", "/v1/activity?before=x", "/v1/servers/1/stop?force=2"] {
        let method = if path.contains("stop") { Method::POST } else { Method::GET };
        let (status, body) = app.call(method, path, Some(&app.admin_token), Some(json!({}))).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"), "{path}: {body}");
    }

    // 401 names the scheme; the scheme's case does not matter.
    let resp = app.http.get(format!("{base}/v1/servers")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
    assert_eq!(code(&resp.json().await.unwrap()), "unauthorized");
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let resp = app
            .http
            .get(format!("{base}/v1/servers"))
            .header("authorization", format!("{scheme} {}", app.admin_token))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
    let resp = app
        .http
        .get(format!("{base}/v1/servers"))
        .header("authorization", format!("Basic {}", app.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "another scheme");

    // Ids in canonical form only.
    for bad in ["01", "007", "0"] {
        let (status, body) = app.get(&format!("/v1/servers/{bad}")).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"), "{bad}: {body}");
    }
    for bad in ["01", "x"] {
        let (status, body) = app.get(&format!("/v1/users/{bad}/tokens")).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"), "{bad}: {body}");
    }
    let job = uuid::Uuid::new_v4().hyphenated().to_string();
    for bad in [job.to_uppercase(), format!("{{{job}}}"), job.replace('-', ""), format!("urn:uuid:{job}")] {
        let (status, body) = app.get(&format!("/v1/jobs/{bad}")).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"), "{bad}: {body}");
    }
    let (status, body) = app.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"), "the canonical form is read");
    app.teardown().await;
}

/// Reads until the server closes the connection; returns what it sent and
/// how long after `since` it closed.
async fn read_until_closed(stream: &mut TcpStream, since: Instant) -> (String, Duration) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), since.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was still open after 10 s"),
        }
    }
}

/// The timeouts are set low (header 1 s, idle 2 s; defaults 10 s and 60 s)
/// so the test is quick.
#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_after_their_timeout() {
    let app = spawn_app_with(|s| {
        s.api.http_header_timeout_secs = 1;
        s.api.http_idle_timeout_secs = 2;
    })
    .await;

    // Connected, never a byte: closed after the idle timeout.
    let since = Instant::now();
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let (_, took) = read_until_closed(&mut silent, since).await;
    assert!((Duration::from_millis(1900)..Duration::from_secs(4)).contains(&took), "silent: {took:?}");
    eprintln!("a silent connection was closed after {took:?}");

    // Half a request head: closed after the header timeout, well before the idle one.
    let since = Instant::now();
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (answer, took) = read_until_closed(&mut half, since).await;
    assert!((Duration::from_millis(900)..Duration::from_millis(1900)).contains(&took), "half a head: {took:?}");
    assert!(answer.is_empty(), "{answer}");
    eprintln!("a half-sent head was dropped after {took:?}");

    // A kept-alive connection is answered, then closed once idle.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    let since = Instant::now();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let (_, took) = read_until_closed(&mut kept, since).await;
    assert!((Duration::from_millis(1500)..Duration::from_secs(4)).contains(&took), "kept alive: {took:?}");
    eprintln!("an idle kept-alive connection was closed after {took:?}");

    // A slow request with its head in time is served, not cut.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    slow.write_all(b"Host: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (answer, _) = read_until_closed(&mut slow, Instant::now()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.teardown().await;
}

#[tokio::test]
async fn tenants_never_read_host_paths_in_errors_and_admins_read_them_whole() {
    let app = spawn_app().await;
    let ona = app.create_user("ona@example.test").await;
    let (ona_id,): (i64,) =
        sqlx::query_as("SELECT id FROM users WHERE email = 'ona@example.test'").fetch_one(&app.db).await.unwrap();
    // What a worker reports when creating the data directory fails (its
    // `OpError::Io` names the path), stored as the api stores it. Written
    // directly, on a host no worker syncs: making a real host fail that way
    // is not the point here.
    let root = app.data_root().display().to_string();
    let error = format!("creating {root}/7/apps: Permission denied (os error 13)");
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO servers (owner_id, name, host, status, last_error, created_at, updated_at)
         VALUES ($1, 'klaida', 'nowhere', 'failed', $2, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z') RETURNING id",
    )
    .bind(ona_id)
    .bind(&error)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let job = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO jobs (id, server_id, action, host, status, origin, error, payload, requested_by, created_at)
         VALUES ($1, $2, 'create', 'nowhere', 'failed', 'api', $3, '{}', $4, '2026-01-01T00:00:00Z')",
    )
    .bind(&job)
    .bind(id)
    .bind(&error)
    .bind(ona_id)
    .execute(&app.db)
    .await
    .unwrap();

    let tenant_reads = [
        (format!("/v1/servers/{id}"), "/server/last_error"),
        ("/v1/servers".to_owned(), "/servers/0/last_error"),
        (format!("/v1/servers/{id}/jobs"), "/jobs/0/error"),
        (format!("/v1/jobs/{job}"), "/job/error"),
    ];
    for (path, pointer) in &tenant_reads {
        let (status, body) = app.call(Method::GET, path, Some(&ona), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let seen = body.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("{path}: {body}"));
        assert_eq!(seen, "creating <path>: Permission denied (os error 13)", "{path}");
        assert!(!body.to_string().contains(&root), "{path} shows the data root: {body}");
    }
    let (_, body) = app.get(&format!("/v1/servers/{id}")).await;
    assert_eq!(body["server"]["last_error"], error.as_str(), "an admin reads it whole");
    let (_, body) = app.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(body["job"]["error"], error.as_str());
    app.teardown().await;
}

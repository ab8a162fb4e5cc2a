//! `GET /v1/events`: a user follows their servers' changes live, in order;
//! another user's stream shows none of them; a client that reconnects with
//! `Last-Event-ID` misses nothing.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::helpers::spawn_app;

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// One SSE event: its id, its kind (`server`, `job`) and its data.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    id: String,
    kind: String,
    data: Value,
}

struct Follower {
    body: Body,
    buffer: String,
}

impl Follower {
    async fn open(app: &TestApp, token: &str, last_event_id: Option<&str>) -> Follower {
        let mut request = app.http.get(format!("http://{}/v1/events", app.addr)).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Follower { body: Box::pin(response.bytes_stream()), buffer: String::new() }
    }

    /// The next event within `wait`, skipping keep-alive comments.
    async fn next(&mut self, wait: Duration) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let field =
                    |name: &str| frame.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()));
                if let (Some(id), Some(kind), Some(data)) = (field("id:"), field("event:"), field("data:")) {
                    return Some(Seen { id, kind, data: serde_json::from_str(&data).unwrap() });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await.ok()??.unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Events until `done` says the last one arrived (at most 60 s).
    async fn until(&mut self, done: impl Fn(&Seen) -> bool) -> Vec<Seen> {
        let mut seen = Vec::new();
        while let Some(event) = self.next(Duration::from_secs(60)).await {
            let last = done(&event);
            seen.push(event);
            if last {
                return seen;
            }
        }
        panic!("the stream ended or stalled; seen so far: {seen:?}");
    }
}

fn server_states(events: &[Seen], id: i64) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == "server" && e.data["server_id"] == id)
        .map(|e| e.data["status"].as_str().unwrap().to_owned())
        .collect()
}

async fn act(app: &TestApp, token: &str, method: Method, path: &str) -> String {
    let (status, body) = app.call(method, path, Some(token), Some(json!({}))).await;
    assert_eq!(status, 202, "{path}: {body}");
    let job = body["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_job(&job).await["status"], "succeeded");
    job
}

#[tokio::test]
async fn a_user_follows_their_servers_live_and_resumes_without_a_gap() {
    let app = spawn_app().await;
    let (alice, bob) = (app.create_user("alice@example.test").await, app.create_user("bob@example.test").await);
    let mut live = Follower::open(&app, &alice, None).await;
    let mut other = Follower::open(&app, &bob, None).await;

    let (status, body) = app.call(Method::POST, "/v1/servers", Some(&alice), Some(json!({ "name": "sekamas" }))).await;
    assert_eq!(status, 202, "{body}");
    let id = body["server"]["id"].as_i64().unwrap();
    app.wait_job(body["job"]["id"].as_str().unwrap()).await;
    let first = live.until(|e| e.kind == "server" && e.data["status"] == "running").await;
    assert_eq!(server_states(&first, id), ["creating", "running"]);
    let create: Vec<&str> =
        first.iter().filter(|e| e.kind == "job").map(|e| e.data["status"].as_str().unwrap()).collect();
    assert_eq!(create, ["queued", "running", "succeeded"], "{first:?}");
    drop(live); // the client goes away here

    act(&app, &alice, Method::POST, &format!("/v1/servers/{id}/stop")).await;
    act(&app, &alice, Method::DELETE, &format!("/v1/servers/{id}")).await;

    // Back with the last id it saw: everything since, in order, nothing twice.
    let mut resumed = Follower::open(&app, &alice, Some(&first.last().unwrap().id)).await;
    let rest = resumed.until(|e| e.kind == "server" && e.data["status"] == "deleted").await;
    assert_eq!(server_states(&rest, id), ["stopped", "deleting", "deleted"], "{rest:?}");
    let jobs: Vec<(&str, &str)> = rest
        .iter()
        .filter(|e| e.kind == "job")
        .map(|e| (e.data["action"].as_str().unwrap(), e.data["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        jobs,
        [
            ("stop", "queued"),
            ("stop", "running"),
            ("stop", "succeeded"),
            ("delete", "queued"),
            ("delete", "running"),
            ("delete", "succeeded")
        ]
    );
    // The whole feed from its start says the same: no gap, no repeat.
    let mut whole = Follower::open(&app, &alice, Some("0.0")).await;
    let all = whole.until(|e| e.kind == "server" && e.data["status"] == "deleted").await;
    assert_eq!(all, [first, rest].concat());

    // Bob saw none of it.
    assert_eq!(other.next(Duration::from_millis(800)).await, None);
    let bad = app.http.get(format!("http://{}/v1/events", app.addr)).bearer_auth(&bob).header("Last-Event-ID", "x");
    assert_eq!(bad.send().await.unwrap().status(), 400);
    app.teardown().await;
}

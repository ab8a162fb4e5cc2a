//! Accept: lifecycle requests per second through the HTTP API (auth, a
//! database commit, a JetStream publish acknowledged), with concurrent
//! clients, beside the raw rate of acknowledged JetStream publishes from
//! one Rust client to the same nats-server. Goal: at least half the raw rate.
//!
//! Beside them, the HTTP floor: the same clients sending `GET /healthz`,
//! which the api answers without any work. No request through the API can
//! be faster than that on this machine, so it says how much of the gap to
//! the raw rate is the HTTP transport itself (client and server share the
//! cores with nats-server and the database).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use chrono::Utc;
use vsfleet_tests::app::{TestApp, spawn_app_with};

use crate::report::Row;

pub const REQUESTS: usize = 10_000;
pub const CLIENTS: usize = 32;

pub async fn run() -> anyhow::Result<Vec<Row>> {
    eprintln!("accept: {REQUESTS} start requests from {CLIENTS} clients");
    let mut app = spawn_app_with(|_| {}).await;
    // No worker: the jobs are only accepted, so no Docker work competes.
    app.stop_worker().await;
    let ids = seed_servers(&app, REQUESTS).await?;
    let elapsed = fire(&app, &ids, "start").await?;
    let rate = REQUESTS as f64 / elapsed.as_secs_f64();
    let base = format!("http://{}", app.addr);
    let floor = drive(&app, REQUESTS, 200, move |http, _| http.get(format!("{base}/healthz"))).await?;
    let floor = REQUESTS as f64 / floor.as_secs_f64();
    let raw_js = async_nats::jetstream::new(app.connect_as(vsfleet_tests::app::UNRESTRICTED).await.0);
    let raw = raw_publish_rate(&raw_js, &format!("{}_bench_raw", app.prefix()), REQUESTS, CLIENTS).await?;
    app.teardown().await;
    let load = format!("{REQUESTS} requests, {CLIENTS} clients");
    Ok(vec![
        Row::new("accept", "accepted lifecycle requests", &load, "req/s", rate)
            .raw(raw)
            .goal("≥ 0.5 × raw", rate >= raw / 2.0),
        Row::new("accept", "HTTP floor: GET /healthz, no work", &load, "req/s", floor).raw(raw),
    ])
}

/// Inserts `count` stopped servers on the app's host, as rows only, on
/// whichever database the app uses.
pub async fn seed_servers(app: &TestApp, count: usize) -> anyhow::Result<Vec<i64>> {
    seed_rows(app, count, "stopped", Utc::now()).await
}

/// Inserts `count` servers in `status` on the app's host, as rows only;
/// running ones get a container id each.
pub async fn seed_rows(
    app: &TestApp,
    count: usize,
    status: &'static str,
    created_at: chrono::DateTime<Utc>,
) -> anyhow::Result<Vec<i64>> {
    use vsfleet_api::store::Store;
    const INSERT: &str =
        "INSERT INTO servers (owner_id, name, host, status, container_id, data_exists, created_at, updated_at)
         VALUES (1, $1, $2, $3, $4, TRUE, $5, $5) RETURNING id";
    let container = |n: usize| (status == "running").then(|| format!("{n:064x}"));
    macro_rules! seed {
        ($pool:expr) => {{
            let mut tx = $pool.begin().await?;
            let mut ids = Vec::with_capacity(count);
            for n in 0..count {
                let id: i64 = sqlx::query_scalar(INSERT)
                    .bind(format!("bench {n}"))
                    .bind(app.host())
                    .bind(status)
                    .bind(container(n))
                    .bind(created_at)
                    .fetch_one(&mut *tx)
                    .await?;
                ids.push(id);
            }
            tx.commit().await?;
            ids
        }};
    }
    Ok(match app.api_db() {
        Store::Sqlite(s) => seed!(s.write),
        Store::Postgres(p) => seed!(p),
    })
}

/// Sends `POST /v1/servers/{id}/{action}` for every id from `CLIENTS`
/// concurrent clients; every answer must be 202.
pub async fn fire(app: &TestApp, ids: &[i64], action: &str) -> anyhow::Result<Duration> {
    let ids: Arc<[i64]> = ids.into();
    let (base, token, action) = (format!("http://{}", app.addr), app.admin_token.clone(), action.to_owned());
    drive(app, ids.len(), 202, move |http, i| {
        http.post(format!("{base}/v1/servers/{}/{action}", ids[i])).bearer_auth(&token)
    })
    .await
}

/// Sends the `count` requests `request(http, i)` makes from `CLIENTS`
/// concurrent clients (keep-alive connections); every answer must have
/// status `expect`.
async fn drive<F>(app: &TestApp, count: usize, expect: u16, request: F) -> anyhow::Result<Duration>
where
    F: Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let request = Arc::new(request);
    let t0 = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, http, request) = (next.clone(), app.http.clone(), request.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let resp = request(&http, i).send().await?;
                    anyhow::ensure!(resp.status() == expect, "request {i}: {}: {}", resp.status(), resp.text().await?);
                }
            })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    Ok(t0.elapsed())
}

/// Acknowledged publishes per second to a scratch stream, `clients` at a time.
pub async fn raw_publish_rate(
    js: &jetstream::Context,
    name: &str,
    count: usize,
    clients: usize,
) -> anyhow::Result<f64> {
    let subject = format!("{name}.raw");
    js.get_or_create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await?;
    let t0 = Instant::now();
    publish_acked(js, &subject, count, clients).await?;
    let rate = count as f64 / t0.elapsed().as_secs_f64();
    js.delete_stream(name).await?;
    Ok(rate)
}

/// Publishes `count` small messages from `clients` tasks, each waiting for
/// every acknowledgement.
pub async fn publish_acked(js: &jetstream::Context, subject: &str, count: usize, clients: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (js, next, subject) = (js.clone(), next.clone(), subject.to_owned());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    js.publish(subject.clone(), "{\"server_id\": 1}".into()).await?.await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

//! Drift detection: `docker stop` and `docker rm` behind vsfleet's back, to
//! the API showing the new state; beside the same command to the Docker
//! event's arrival at a direct subscriber (the engine's own announcement:
//! nothing can know sooner). Goal: p99 under 1 s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::{EventsOptions, RemoveContainerOptions};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use vsfleet_contract::labels;
use vsfleet_tests::app::{TestApp, spawn_app_with};

use crate::report::{Row, Spread, percentiles};

const SERVERS: usize = 3;
const ROUNDS: usize = 30;

pub async fn run() -> anyhow::Result<Vec<Row>> {
    eprintln!("drift: {ROUNDS} rounds of docker stop and docker rm over {SERVERS} servers");
    let app = spawn_app_with(|_| {}).await;
    let mut ids = Vec::new();
    for n in 0..SERVERS {
        ids.push(app.create_running(&format!("drift {n}"), json!({})).await);
    }
    // The raw path: Docker's own event stream, read directly.
    let (tx, mut arrivals) = mpsc::unbounded_channel::<(String, String, Instant)>();
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("label".to_owned(), vec![format!("{}={}", labels::HOST, app.host())]),
        ("event".to_owned(), vec!["die".to_owned(), "destroy".to_owned()]),
    ]);
    let docker = app.docker.clone();
    let watcher = tokio::spawn(async move {
        let mut events = docker.events(Some(EventsOptions { filters: Some(filters), ..Default::default() }));
        while let Some(Ok(event)) = events.next().await {
            let actor = event.actor.and_then(|a| a.id).unwrap_or_default();
            let _ = tx.send((actor, event.action.unwrap_or_default(), Instant::now()));
        }
    });

    let (mut stop_api, mut stop_raw, mut rm_api, mut rm_raw) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let id = ids[round % SERVERS];
        let name = app.container_name(id);
        let container = app.inspect(id).await.and_then(|c| c.id).unwrap_or_default();

        let t0 = Instant::now();
        app.docker.stop_container(&name, None).await?;
        stop_api.push(until_status(&app, id, "stopped").await - t0);
        stop_raw.push(arrival(&mut arrivals, &container, "die").await - t0);
        app.docker.start_container(&name, None).await?;
        until_status(&app, id, "running").await;

        let t0 = Instant::now();
        app.docker.remove_container(&name, Some(RemoveContainerOptions { force: true, ..Default::default() })).await?;
        rm_api.push(until_status(&app, id, "missing").await - t0);
        rm_raw.push(arrival(&mut arrivals, &container, "destroy").await - t0);
        // Back to running for the next round: start recreates the container.
        let job = app.act(id, "start").await;
        anyhow::ensure!(job["status"] == "succeeded", "recreate failed: {job}");
        until_status(&app, id, "running").await;
    }
    watcher.abort();
    app.teardown().await;

    let load = format!("{ROUNDS} rounds, {SERVERS} servers");
    let mut rows = Vec::new();
    for (what, api, raw) in [
        ("docker stop → API stopped", &mut stop_api, &mut stop_raw),
        ("docker rm → API missing", &mut rm_api, &mut rm_raw),
    ] {
        let (api50, api99) = percentiles(api);
        let (raw50, raw99) = percentiles(raw);
        let (api_spread, raw_spread) = (Spread::of(api), Spread::of(raw));
        rows.push(
            Row::new("drift", format!("{what}, median"), &load, "ms", api50)
                .raw(raw50)
                .spread(api_spread)
                .raw_spread(raw_spread),
        );
        rows.push(
            Row::new("drift", format!("{what}, p99"), &load, "ms", api99)
                .raw(raw99)
                .goal("p99 < 1000 ms", api99 < 1000.0),
        );
    }
    Ok(rows)
}

/// Polls the API (every 2 ms) until the server shows `status`.
async fn until_status(app: &TestApp, id: i64, status: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = app.get(&format!("/v1/servers/{id}")).await;
        if body["server"]["status"] == status {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "server {id} never became {status}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn arrival(
    arrivals: &mut mpsc::UnboundedReceiver<(String, String, Instant)>,
    container: &str,
    action: &str,
) -> Instant {
    loop {
        let (actor, what, at) =
            tokio::time::timeout(Duration::from_secs(30), arrivals.recv()).await.ok().flatten().expect("docker event");
        if actor == container && what == action {
            return at;
        }
    }
}

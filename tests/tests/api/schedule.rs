//! The scheduler: auto-purge after the retention, and one job per period
//! however many replicas run.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::json;
use vsfleet_contract::schedule::{Periodic, Tick};

use crate::helpers::{eventually, spawn_app_with};

#[tokio::test]
async fn a_deleted_server_is_purged_by_the_scheduler_alone_and_a_restored_one_is_not() {
    let mut app = spawn_app_with(|s| s.api.retention_secs = 2).await;
    let gone = app.create_running("išeinantis", json!({})).await;
    let kept = app.create_running("grįžtantis", json!({})).await;
    app.act(gone, "delete").await;
    app.act(kept, "delete").await;
    app.wait_status(gone, "deleted").await;
    // Restored before its retention ends: it must survive.
    assert_eq!(app.act(kept, "restore").await["status"], "succeeded");

    app.start_scheduler().await;
    eventually("the deleted server is purged", || async {
        (app.get(&format!("/v1/servers/{gone}")).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let (origin, status): (String, String) =
        sqlx::query_as("SELECT origin, status FROM jobs WHERE server_id = $1 AND action = 'purge'")
            .bind(gone)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((origin.as_str(), status.as_str()), ("scheduler", "succeeded"));
    let root = app.data_root();
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{gone}-deleted-")) || *n == gone.to_string())
        .collect();
    assert!(left.is_empty(), "purged server left {left:?}");

    assert_eq!(app.server(kept).await["status"], "missing");
    assert!(root.join(kept.to_string()).join("apps").is_dir());
    app.teardown().await;
}

#[tokio::test]
async fn two_scheduler_replicas_emit_one_job_per_period() {
    let mut app = spawn_app_with(|s| {
        s.scheduler.sync_interval_ms = 200;
        s.scheduler.cleanup_interval_ms = 200;
        s.scheduler.purge_interval_ms = 200;
    })
    .await;
    app.start_scheduler().await;
    app.start_scheduler().await;
    let stream = app.js.get_stream(format!("{}_schedule", app.prefix())).await.unwrap();
    eventually("both replicas ran for a dozen periods", || async {
        (stream.get_info().await.ok()?.state.messages >= 36).then_some(())
    })
    .await;
    app.stop_schedulers().await;

    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut seen = HashSet::new();
    let mut per_kind = [0usize; 3];
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        let tick: Tick = serde_json::from_slice(&message.payload).unwrap();
        assert!(seen.insert((tick.kind, tick.period)), "{:?} period {} emitted twice", tick.kind, tick.period);
        per_kind[Periodic::ALL.iter().position(|k| *k == tick.kind).unwrap()] += 1;
    }
    assert!(per_kind.iter().all(|&n| n >= 10), "{per_kind:?}");
    app.teardown().await;
}

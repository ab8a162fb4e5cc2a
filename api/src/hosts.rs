//! Which worker hosts are alive, from the `{prefix}_hosts` bucket that
//! workers refresh every heartbeat.

use async_nats::jetstream::kv;
use chrono::Utc;
use futures::TryStreamExt;
use vsfleet_contract::HostPresence;

/// Hosts whose presence is younger than `max_age_secs`, sorted by name.
pub async fn alive(bucket: &kv::Store, max_age_secs: i64) -> anyhow::Result<Vec<String>> {
    let keys: Vec<String> = bucket.keys().await?.try_collect().await?;
    let mut alive = Vec::new();
    for key in keys {
        let Some(value) = bucket.get(&key).await? else {
            continue;
        };
        match serde_json::from_slice::<HostPresence>(&value) {
            Ok(p) if (Utc::now() - p.seen_at).num_seconds() <= max_age_secs => alive.push(p.host),
            Ok(_) => {}
            Err(error) => tracing::warn!(host = key, %error, "unreadable host presence"),
        }
    }
    alive.sort();
    Ok(alive)
}

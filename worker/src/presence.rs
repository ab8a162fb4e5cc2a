//! Announcing this host in the `{prefix}_hosts` bucket, so the api knows
//! which hosts are alive (and which are degraded) and can place servers on
//! them.

use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use vsfleet_contract::HostPresence;

use crate::health::Health;

pub async fn announce(
    bucket: &kv::Store,
    host: &str,
    started_at: DateTime<Utc>,
    degraded: Option<String>,
    capacity: u32,
) -> anyhow::Result<()> {
    let presence = HostPresence {
        host: host.to_owned(),
        started_at,
        seen_at: Utc::now(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        degraded,
        capacity: Some(capacity),
    };
    bucket.put(host, serde_json::to_vec(&presence)?.into()).await?;
    Ok(())
}

/// Refreshes the entry every `every`, and at once when the host's health
/// changes, until shut down; then removes it so the host stops receiving
/// new servers at once. Processes on one host share the entry: another one
/// still running puts it back at its next heartbeat.
pub struct Announcement {
    pub host: String,
    pub capacity: u32,
    pub every: Duration,
}

pub async fn run(bucket: kv::Store, this: Announcement, mut health: Health, shutdown: CancellationToken) {
    let Announcement { host, capacity, every } = this;
    let started_at = Utc::now();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            () = health.changed() => {}
        }
        if let Err(error) = announce(&bucket, &host, started_at, health.degraded(), capacity).await {
            tracing::warn!(error = format!("{error:#}"), "presence: cannot announce this host");
        }
    }
    if let Err(error) = bucket.delete(&host).await {
        tracing::debug!(%error, "presence: removing this host's entry");
    }
}

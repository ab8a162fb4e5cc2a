//! Which worker hosts are alive, and which of those are degraded. Workers
//! refresh their entry in the `{prefix}_hosts` bucket every heartbeat; the
//! api follows the bucket with a watch and keeps the last entry of each host
//! in memory, so placing a server costs no round trip to NATS. Entries
//! expire in the bucket without a delete marker, so liveness is judged by
//! the heartbeat's age.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use vsfleet_contract::HostPresence;

use crate::inbound::{self, Inbound, Kind};

#[derive(Clone, Default)]
pub struct Registry {
    seen: Arc<RwLock<HashMap<String, HostPresence>>>,
}

impl Registry {
    /// Hosts whose last heartbeat is younger than `max_age_secs`, by name.
    /// Until the watch has delivered anything (just after start), asks the
    /// bucket directly.
    pub async fn alive(&self, bucket: &kv::Store, max_age_secs: i64) -> anyhow::Result<Vec<HostPresence>> {
        let empty = self.seen.read().expect("not poisoned").is_empty();
        if empty {
            // Entries that fail the checks are left to the watch to reject.
            for (key, presence) in read_all(bucket).await? {
                if inbound::check_presence(&key, &presence, Utc::now()).is_ok() {
                    self.record(presence);
                }
            }
        }
        let now = Utc::now();
        let mut alive: Vec<HostPresence> = self
            .seen
            .read()
            .expect("not poisoned")
            .values()
            .filter(|p| (now - p.seen_at).num_seconds() <= max_age_secs)
            .cloned()
            .collect();
        alive.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(alive)
    }

    /// The hosts the watch has seen alive, from memory alone (no round trip
    /// on the request path); `None` until the watch has delivered anything.
    pub fn alive_known(&self, max_age_secs: i64) -> Option<Vec<HostPresence>> {
        let seen = self.seen.read().expect("not poisoned");
        if seen.is_empty() {
            return None;
        }
        let now = Utc::now();
        Some(seen.values().filter(|p| (now - p.seen_at).num_seconds() <= max_age_secs).cloned().collect())
    }

    /// Keeps the newest entry of each host (the watch and a direct read may
    /// deliver them out of order).
    fn record(&self, presence: HostPresence) {
        let mut seen = self.seen.write().expect("not poisoned");
        match seen.get(&presence.host) {
            Some(known) if known.seen_at > presence.seen_at => {}
            _ => {
                seen.insert(presence.host.clone(), presence);
            }
        }
    }

    fn forget(&self, host: &str) {
        self.seen.write().expect("not poisoned").remove(host);
    }

    /// Follows the bucket until shut down, re-watching after errors.
    pub async fn follow(self, bucket: kv::Store, inbound: Inbound, shutdown: CancellationToken) {
        loop {
            match bucket.watch_with_history(">").await {
                Ok(mut watch) => loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = watch.next() => next,
                    };
                    match next {
                        Some(Ok(entry)) => match entry.operation {
                            kv::Operation::Put => {
                                let checked = serde_json::from_slice::<HostPresence>(&entry.value)
                                    .map_err(|e| format!("unreadable: {e}"))
                                    .and_then(|p| inbound::check_presence(&entry.key, &p, Utc::now()).map(|()| p));
                                match checked {
                                    Ok(presence) => self.record(presence),
                                    Err(why) => {
                                        // Re-watching replays the entry: the revision keeps its dead letter single.
                                        let subject = format!("$KV.{}.{}", entry.bucket, entry.key);
                                        let id = format!("rejected-KV_{}-{}", entry.bucket, entry.revision);
                                        if let Err(error) = inbound
                                            .reject(Kind::HostEntry, &subject, &entry.value, &why, Some(id))
                                            .await
                                        {
                                            tracing::warn!(%error, "hosts: cannot store a rejected entry");
                                        }
                                    }
                                }
                            }
                            kv::Operation::Delete | kv::Operation::Purge => self.forget(&entry.key),
                        },
                        Some(Err(error)) => {
                            tracing::warn!(%error, "hosts: watch failed; watching again");
                            break;
                        }
                        None => break,
                    }
                },
                Err(error) => tracing::warn!(%error, "hosts: cannot watch the hosts bucket"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

async fn read_all(bucket: &kv::Store) -> anyhow::Result<Vec<(String, HostPresence)>> {
    let keys: Vec<String> = bucket.keys().await?.try_collect().await?;
    let mut all = Vec::new();
    for key in keys {
        if let Some(value) = bucket.get(&key).await?
            && let Ok(presence) = serde_json::from_slice(&value)
        {
            all.push((key, presence));
        }
    }
    Ok(all)
}

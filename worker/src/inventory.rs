//! What this host really has, for the periodic sync: the containers
//! labelled for this host, and which server data directories and archives
//! exist. Sent in parts so a host of thousands of servers still fits in
//! NATS messages.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::schedule::Tick;
use vsfleet_contract::{Inventory, SeenContainer, ServerId, Settings};

use crate::error::OpError;
use crate::health::Health;
use crate::layout::DataRoot;
use crate::ops::Operations;
use crate::publish;

/// Entries per part: a container entry is about 120 bytes of JSON, so a
/// part stays far below NATS' default 1 MiB message limit.
pub const PART_SIZE: usize = 2000;

pub async fn consumer(schedule: &jetstream::stream::Stream, settings: &Settings) -> anyhow::Result<PullConsumer> {
    let host = &settings.worker.host_id;
    let name = settings.subjects().sync_consumer(host);
    Ok(schedule.get_or_create_consumer(&name, vsfleet_contract::jetstream::sync_consumer(settings, host)).await?)
}

/// Lists the host and splits it into parts.
pub async fn take(ops: &Operations, host: &str) -> Result<Vec<Inventory>, OpError> {
    let containers = ops.containers.list_managed().await?;
    let root = ops.root.clone();
    let (data_dirs, archives) = tokio::task::spawn_blocking(move || scan(&root))
        .await
        .map_err(|e| OpError::Inner(format!("scanning the data root: {e}")))?
        .map_err(OpError::io("scanning", ops.root.root()))?;
    Ok(split(host, containers, data_dirs, archives))
}

/// Server ids with a data directory, and with at least one archive.
fn scan(root: &DataRoot) -> std::io::Result<(Vec<ServerId>, Vec<ServerId>)> {
    let mut data = BTreeSet::new();
    let mut archived = BTreeSet::new();
    let entries = match std::fs::read_dir(root.root()) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Ok(id) = name.parse::<ServerId>() {
            data.insert(id);
        } else if let Some(id) = DataRoot::archive_owner(&name) {
            archived.insert(id);
        }
    }
    Ok((data.into_iter().collect(), archived.into_iter().collect()))
}

pub fn split(
    host: &str,
    containers: Vec<SeenContainer>,
    data_dirs: Vec<ServerId>,
    archives: Vec<ServerId>,
) -> Vec<Inventory> {
    let longest = containers.len().max(data_dirs.len()).max(archives.len());
    let parts = longest.div_ceil(PART_SIZE).max(1);
    let sync_id = uuid::Uuid::new_v4();
    let at = Utc::now();
    (0..parts)
        .map(|i| Inventory {
            host: host.to_owned(),
            sync_id,
            part: i as u32,
            parts: parts as u32,
            at,
            containers: chunk(&containers, i),
            data_dirs: chunk(&data_dirs, i),
            archives: chunk(&archives, i),
        })
        .collect()
}

fn chunk<T: Clone>(all: &[T], part: usize) -> Vec<T> {
    all.iter().skip(part * PART_SIZE).take(PART_SIZE).cloned().collect()
}

/// Answers each sync tick with this host's inventory, until shut down.
pub async fn run(
    consumer: PullConsumer,
    ops: Operations,
    js: jetstream::Context,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let host = settings.worker.host_id.clone();
    let subject = settings.subjects().inventory_events(&host);
    let stale_after = chrono::Duration::milliseconds(settings.scheduler.sync_interval_ms as i64 * 2);
    vsfleet_contract::process::each_message(&consumer, "sync", &shutdown, |message| {
        let (ops, js, subject, host) = (&ops, &js, &subject, &host);
        async move {
            let tick: Option<Tick> = serde_json::from_slice(&message.payload).ok();
            // Ticks queued while this worker was down are answered once, by the newest.
            if tick.as_ref().is_none_or(|t| Utc::now() - t.at > stale_after) {
                let _ = message.ack().await;
                return;
            }
            let ack = match report(ops, js, subject, host).await {
                Ok(parts) => {
                    tracing::debug!(parts, "sync: inventory reported");
                    AckKind::Ack
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "sync: cannot report the inventory");
                    AckKind::Nak(Some(Duration::from_secs(2)))
                }
            };
            let _ = message.ack_with(ack).await;
        }
    })
    .await
}

/// Reports the inventory when the worker starts, when its connection to
/// NATS comes back and when Docker answers again, so a host that was away
/// (killed, cut off, its engine down) is reconciled at once rather than at
/// the next sync tick.
pub async fn report_on_return(
    nats: async_nats::Client,
    ops: Operations,
    js: jetstream::Context,
    settings: Settings,
    mut health: Health,
    shutdown: CancellationToken,
) {
    let host = settings.worker.host_id.clone();
    let subject = settings.subjects().inventory_events(&host);
    let mut due = true;
    let mut was_connected = true;
    let mut not_before = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            () = health.changed() => due |= health.degraded().is_none(),
        }
        let connected = nats.connection_state() == async_nats::connection::State::Connected;
        due |= connected && !was_connected;
        was_connected = connected;
        if !due || !connected || health.degraded().is_some() || tokio::time::Instant::now() < not_before {
            continue;
        }
        match report(&ops, &js, &subject, &host).await {
            Ok(parts) => {
                tracing::info!(parts, "inventory reported on (re)connection");
                due = false;
            }
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "cannot report the inventory; trying again shortly");
                not_before = tokio::time::Instant::now() + Duration::from_secs(2);
            }
        }
    }
}

async fn report(ops: &Operations, js: &jetstream::Context, subject: &str, host: &str) -> anyhow::Result<usize> {
    let parts = take(ops, host).await?;
    for part in &parts {
        let id = format!("{}-{}", part.sync_id, part.part);
        publish::json(js, subject.to_owned(), &id, part).await?;
    }
    Ok(parts.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsfleet_contract::ContainerState;

    #[test]
    fn a_large_host_is_split_into_bounded_parts() {
        let id = |n: i64| ServerId::new(n).unwrap();
        let containers: Vec<_> = (1..=4500)
            .map(|n| SeenContainer {
                server_id: id(n),
                container_id: format!("{n:064}"),
                state: ContainerState::Running,
            })
            .collect();
        let parts = split("h", containers, (1..=10).map(id).collect(), vec![]);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.parts == 3 && p.sync_id == parts[0].sync_id));
        assert_eq!(parts.iter().map(|p| p.containers.len()).sum::<usize>(), 4500);
        assert_eq!(parts[0].data_dirs.len(), 10);
        let biggest = parts.iter().map(|p| serde_json::to_vec(p).unwrap().len()).max().unwrap();
        assert!(biggest < 512 * 1024, "a part is {biggest} bytes");
    }
}

//! Recording the workers' container-monitor snapshots: the containers
//! inside each running server (seed 000 §8). A snapshot replaces the
//! server's rows; snapshots arrive over core NATS (a queue group, so one api
//! replica records each).

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::InnerContainers;

use crate::inbound::{self, Inbound, Kind};
use crate::store::{Store, transaction};

pub async fn run(mut snapshots: async_nats::Subscriber, db: Store, inbound: Inbound, shutdown: CancellationToken) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = snapshots.next() => match next {
                Some(m) => m,
                None => return,
            },
        };
        let host = inbound.subject_host(&message.subject).unwrap_or_default();
        let checked = serde_json::from_slice::<InnerContainers>(&message.payload)
            .map_err(|e| format!("unreadable: {e}"))
            .and_then(|report| inbound::check_monitor(host, &report, Utc::now()).map(|()| report));
        let refused = match checked {
            Ok(report) => match record(&db, &report).await {
                Ok(Recorded::Yes | Recorded::NotLive) => None,
                Ok(Recorded::Foreign(why)) => Some(why),
                Err(error) => {
                    tracing::warn!(server_id = %report.server_id, error = format!("{error:#}"), "monitor: cannot record");
                    None
                }
            },
            Err(why) => Some(why),
        };
        if let Some(why) = refused
            && let Err(error) = inbound.reject(Kind::Monitor, &message.subject, &message.payload, &why, None).await
        {
            tracing::warn!(%error, "monitor: cannot store a rejected snapshot");
        }
    }
}

/// What became of a snapshot.
pub enum Recorded {
    Yes,
    /// The server is gone or being deleted: nothing to show (a race, not a fault).
    NotLive,
    /// The server lives on another host than the one that reported it.
    Foreign(String),
}

pub async fn record(store: &Store, report: &InnerContainers) -> anyhow::Result<Recorded> {
    let id = report.server_id.as_i64();
    transaction!(store, |q, conn| {
        // Only live servers on the reporting host have inner containers.
        let Some(server) = q::server_for_update(&mut *conn, id).await? else { return Ok(Recorded::NotLive) };
        if server.host != report.host {
            return Ok(Recorded::Foreign(format!(
                "server {} lives on host {}, not on the reporting host {}",
                report.server_id, server.host, report.host
            )));
        }
        if !server.status.is_live() {
            return Ok(Recorded::NotLive);
        }
        q::replace_inner_containers(&mut *conn, id, &report.containers, crate::store::now()).await?;
        Ok::<_, anyhow::Error>(Recorded::Yes)
    })
}

pub use crate::store::InnerRow;

pub async fn list(store: &Store, server_id: i64) -> Result<Vec<InnerRow>, crate::store::StoreError> {
    store.inner_containers(server_id).await
}

//! Recording the workers' container-monitor snapshots: the containers
//! inside each running server (seed 000 §8). A snapshot replaces the
//! server's rows; snapshots arrive over core NATS (a queue group, so one api
//! replica records each).

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{InnerContainers, ServerStatus};

use crate::db::{Db, begin_write};
use crate::inbound::{self, Inbound, Kind};
use crate::servers;

pub async fn run(mut snapshots: async_nats::Subscriber, db: Db, inbound: Inbound, shutdown: CancellationToken) {
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

pub async fn record(db: &Db, report: &InnerContainers) -> anyhow::Result<Recorded> {
    let id = report.server_id.as_i64();
    let mut tx = begin_write(db).await?;
    // Only live servers on the reporting host have inner containers.
    let Some(server) = servers::get(&mut *tx, id).await? else { return Ok(Recorded::NotLive) };
    if server.host != report.host {
        return Ok(Recorded::Foreign(format!(
            "server {} lives on host {}, not on the reporting host {}",
            report.server_id, server.host, report.host
        )));
    }
    if matches!(server.status(), ServerStatus::Deleted | ServerStatus::Deleting) {
        return Ok(Recorded::NotLive);
    }
    let now = Utc::now();
    sqlx::query("DELETE FROM server_containers WHERE server_id = ?").bind(id).execute(&mut *tx).await?;
    for c in &report.containers {
        sqlx::query(
            "INSERT INTO server_containers (server_id, docker_id, image, names, state, status, ports, labels, created, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&c.id)
        .bind(&c.image)
        .bind(&c.names)
        .bind(&c.state)
        .bind(&c.status)
        .bind(&c.ports)
        .bind(&c.labels)
        .bind(&c.created)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Recorded::Yes)
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct InnerRow {
    pub docker_id: String,
    pub image: String,
    pub names: String,
    pub state: String,
    pub status: String,
    pub ports: String,
    pub labels: String,
    pub created: String,
    pub updated_at: chrono::DateTime<Utc>,
}

pub async fn list(db: &Db, server_id: i64) -> Result<Vec<InnerRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT docker_id, image, names, state, status, ports, labels, created, updated_at
         FROM server_containers WHERE server_id = ? ORDER BY names",
    )
    .bind(server_id)
    .fetch_all(&db.read)
    .await
}

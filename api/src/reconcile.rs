//! Reconciling a host's inventory with the database (seed 001: the database
//! says what should exist; Docker shows what does). `plan` is pure, so it
//! is tested and benchmarked on its own; `apply` loads, plans and writes in
//! one transaction.
//!
//! Rules: `running`/`stopped` follow the container; a server whose
//! container is gone becomes `missing`; `data_exists` follows the disk.
//! Servers with a job in flight, in a job's transient state, deleted, or
//! changed after the inventory was taken are left alone. Containers with
//! our labels that belong to no live server are orphans.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use vsfleet_contract::{ContainerState, Observed, SeenContainer, ServerId, ServerStatus};

use crate::store::{Store, transaction};

pub use crate::store::Known;

/// A whole host's inventory (all parts joined).
#[derive(Debug, Clone, Default)]
pub struct HostInventory {
    pub at: DateTime<Utc>,
    pub containers: Vec<SeenContainer>,
    pub data_dirs: Vec<ServerId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub id: ServerId,
    pub status: ServerStatus,
    pub container_id: Option<String>,
    pub data_exists: bool,
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub orphans: Vec<SeenContainer>,
}

pub fn plan(known: &[Known], inventory: &HostInventory) -> Plan {
    let mut containers: HashMap<ServerId, &SeenContainer> = HashMap::with_capacity(inventory.containers.len());
    for c in &inventory.containers {
        // Two containers for one server (a stray): the running one speaks.
        let slot = containers.entry(c.server_id).or_insert(c);
        if c.state == ContainerState::Running {
            *slot = c;
        }
    }
    let data: HashSet<ServerId> = inventory.data_dirs.iter().copied().collect();
    let mut live = HashSet::with_capacity(known.len());
    let mut out = Plan::default();
    for server in known {
        let status = server.status;
        if status.owns_its_containers() {
            live.insert(server.id);
        }
        if server.busy || server.updated_at > inventory.at {
            continue;
        }
        let seen = containers.get(&server.id);
        let state = seen.map_or(ContainerState::Absent, |c| c.state);
        let Some(next) = status.synced(state) else { continue };
        let container_id = seen
            .map(|c| c.container_id.clone())
            .or_else(|| next.keeps_container_id().then(|| server.container_id.clone()).flatten());
        let data_exists = data.contains(&server.id);
        if next != status || container_id != server.container_id || data_exists != server.data_exists {
            out.changes.push(Change { id: server.id, status: next, container_id, data_exists });
        }
    }
    out.orphans = inventory.containers.iter().filter(|c| !live.contains(&c.server_id)).cloned().collect();
    out
}

/// Loads the host's servers (locked), plans, and writes the changes in one transaction.
pub async fn apply(store: &Store, host: &str, inventory: &HostInventory) -> anyhow::Result<Plan> {
    transaction!(store, |q, conn| {
        let known = q::known_on_host(&mut *conn, host).await?;
        let plan = plan(&known, inventory);
        let now = crate::store::now();
        for change in &plan.changes {
            q::set_observed(
                &mut *conn,
                change.id.as_i64(),
                change.status,
                change.container_id.as_deref(),
                change.data_exists,
                now,
            )
            .await?;
            tracing::info!(server_id = %change.id, status = %change.status, "sync: server brought in line with its host");
        }
        Ok::<_, anyhow::Error>(plan)
    })
    .inspect(|plan| crate::metrics::get().drift.with_label_values(&["sync"]).inc_by(plan.changes.len() as u64))
}

/// Why an observation was not applied.
pub enum Applied {
    /// It contradicts the server's row (another host's server).
    Refused(String),
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Applied {
    fn from(e: E) -> Self {
        Applied::Failed(e.into())
    }
}

impl From<Applied> for crate::error::ApiError {
    fn from(e: Applied) -> Self {
        match e {
            Applied::Refused(why) => crate::error::ApiError::Internal(anyhow::anyhow!(why)),
            Applied::Failed(e) => crate::error::ApiError::Internal(e),
        }
    }
}

/// Drift seen in Docker's event stream: the server follows its container,
/// unless a job is in flight (the job will say) or it is in a state only a
/// job may leave. Only the server's own host may report it.
pub async fn apply_observed(store: &Store, seen: &Observed) -> Result<(), Applied> {
    let id = seen.server_id.as_i64();
    let status = transaction!(store, |q, conn| {
        let Some(server) = q::server_for_update(&mut *conn, id).await? else { return Ok(()) };
        if server.host != seen.host {
            return Err(Applied::Refused(format!(
                "server {} lives on host {}, not on the reporting host {}",
                seen.server_id, server.host, seen.host
            )));
        }
        if q::job_in_flight(&mut *conn, id).await?.is_some() {
            return Ok(());
        }
        let Some(status) = server.status.drifted(seen.observed.container) else { return Ok(()) };
        let observed = &seen.observed;
        let at = crate::store::now();
        q::set_observed(&mut *conn, id, status, observed.container_id.as_deref(), observed.data_exists, at).await?;
        Ok::<_, Applied>(status)
    })?;
    tracing::info!(server_id = id, cause = seen.cause, %status, "drift recorded");
    crate::metrics::get().drift.with_label_values(&["docker"]).inc();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(id: i64) -> ServerId {
        ServerId::new(id).unwrap()
    }

    fn known(id: i64, status: &str, container: Option<&str>) -> Known {
        Known {
            id: sid(id),
            status: status.parse().unwrap(),
            container_id: container.map(Into::into),
            data_exists: true,
            updated_at: DateTime::from_timestamp(1_000, 0).unwrap(),
            busy: false,
        }
    }

    fn seen(id: i64, container: &str, state: ContainerState) -> SeenContainer {
        SeenContainer { server_id: ServerId::new(id).unwrap(), container_id: container.into(), state }
    }

    fn inventory(containers: Vec<SeenContainer>, data: &[i64]) -> HostInventory {
        HostInventory {
            at: DateTime::from_timestamp(2_000, 0).unwrap(),
            containers,
            data_dirs: data.iter().map(|&n| ServerId::new(n).unwrap()).collect(),
        }
    }

    #[test]
    fn servers_follow_their_containers_and_disk() {
        let db = [known(1, "running", Some("a")), known(2, "running", Some("b")), known(3, "stopped", Some("c"))];
        let inv =
            inventory(vec![seen(1, "a", ContainerState::Running), seen(3, "c", ContainerState::Running)], &[1, 3]);
        let plan = plan(&db, &inv);
        assert_eq!(
            plan.changes,
            vec![
                Change { id: sid(2), status: ServerStatus::Missing, container_id: None, data_exists: false },
                Change { id: sid(3), status: ServerStatus::Running, container_id: Some("c".into()), data_exists: true },
            ]
        );
        assert!(plan.orphans.is_empty());
    }

    #[test]
    fn busy_transient_deleted_and_newer_rows_are_left_alone() {
        let mut busy = known(1, "running", Some("a"));
        busy.busy = true;
        let mut newer = known(4, "running", Some("d"));
        newer.updated_at = DateTime::from_timestamp(3_000, 0).unwrap();
        let db = [busy, known(2, "creating", None), known(3, "deleted", None), newer];
        assert_eq!(plan(&db, &inventory(vec![], &[])).changes, vec![]);
    }

    #[test]
    fn containers_of_no_live_server_are_orphans() {
        let db = [known(1, "running", Some("a")), known(2, "deleted", None)];
        let inv = inventory(
            vec![
                seen(1, "a", ContainerState::Running),
                seen(2, "b", ContainerState::Stopped),
                seen(9, "z", ContainerState::Stopped),
            ],
            &[1],
        );
        let orphans: Vec<_> = plan(&db, &inv).orphans.into_iter().map(|c| c.server_id.get()).collect();
        assert_eq!(orphans, [2, 9]);
    }

    #[test]
    fn of_two_containers_for_one_server_the_running_one_speaks() {
        let db = [known(1, "stopped", Some("old")), known(2, "running", Some("b"))];
        let inv = inventory(
            vec![
                seen(1, "old", ContainerState::Stopped),
                seen(1, "new", ContainerState::Running),
                seen(1, "stray", ContainerState::Stopped),
                seen(2, "b", ContainerState::Running),
                seen(2, "b2", ContainerState::Stopped),
            ],
            &[1, 2],
        );
        assert_eq!(
            plan(&db, &inv).changes,
            vec![Change {
                id: sid(1),
                status: ServerStatus::Running,
                container_id: Some("new".into()),
                data_exists: true
            }]
        );
    }

    #[test]
    fn a_row_written_at_the_inventorys_instant_is_still_reconciled() {
        let mut same = known(1, "running", Some("a"));
        same.updated_at = inventory(vec![], &[]).at;
        let changes = plan(&[same], &inventory(vec![], &[1])).changes;
        assert_eq!(
            changes,
            vec![Change { id: sid(1), status: ServerStatus::Missing, container_id: None, data_exists: true }]
        );
    }

    #[test]
    fn a_failed_server_keeps_its_container_id_and_the_others_follow_docker() {
        let db = [known(1, "failed", Some("gone")), known(2, "missing", Some("stale"))];
        let changes = plan(&db, &inventory(vec![], &[1])).changes;
        assert_eq!(
            changes,
            vec![Change { id: sid(2), status: ServerStatus::Missing, container_id: None, data_exists: false }],
            "the failed server's id is kept, the missing one's dropped"
        );
    }

    #[test]
    fn a_new_container_id_or_a_change_on_disk_alone_is_a_change() {
        let db = [known(1, "running", Some("a")), known(2, "running", Some("b")), known(3, "running", Some("c"))];
        let inv = inventory(
            vec![
                seen(1, "a2", ContainerState::Running),
                seen(2, "b", ContainerState::Running),
                seen(3, "c", ContainerState::Running),
            ],
            &[1, 3],
        );
        assert_eq!(
            plan(&db, &inv).changes,
            vec![
                Change {
                    id: sid(1),
                    status: ServerStatus::Running,
                    container_id: Some("a2".into()),
                    data_exists: true
                },
                Change {
                    id: sid(2),
                    status: ServerStatus::Running,
                    container_id: Some("b".into()),
                    data_exists: false
                },
            ]
        );
    }
}

//! The steps of a write transaction ([`super::Store::write`]), each one
//! statement (or one per row) on either backend.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use sqlx::PgConnection;
use vsfleet_contract::{JobId, ServerId, ServerStatus};

use super::rows::{Checked, Job, NewServer, Server};
use super::{StoreError, lite_writer as lite, pg_writer as pg};

/// A write transaction in progress.
pub enum Tx<'c> {
    /// On the SQLite group-commit writer's connection.
    Sqlite(WriterConn<'c>),
    /// In a PostgreSQL pool transaction.
    Postgres(&'c mut PgConnection),
}

/// The writer thread's connection, lent to the steps of one write.
///
/// `Store::write` takes steps whose future is `Send`, because on
/// PostgreSQL it is awaited by the request's own task. A rusqlite
/// connection is not `Sync`, so a future holding a reference to it is not
/// `Send`. This wrapper says it is, which holds because of where it lives:
/// it is made only in `Store::write`'s SQLite branch, on the writer thread,
/// and the steps' future that holds it is polled to completion and dropped
/// there (`block_on` in the writer's task), so the connection is never
/// touched from another thread.
pub struct WriterConn<'c>(&'c Connection);

impl<'c> WriterConn<'c> {
    /// Only for the writer thread (see the type's safety note).
    pub(super) fn new(conn: &'c Connection) -> Self {
        Self(conn)
    }
}

// SAFETY: see `WriterConn`: the reference is used on one thread only.
unsafe impl Send for WriterConn<'_> {}
// SAFETY: as above.
unsafe impl Sync for WriterConn<'_> {}

/// Runs the SQLite or the PostgreSQL form of a step.
macro_rules! step {
    ($tx:expr, |$lite:ident| $on_lite:expr, |$pg:ident| $on_pg:expr) => {
        match $tx {
            Tx::Sqlite(WriterConn($lite)) => Ok($on_lite?),
            Tx::Postgres($pg) => Ok($on_pg.await?),
        }
    };
}

impl Tx<'_> {
    /// What a request checks of a server; its row stays locked until the
    /// transaction ends.
    pub async fn checked(&mut self, id: i64) -> Result<Option<Checked>, StoreError> {
        step!(self, |c| lite::checked(c, id), |c| pg::checked(c, id))
    }

    /// The server's job in flight, if any.
    pub async fn busy_job(&mut self, server_id: i64) -> Result<Option<JobId>, StoreError> {
        step!(self, |c| lite::busy_job(c, server_id), |c| pg::busy_job(c, server_id))
    }

    /// Makes racing creates of one owner, or on one host, take turns, so
    /// each counts the servers the others inserted. SQLite's writer runs
    /// one transaction at a time already.
    pub async fn lock_for_create(&mut self, owner_id: i64, host: &str) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(_) => Ok(()),
            Tx::Postgres(c) => {
                pg::lock(c, &format!("vsfleet owner {owner_id}")).await?;
                Ok(pg::lock(c, &format!("vsfleet host {host}")).await?)
            }
        }
    }

    /// How many servers `owner_id` has that are not deleted.
    pub async fn live_count(&mut self, owner_id: i64) -> Result<i64, StoreError> {
        step!(self, |c| lite::count(c, super::LIVE_COUNT, &owner_id), |c| sqlx::query_scalar(super::LIVE_COUNT)
            .bind(owner_id)
            .fetch_one(&mut **c))
    }

    /// How many servers not deleted are on `host` (what its capacity counts).
    pub async fn host_count(&mut self, host: &str) -> Result<i64, StoreError> {
        step!(self, |c| lite::count(c, super::HOST_COUNT, &host), |c| sqlx::query_scalar(super::HOST_COUNT)
            .bind(host)
            .fetch_one(&mut **c))
    }

    /// The host ports allocated on `host` (to any server).
    pub async fn taken_ports(&mut self, host: &str) -> Result<Vec<u16>, StoreError> {
        step!(self, |c| lite::taken_ports(c, host), |c| pg::taken_ports(c, host))
    }

    /// Inserts the server and its published ports; a host port another
    /// server holds on the host is a unique violation.
    pub async fn insert_server(&mut self, new: &NewServer) -> Result<Server, StoreError> {
        step!(self, |c| lite::insert_server(c, new), |c| pg::insert_server(c, new))
    }

    /// Inserts whole rows as they are.
    pub async fn insert_jobs(&mut self, jobs: &[&Job]) -> Result<(), StoreError> {
        step!(self, |c| lite::insert_jobs(c, jobs), |c| pg::insert_jobs(c, jobs))
    }

    /// Inserts a queued `job` only if its server is in one of `allowed`
    /// states and has no job in flight; `false` when it is not.
    pub async fn insert_job_if_allowed(&mut self, job: &Job, allowed: &[ServerStatus]) -> Result<bool, StoreError> {
        step!(self, |c| lite::insert_job_if_allowed(c, job, allowed), |c| pg::insert_job_if_allowed(c, job, allowed))
    }

    pub async fn set_status(
        &mut self,
        id: ServerId,
        status: ServerStatus,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        step!(self, |c| lite::set_status(c, id, status, at), |c| pg::set_status(c, id, status, at))
    }

    pub async fn record_activity(&mut self, entry: &crate::store::rows::Entry) -> Result<(), StoreError> {
        let at = super::now();
        step!(self, |c| lite::record_activity(c, entry, at), |c| super::pg::record_activity(&mut **c, entry, at))
    }

    /// Marks jobs as acknowledged by JetStream (those not marked yet).
    pub async fn mark_published(&mut self, ids: &[JobId], at: DateTime<Utc>) -> Result<(), StoreError> {
        step!(self, |c| lite::mark_published(c, ids, at), |c| pg::mark_published(c, ids, at))
    }

    /// The rows of `ids` that exist, locked.
    pub async fn jobs_by_ids(&mut self, ids: &[JobId]) -> Result<Vec<Job>, StoreError> {
        step!(self, |c| lite::jobs_by_ids(c, ids), |c| pg::jobs_by_ids(c, ids))
    }

    /// The rows of `ids` that exist, locked.
    pub async fn servers_by_ids(&mut self, ids: &[ServerId]) -> Result<Vec<Server>, StoreError> {
        step!(self, |c| lite::servers_by_ids(c, ids), |c| pg::servers_by_ids(c, ids))
    }

    /// Writes what events change in a job (status, attempts, outcome, times).
    pub async fn update_job_progress(&mut self, jobs: &[&Job]) -> Result<(), StoreError> {
        step!(self, |c| lite::update_job_progress(c, jobs), |c| pg::update_job_progress(c, jobs))
    }

    /// Writes what a job's outcome changes in a server (status, container,
    /// data, error, deletion times).
    pub async fn update_server_outcome(&mut self, servers: &[&Server]) -> Result<(), StoreError> {
        step!(self, |c| lite::update_server_outcome(c, servers), |c| pg::update_server_outcome(c, servers))
    }

    /// Removes purged servers' rows.
    pub async fn delete_servers(&mut self, ids: &[ServerId]) -> Result<(), StoreError> {
        step!(self, |c| lite::delete_by_server(c, super::DELETE_SERVER, ids), |c| pg::delete_by_server(
            c,
            super::DELETE_SERVER,
            ids
        ))
    }

    /// Removes the domain names of deleted servers (seed 000 §5.2).
    pub async fn clear_domains(&mut self, ids: &[ServerId]) -> Result<(), StoreError> {
        step!(self, |c| lite::delete_by_server(c, super::CLEAR_DOMAINS, ids), |c| pg::delete_by_server(
            c,
            super::CLEAR_DOMAINS,
            ids
        ))
    }

    /// Forgets the inner containers of servers that no longer run any.
    pub async fn clear_containers(&mut self, ids: &[ServerId]) -> Result<(), StoreError> {
        step!(self, |c| lite::delete_by_server(c, super::CLEAR_CONTAINERS, ids), |c| pg::delete_by_server(
            c,
            super::CLEAR_CONTAINERS,
            ids
        ))
    }
}

//! The api's database, and the only place that holds SQL.
//!
//! Two backends behind one [`Store`]: SQLite (the default, one file) and
//! PostgreSQL (`database.url = postgres://…`, for several api replicas).
//! - Reads go through sqlx on both: the statements are written once
//!   (`sql.rs`, compiled for each backend as [`lite`] and [`pg`]) and the
//!   rows are typed ([`rows`]).
//! - Writes are transactions of [`Tx`] steps ([`Store::write`]). On
//!   PostgreSQL a step is a sqlx statement in a pool transaction, with the
//!   rows it depends on locked. On SQLite the steps run on the group-commit
//!   writer ([`writer`]), one thread that commits the requests queued
//!   together in one transaction on a rusqlite connection: the measured
//!   reason for a second driver (each sqlx statement is a hand-off to a
//!   connection thread, which made the request path several times slower,
//!   see `writer.rs`).
//! - The less frequent writes (renames, reconciliation, accounts, inner
//!   containers) are sqlx transactions on both ([`transaction!`]).

mod lite_writer;
mod pg_writer;
pub mod rows;
mod tx;
pub mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Sqlite, SqlitePool, Transaction};
use vsfleet_contract::JobId;

pub use rows::{
    Account, Activity, Change, Checked, Cursor, Domain, Entry, InnerRow, Job, Known, NewJob, NewServer, Server, Token,
    User,
};
pub use tx::Tx;
use writer::Writer;

/// The statements both drivers of the write path share.
macro_rules! checked_sql {
    () => {
        "SELECT s.owner_id, s.status, s.host, s.cpus, s.memory_mb, s.ports,
                (SELECT j.id FROM jobs j WHERE j.server_id = s.id AND j.status IN ('queued', 'running')
                 ORDER BY j.created_at LIMIT 1),
                (SELECT MAX(j.created_at) FROM jobs j WHERE j.server_id = s.id)
         FROM servers s WHERE s.id = $1"
    };
}
macro_rules! insert_server_sql {
    () => {
        "INSERT INTO servers (owner_id, name, host, status, cpus, memory_mb, ports, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
    };
}
pub(crate) use {checked_sql, insert_server_sql};

const CHECKED: &str = checked_sql!();
const INSERT_SERVER: &str = insert_server_sql!();
const BUSY_JOB: &str = "SELECT j.id FROM jobs j WHERE j.server_id = $1 AND j.status IN ('queued', 'running') ORDER BY j.created_at LIMIT 1";
const LIVE_COUNT: &str = "SELECT COUNT(*) FROM servers WHERE owner_id = $1 AND status <> 'deleted'";
const HOST_COUNT: &str = "SELECT COUNT(*) FROM servers WHERE host = $1 AND status <> 'deleted'";
const INSERT_JOB: &str = "INSERT INTO jobs (id, server_id, action, host, status, origin, attempts, error, result,
     payload, requested_by, created_at, published_at, started_at, finished_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";
const SET_STATUS: &str = "UPDATE servers SET status = $1, updated_at = $2 WHERE id = $3";
const INSERT_ACTIVITY: &str =
    "INSERT INTO activity (at, user_id, actor, action, target, result, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)";
const MARK_PUBLISHED: &str = "UPDATE jobs SET published_at = $1 WHERE id = $2 AND published_at IS NULL";
const UPDATE_JOB_PROGRESS: &str = "UPDATE jobs SET status = $1, attempts = $2, error = $3, result = $4,
     published_at = $5, started_at = $6, finished_at = $7 WHERE id = $8";
const UPDATE_SERVER_OUTCOME: &str = "UPDATE servers SET status = $1, container_id = $2, data_exists = $3,
     last_error = $4, deleted_at = $5, purge_after = $6, updated_at = $7 WHERE id = $8";
const DELETE_SERVER: &str = "DELETE FROM servers WHERE id = $1";
const CLEAR_CONTAINERS: &str = "DELETE FROM server_containers WHERE server_id = $1";
const INSERT_PORT: &str =
    "INSERT INTO server_ports (host, host_port, server_id, container_port) VALUES ($1, $2, $3, $4)";
const TAKEN_PORTS: &str = "SELECT host_port FROM server_ports WHERE host = $1";
const CLEAR_DOMAINS: &str = "DELETE FROM domains WHERE server_id = $1";

/// The sqlx statements for SQLite.
pub mod lite {
    pub type DB = sqlx::Sqlite;
    /// SQLite's write transaction already holds the whole database.
    macro_rules! for_update {
        () => {
            ""
        };
    }
    /// One writer: every committed change is final, in id order.
    macro_rules! settled {
        () => {
            "1 = 1"
        };
    }
    /// After cursor ($1, $2): `tx` is always 0 here, and a range of the id
    /// (the rowid) needs no index of its own.
    macro_rules! after_cursor {
        () => {
            "id > $2 AND tx >= $1"
        };
    }
    include!("sql.rs");
}

/// The sqlx statements for PostgreSQL.
pub mod pg {
    pub type DB = sqlx::Postgres;
    macro_rules! for_update {
        () => {
            " FOR UPDATE"
        };
    }
    /// Changes of transactions older than every one still running: a change
    /// not seen yet cannot sort before them (migrations/postgres/0004).
    macro_rules! settled {
        () => {
            "tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        };
    }
    macro_rules! after_cursor {
        () => {
            "(tx > $1 OR (tx = $1 AND id > $2))"
        };
    }
    include!("sql.rs");
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A stored value the api cannot read: a status, action or id that is
    /// not one of the contract's, a broken timestamp or JSON.
    #[error("the database holds a value the api cannot read ({0})")]
    Corrupt(Arc<str>),
    #[error("database error")]
    Sqlx(#[source] Arc<sqlx::Error>),
    #[error("database error")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    #[error("waiting for the database write lock")]
    Lock(#[source] Arc<sqlx::Error>),
    #[error("a database write panicked")]
    Panicked,
    #[error("the database writer has stopped")]
    Stopped,
}

impl StoreError {
    /// A unique constraint refused the write (an email taken, a second job in flight).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlx(e) => matches!(&**e, sqlx::Error::Database(d) if d.is_unique_violation()),
            StoreError::Sqlite(e) => matches!(
                &**e,
                rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { index, source } => {
                StoreError::Corrupt(format!("column {index}: {source}").into())
            }
            sqlx::Error::Decode(source) => StoreError::Corrupt(source.to_string().into()),
            other => StoreError::Sqlx(Arc::new(other)),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(index, _, source) => {
                StoreError::Corrupt(format!("column {index}: {source}").into())
            }
            other => StoreError::Sqlite(Arc::new(other)),
        }
    }
}

/// The time a row records. Microseconds, the finest both backends keep:
/// a row read back equals the one written.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The database, cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(Arc<SqliteStore>),
    Postgres(PgPool),
}

#[derive(Debug)]
pub struct SqliteStore {
    /// Reads: any number at once; in WAL mode they never wait for the writer.
    pub read: SqlitePool,
    /// One connection: the write lock. The group-commit writer holds it
    /// while it commits; the other writers queue for it in the process
    /// instead of meeting in SQLite's busy handler, which sleeps.
    pub write: SqlitePool,
    writer: Writer,
}

impl SqliteStore {
    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up
    /// front: a deferred transaction that reads first cannot upgrade once
    /// another process committed.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.write.begin_with("BEGIN IMMEDIATE").await
    }
}

impl Store {
    /// Opens the database `url` names: `postgres://` or `postgresql://`
    /// for PostgreSQL, `sqlite:` for SQLite.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).context("database.url is not a valid PostgreSQL URL")?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .with_context(|| format!("connecting to PostgreSQL at {}", redact_url(url)))?;
            return Ok(Store::Postgres(pool));
        }
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("database.url {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // No ping before each acquire: a local file does not drop
        // connections, and on the single writer every round trip is queueing.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening database {url}"))?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .with_context(|| format!("opening database {url}"))?;
        let writer = Writer::spawn(url, write.clone())?;
        Ok(Store::Sqlite(Arc::new(SqliteStore { read, write, writer })))
    }

    /// Applies the backend's migrations (`migrations/sqlite` or `migrations/postgres`).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s) => sqlx::migrate!("../migrations/sqlite").run(&s.write).await,
            Store::Postgres(p) => sqlx::migrate!("../migrations/postgres").run(p).await,
        }
        .context("applying migrations")
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => {
                s.read.close().await;
                s.write.close().await;
            }
            Store::Postgres(p) => p.close().await,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Runs `steps` in one transaction and returns their result once it is
    /// committed; an error rolls back everything `steps` wrote. On SQLite
    /// the steps share the writer's transaction with the requests queued
    /// beside them (each in a savepoint of its own): they must not wait
    /// for anything but their own steps.
    pub async fn write<T, F>(&self, steps: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut Tx<'_>) -> BoxFuture<'t, Result<T, StoreError>> + Send + 'static,
    {
        match self {
            // The SQLite steps never wait (rusqlite calls, no I/O of
            // their own to await), so their future completes at its first poll.
            Store::Sqlite(s) => {
                s.writer
                    .write(move |conn| futures::executor::block_on(steps(&mut Tx::Sqlite(tx::WriterConn::new(conn)))))
                    .await
            }
            Store::Postgres(p) => {
                let mut tx = p.begin().await?;
                let out = steps(&mut Tx::Postgres(&mut tx)).await?;
                tx.commit().await?;
                Ok(out)
            }
        }
    }
}

/// A URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url.split_once('@') {
        Some((credentials, rest)) => match credentials.rsplit_once(':') {
            Some((user, _)) if !user.ends_with('/') => format!("{user}:***@{rest}"),
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Runs `$body` in a sqlx write transaction of `$store`, with `$q` the
/// backend's statements ([`lite`] or [`pg`]) and `$conn` the connection;
/// commits when `$body` is `Ok`. The body is compiled once per backend.
macro_rules! transaction {
    ($store:expr, |$q:ident, $conn:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(s) => {
                $crate::store::transaction!(@in s.begin_write(), lite, |$q, $conn| $body)
            }
            $crate::store::Store::Postgres(p) => $crate::store::transaction!(@in p.begin(), pg, |$q, $conn| $body),
        }
    };
    (@in $begin:expr, $backend:ident, |$q:ident, $conn:ident| $body:expr) => {{
        let mut tx = $begin.await.map_err($crate::store::StoreError::from)?;
        #[allow(unused_imports)]
        use $crate::store::$backend as $q;
        let $conn: &mut $q::Conn = &mut *tx;
        let out = $body;
        if out.is_ok() {
            tx.commit().await.map_err($crate::store::StoreError::from)?;
        }
        out
    }};
}
pub(crate) use transaction;

/// One read, written once for both backends.
macro_rules! reads {
    ($( $(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$meta])*
                pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret, StoreError> {
                    Ok(match self {
                        Store::Sqlite(s) => lite::$name(&s.read, $($arg),*).await?,
                        Store::Postgres(p) => pg::$name(p, $($arg),*).await?,
                    })
                }
            )*
        }
    };
}

reads! {
    /// For the readiness probe.
    fn ping() -> ();
    fn server(id: i64) -> Option<Server>;
    /// Every server when `all`, else `owner`'s; by id, from after `after`.
    fn servers(all: bool, owner: i64, include_deleted: bool, after: i64, limit: i64) -> Vec<Server>;
    /// Servers per host among those that occupy one (everything but deleted).
    fn servers_per_host() -> Vec<(String, i64)>;
    /// The ids of every server in `status`, lowest first.
    fn servers_in(status: vsfleet_contract::ServerStatus) -> Vec<i64>;
    fn purge_due(now: DateTime<Utc>, limit: i64) -> Vec<i64>;
    fn job(id: JobId) -> Option<Job>;
    fn job_in_flight(server_id: i64) -> Option<Job>;
    fn jobs_in_flight() -> Vec<Job>;
    fn jobs_of(server_id: i64, after: Option<JobId>, limit: i64) -> Vec<Job>;
    fn unpublished(before: DateTime<Utc>, limit: i64) -> Vec<Job>;
    fn inner_containers(server_id: i64) -> Vec<InnerRow>;
    fn domains_of(server_id: i64) -> Vec<Domain>;
    /// By name, from after `after`.
    fn domains_page(server_id: i64, after: &str, limit: i64) -> Vec<Domain>;
    /// The host ports allocated on `host`, to any server.
    fn ports_on(host: &str) -> Vec<i32>;
    /// The domains of the servers `from..=to`: every server's when `all`, else `owner`'s.
    fn domains_visible(all: bool, owner: i64, from: i64, to: i64) -> Vec<Domain>;
    fn drop_stale_containers(before: DateTime<Utc>) -> u64;
    /// The change feed after `after`, oldest first; every server's when
    /// `all`, else `owner`'s.
    fn changes_after(all: bool, owner: i64, after: Cursor, limit: i64) -> Vec<Change>;
    /// Where the feed ends now.
    fn changes_head() -> Cursor;
    fn drop_changes(before: DateTime<Utc>) -> u64;
    fn user_by_token_hash(hash: &str) -> Option<User>;
    fn account(id: i64) -> Option<Account>;
    fn account_by_email(email: &str) -> Option<Account>;
    fn accounts(after: i64, limit: i64) -> Vec<Account>;
    fn token(id: i64) -> Option<Token>;
    fn tokens_of(user_id: i64, after: i64, limit: i64) -> Vec<Token>;
    fn activity(user_id: Option<i64>, before: Option<i64>, limit: i64) -> Vec<Activity>;
}

/// A migrated SQLite database in a directory of its own, with user 1, for unit tests.
#[cfg(test)]
pub(crate) async fn scratch() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&format!("sqlite://{}", dir.path().join("test.db").display())).await.expect("opens");
    store.migrate().await.expect("migrates");
    let Store::Sqlite(s) = &store else { unreachable!() };
    sqlx::query(
        "INSERT INTO users (id, email, is_admin, created_at) VALUES (1, 'u@example.test', 1, '2025-01-01T00:00:00Z')",
    )
    .execute(&s.write)
    .await
    .expect("a user");
    (dir, store)
}

/// A server row in `status` on host `h1`, for unit tests.
#[cfg(test)]
pub(crate) async fn scratch_server(store: &Store, status: &str) -> i64 {
    let Store::Sqlite(s) = store else { unreachable!() };
    sqlx::query_scalar(
        "INSERT INTO servers (owner_id, name, host, status, created_at, updated_at)
         VALUES (1, 'test', 'h1', $1, '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z') RETURNING id",
    )
    .bind(status)
    .fetch_one(&s.write)
    .await
    .expect("a server")
}

#[cfg(test)]
mod feed_tests {
    use super::*;

    /// The change feed as the triggers write it (migrations/sqlite/0005).
    #[tokio::test]
    async fn the_feed_records_every_status_change_and_keeps_its_ids_growing() {
        let (_dir, store) = scratch().await;
        let Store::Sqlite(s) = &store else { unreachable!() };
        let id = scratch_server(&store, "creating").await;
        for status in ["running", "running", "stopped"] {
            sqlx::query("UPDATE servers SET status = $1 WHERE id = $2")
                .bind(status)
                .bind(id)
                .execute(&s.write)
                .await
                .unwrap();
        }
        sqlx::query("DELETE FROM servers WHERE id = $1").bind(id).execute(&s.write).await.unwrap();
        let feed = store.changes_after(true, 0, Cursor::default(), 100).await.unwrap();
        let statuses: Vec<&str> = feed.iter().map(|c| c.status.as_str()).collect();
        assert_eq!(statuses, ["creating", "running", "stopped", "purged"], "an unchanged status is no change");
        assert_eq!(store.changes_after(false, 2, Cursor::default(), 100).await.unwrap().len(), 0, "user 2 owns none");
        let head = store.changes_head().await.unwrap();
        assert_eq!(head, feed.last().unwrap().cursor());

        // Cleanup past the retention keeps the newest row, so the next id is
        // still above every id a client may hold.
        let dropped = store.drop_changes(Utc::now() + chrono::Duration::hours(1)).await.unwrap();
        assert_eq!(dropped, 3);
        let id = scratch_server(&store, "creating").await;
        let next = store.changes_after(true, 0, head, 100).await.unwrap();
        assert_eq!((next.len(), next[0].server_id), (1, id));
        assert!(next[0].id > head.id, "{} after {}", next[0].id, head.id);
    }
}

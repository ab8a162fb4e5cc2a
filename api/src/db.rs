//! Opening the database. SQLite allows one writer at a time; when several
//! connections race for the write lock, the losers sleep in SQLite's busy
//! handler with growing back-off (1, 2, 5, 10 … 100 ms), which caps a
//! contended api at a few hundred writes per second. So writes go through
//! one dedicated connection ([`Db::write`]): they queue in the process, in
//! order, and never sleep. Reads use a pool of their own, and in WAL mode
//! never block the writer nor wait for it. A busy timeout still covers
//! another process writing (`vsfleet-api user create`). The hot writes
//! (requests, job events, published marks) go through [`crate::writer`],
//! which holds [`Db::write`] as the lock while it commits on a connection of
//! its own.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

#[derive(Clone, Debug)]
pub struct Db {
    /// Reads: any number at once.
    pub read: SqlitePool,
    /// Writes: one connection, so writers queue instead of contending.
    pub write: SqlitePool,
}

pub async fn open(url: &str) -> anyhow::Result<Db> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("database.url {url:?}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    // No ping before each acquire: a local file does not drop connections,
    // and on the single writer every round trip is queueing time.
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(options.clone())
        .await
        .with_context(|| format!("opening database {url}"))?;
    let read = SqlitePoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect_with(options.read_only(false))
        .await
        .with_context(|| format!("opening database {url}"))?;
    Ok(Db { read, write })
}

impl Db {
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations").run(&db.write).await.context("applying migrations")
}

/// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front: a
/// deferred transaction that reads first cannot upgrade once another
/// process committed, and fails with "database is locked" whatever the
/// timeout.
pub async fn begin_write(db: &Db) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    db.write.begin_with("BEGIN IMMEDIATE").await
}

/// A migrated database in a directory of its own, for unit tests.
#[cfg(test)]
pub(crate) async fn scratch() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = open(&format!("sqlite://{}", dir.path().join("test.db").display())).await.expect("opens");
    migrate(&db).await.expect("migrates");
    sqlx::query(
        "INSERT INTO users (id, email, is_admin, created_at) VALUES (1, 'u@example.test', 1, '2025-01-01T00:00:00Z')",
    )
    .execute(&db.write)
    .await
    .expect("a user");
    (dir, db)
}

/// A server row in `status` on host `h1`, for unit tests.
#[cfg(test)]
pub(crate) async fn scratch_server(db: &Db, status: &str) -> i64 {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO servers (owner_id, name, host, status, created_at, updated_at)
         VALUES (1, 'test', 'h1', ?, '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z') RETURNING id",
    )
    .bind(status)
    .fetch_one(&db.write)
    .await
    .expect("a server");
    id
}

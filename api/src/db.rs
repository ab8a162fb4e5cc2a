//! Opening the database. SQLite runs in WAL mode (readers never block the
//! writer) with a busy timeout, and every read-then-write transaction starts
//! with `BEGIN IMMEDIATE` ([`begin_write`]) so it takes the write lock up
//! front: a deferred transaction that reads first cannot upgrade once another
//! writer committed, and fails with "database is locked" regardless of the
//! timeout.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

pub type Db = SqlitePool;

pub async fn open(url: &str) -> anyhow::Result<Db> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("database.url {url:?}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .with_context(|| format!("opening database {url}"))
}

pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations").run(db).await.context("applying migrations")
}

pub async fn begin_write(db: &Db) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    db.begin_with("BEGIN IMMEDIATE").await
}

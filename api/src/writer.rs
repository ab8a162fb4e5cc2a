//! The group-commit writer: the api's request writes (accepting a job,
//! creating a server, marking jobs published) queue here, and one OS thread
//! runs whatever has queued in ONE transaction on a connection of its own,
//! then answers each caller.
//!
//! Why: SQLite has one writer, and through sqlx each statement, `BEGIN` and
//! `COMMIT` included, is a hand-off to the connection's own thread and back
//! (measured at 0.6 to 1 ms each under load, most of it waiting for a core).
//! Per-request transactions paid several of those and a commit for every
//! request; even a batch paid four. This thread calls SQLite directly, so a
//! batch costs one wake-up and one commit, whatever its size.
//!
//! Each request keeps its own outcome: it runs in its own SAVEPOINT, in
//! arrival order, so it sees the rows of the requests before it in the batch
//! and a failing one is rolled back alone.
//!
//! The thread still holds the sqlx write pool's one connection while it
//! runs batches: that pool is the api's write lock, so the other writers
//! (events, reconciliation, …) queue in the process instead of meeting in
//! SQLite's busy handler, which sleeps.

use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Connection;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Sqlite, SqlitePool};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

/// Requests taken into one transaction at most.
const MAX_BATCH: usize = 512;

/// How long a busy writer keeps the write lock before the other writers get a turn.
const HOLD: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("writing to the database")]
    Database(#[source] Arc<rusqlite::Error>),
    #[error("waiting for the database write lock")]
    Lock(#[source] Arc<sqlx::Error>),
    #[error("a database write panicked")]
    Panicked,
    #[error("the database writer has stopped")]
    Stopped,
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        WriteError::Database(Arc::new(e))
    }
}

/// The sending side; cheap to clone. The thread ends once every clone is
/// dropped and the queue is empty.
#[derive(Clone, Debug)]
pub struct Writer {
    tasks: mpsc::UnboundedSender<Box<dyn Task>>,
}

impl Writer {
    /// Opens the writer's connection to the database at `url` and starts its
    /// thread. `lock` is the one-connection sqlx write pool.
    pub fn spawn(url: &str, lock: SqlitePool) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url).with_context(|| format!("database.url {url:?}"))?;
        let path = options.get_filename();
        let conn = Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
        // As the sqlx connections (`db::open`); WAL is already on, it is a
        // property of the file.
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "normal")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(32);
        let (tasks, queue) = mpsc::unbounded_channel();
        let runtime = Handle::current();
        std::thread::Builder::new()
            .name("vsfleet-writer".into())
            .spawn(move || run(conn, queue, lock, runtime))
            .context("starting the writer thread")?;
        Ok(Self { tasks })
    }

    /// Runs `write` in the next batch's transaction and returns its result
    /// once that transaction is committed. `write` must not block: the
    /// requests batched with it wait for it.
    pub async fn write<T, F>(&self, write: F) -> Result<T, WriteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.tasks.send(Box::new(Call { write, reply })).map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

/// One queued write, type-erased so writes of every result type share a batch.
trait Task: Send {
    /// Runs the write in its own savepoint; returns what answers the caller
    /// once the batch's commit succeeded or failed.
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Settle>;
    fn fail(self: Box<Self>, error: WriteError);
}

trait Settle: Send {
    fn settle(self: Box<Self>, committed: Result<(), WriteError>);
}

struct Call<F, T> {
    write: F,
    reply: oneshot::Sender<Result<T, WriteError>>,
}

struct Done<T> {
    outcome: Result<T, WriteError>,
    reply: oneshot::Sender<Result<T, WriteError>>,
}

impl<F, T> Task for Call<F, T>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Settle> {
        let Call { write, reply } = *self;
        Box::new(Done { outcome: in_savepoint(conn, write), reply })
    }

    fn fail(self: Box<Self>, error: WriteError) {
        // A caller that gave up (its request was dropped) needs no answer.
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send> Settle for Done<T> {
    fn settle(self: Box<Self>, committed: Result<(), WriteError>) {
        let outcome = match committed {
            Ok(()) => self.outcome,
            Err(error) => Err(self.outcome.err().unwrap_or(error)),
        };
        let _ = self.reply.send(outcome);
    }
}

fn in_savepoint<T>(conn: &Connection, write: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, WriteError> {
    if let Err(error) = conn.prepare_cached("SAVEPOINT request").and_then(|mut s| s.execute([])) {
        return Err(error.into());
    }
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| write(conn))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(WriteError::Panicked),
    };
    let end = if outcome.is_ok() { "RELEASE request" } else { "ROLLBACK TO request" };
    conn.prepare_cached(end).and_then(|mut s| s.execute([]))?;
    if outcome.is_err() {
        conn.prepare_cached("RELEASE request").and_then(|mut s| s.execute([]))?;
    }
    outcome
}

fn run(conn: Connection, mut queue: mpsc::UnboundedReceiver<Box<dyn Task>>, lock: SqlitePool, runtime: Handle) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut held: Option<(PoolConnection<Sqlite>, Instant)> = None;
    // Returning a pool connection spawns onto the runtime.
    let release = |held: Option<(PoolConnection<Sqlite>, Instant)>| runtime.block_on(async move { drop(held) });
    loop {
        // No waiting to fill a batch: what queued while the last one ran is
        // the next one, so a lone request is not delayed. When there is
        // nothing, the other writers get the lock.
        let first = match queue.try_recv() {
            Ok(task) => task,
            Err(_) => {
                release(held.take());
                match queue.blocking_recv() {
                    Some(task) => task,
                    None => break,
                }
            }
        };
        batch.push(first);
        while batch.len() < MAX_BATCH
            && let Ok(task) = queue.try_recv()
        {
            batch.push(task);
        }
        // Taking the lock costs a round trip to sqlx's connection thread (it
        // pings a returned connection), so a busy writer keeps it from one
        // batch to the next, and lets the others in every `HOLD`.
        if held.as_ref().is_some_and(|(_, since)| since.elapsed() >= HOLD) {
            release(held.take());
        }
        if held.is_none() {
            match runtime.block_on(lock.acquire()) {
                Ok(conn) => held = Some((conn, Instant::now())),
                Err(error) => {
                    let error = WriteError::Lock(Arc::new(error));
                    batch.drain(..).for_each(|task| task.fail(error.clone()));
                    continue;
                }
            }
        }
        commit(&conn, &mut batch);
    }
    release(held);
}

fn commit(conn: &Connection, batch: &mut Vec<Box<dyn Task>>) {
    if let Err(error) = conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])) {
        let error = WriteError::from(error);
        batch.drain(..).for_each(|task| task.fail(error.clone()));
        return;
    }
    let done: Vec<Box<dyn Settle>> = batch.drain(..).map(|task| task.run(conn)).collect();
    let committed = conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map(drop).map_err(WriteError::from);
    if let Err(error) = &committed {
        tracing::error!(error = format!("{error:#}"), requests = done.len(), "committing a batch of writes failed");
        let _ = conn.execute_batch("ROLLBACK");
    }
    for settle in done {
        settle.settle(committed.clone());
    }
}

/// A timestamp as sqlx writes it, so rows written here sort and compare
/// with the rest.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A timestamp as sqlx reads it: RFC 3339, or SQLite's own `datetime()`
/// form taken as UTC.
pub fn parse_timestamp(text: String) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&text)
        .map(|at| at.with_timezone(&Utc))
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(&text, "%F %T%.f").map(|at| at.and_utc()))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))
}

/// The rows `sql` (one `?1` parameter) finds for each of `ids`, skipping ids
/// it finds none for. On the writer's connection; the statement is cached.
pub fn rows_by_id<K, T>(
    conn: &Connection,
    sql: &str,
    ids: &[K],
    from_row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>>
where
    K: rusqlite::ToSql,
{
    use rusqlite::OptionalExtension as _;
    let mut get = conn.prepare_cached(sql)?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        found.extend(get.query_row([id], &from_row).optional()?);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use futures::future::join_all;
    use vsfleet_contract::{Action, JobId, ServerStatus};

    use super::*;
    use crate::db::{Db, scratch, scratch_server};
    use crate::jobs::{self, Job, QueuedJob};

    fn writer(dir: &tempfile::TempDir, db: &Db) -> Writer {
        Writer::spawn(&format!("sqlite://{}", dir.path().join("test.db").display()), db.write.clone()).unwrap()
    }

    fn queued(server_id: i64, action: Action) -> QueuedJob {
        QueuedJob {
            id: JobId::new(),
            server_id,
            action,
            host: "h1".into(),
            origin: "api",
            payload: "{}".into(),
            requested_by: Some(1),
            created_at: Utc::now(),
        }
    }

    /// What `lifecycle::request` sends.
    async fn send(writer: &Writer, job: QueuedJob) -> Result<Option<Job>, WriteError> {
        let allowed: Vec<ServerStatus> =
            ServerStatus::ALL.into_iter().filter(|s| job.action.allowed_from(*s)).collect();
        let then = job.action.in_flight_status();
        writer
            .write(move |conn| {
                let inserted = jobs::insert_if_allowed(conn, &job, &allowed)?;
                if let (Some(job), Some(status)) = (&inserted, then) {
                    crate::servers::set_status_now(conn, job.server_id, status)?;
                }
                Ok(inserted)
            })
            .await
    }

    /// Sends `jobs` in order while the write lock is held, so they queue
    /// and are committed together rather than one by one.
    async fn send_together(db: &Db, writer: &Writer, jobs: Vec<QueuedJob>) -> Vec<Result<Option<Job>, WriteError>> {
        let held = db.write.acquire().await.unwrap();
        let all = tokio::spawn({
            let writer = writer.clone();
            async move { join_all(jobs.into_iter().map(|job| send(&writer, job))).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        all.await.unwrap()
    }

    async fn status(db: &Db, server_id: i64) -> String {
        let (status,): (String,) = sqlx::query_as("SELECT status FROM servers WHERE id = ?")
            .bind(server_id)
            .fetch_one(&db.read)
            .await
            .unwrap();
        status
    }

    #[tokio::test]
    async fn racing_requests_accept_exactly_the_first_per_server() {
        let (dir, db) = scratch().await;
        let (a, b) = (scratch_server(&db, "stopped").await, scratch_server(&db, "stopped").await);
        let writer = writer(&dir, &db);
        let results =
            send_together(&db, &writer, (0..10).map(|n| queued([a, b][n % 2], Action::Start)).collect()).await;
        let accepted: Vec<bool> = results.into_iter().map(|r| r.unwrap().is_some()).collect();
        assert_eq!(accepted, [true, true, false, false, false, false, false, false, false, false]);
        let (in_flight,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetch_one(&db.read).await.unwrap();
        assert_eq!(in_flight, 2);
    }

    #[tokio::test]
    async fn a_request_sees_the_state_left_by_the_requests_before_it() {
        let (dir, db) = scratch().await;
        let (stopped, running) = (scratch_server(&db, "stopped").await, scratch_server(&db, "running").await);
        let writer = writer(&dir, &db);
        let jobs = vec![
            queued(stopped, Action::Stop),  // not from stopped: refused
            queued(stopped, Action::Start), // so this one is accepted
            queued(running, Action::Delete),
            queued(running, Action::Stop), // the delete is in flight
        ];
        let accepted: Vec<bool> =
            send_together(&db, &writer, jobs).await.into_iter().map(|r| r.unwrap().is_some()).collect();
        assert_eq!(accepted, [false, true, true, false]);
        assert_eq!(status(&db, stopped).await, "stopped");
        assert_eq!(status(&db, running).await, "deleting");
    }

    #[tokio::test]
    async fn a_failing_request_fails_alone() {
        let (dir, db) = scratch().await;
        let ids: Vec<i64> = join_all((0..3).map(|_| scratch_server(&db, "stopped"))).await;
        let writer = writer(&dir, &db);
        let taken = send(&writer, queued(ids[0], Action::Start)).await.unwrap().unwrap().job_id();
        let mut duplicate = queued(ids[1], Action::Start);
        duplicate.id = taken;
        let results =
            send_together(&db, &writer, vec![duplicate, queued(ids[2], Action::Start), queued(ids[1], Action::Start)])
                .await;
        assert!(matches!(results[0], Err(WriteError::Database(_))), "{:?}", results[0]);
        assert!(matches!(results[1], Ok(Some(_))), "{:?}", results[1]);
        assert!(matches!(results[2], Ok(Some(_))), "the failed one left nothing behind: {:?}", results[2]);
        let panicked = writer.write(|_| -> rusqlite::Result<()> { panic!("a bug in a write") }).await;
        assert!(matches!(panicked, Err(WriteError::Panicked)));
        assert!(send(&writer, queued(ids[0], Action::Start)).await.is_ok(), "the writer outlives a panic");
    }

    #[tokio::test]
    async fn rows_written_here_read_back_as_written() {
        let (dir, db) = scratch().await;
        let server = scratch_server(&db, "stopped").await;
        let writer = writer(&dir, &db);
        let job = send(&writer, queued(server, Action::Start)).await.unwrap().unwrap();
        assert_eq!(jobs::get(&db.read, &job.id).await.unwrap().unwrap().created_at, job.created_at);
        let ids = vec![job.job_id()];
        writer.write(move |conn| jobs::mark_published(conn, &ids)).await.unwrap();
        let read = jobs::get(&db.read, &job.id).await.unwrap().unwrap();
        assert!(read.published_at.is_some_and(|at| at >= job.created_at));
        let (older,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE created_at < ?")
            .bind(job.created_at + chrono::Duration::milliseconds(1))
            .fetch_one(&db.read)
            .await
            .unwrap();
        assert_eq!(older, 1, "timestamps compare as sqlx writes them");
    }
}

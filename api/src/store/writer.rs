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
use rusqlite::Connection;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Sqlite, SqlitePool};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Requests taken into one transaction at most.
const MAX_BATCH: usize = 512;

/// How long a busy writer keeps the write lock before the other writers get a turn.
const HOLD: Duration = Duration::from_millis(5);

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
    pub async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.tasks.send(Box::new(Call { write, reply })).map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

/// One queued write, type-erased so writes of every result type share a batch.
trait Task: Send {
    /// Runs the write in its own savepoint; returns what answers the caller
    /// once the batch's commit succeeded or failed.
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Settle>;
    fn fail(self: Box<Self>, error: StoreError);
}

trait Settle: Send {
    fn settle(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Call<F, T> {
    write: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

struct Done<T> {
    outcome: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Task for Call<F, T>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Settle> {
        let Call { write, reply } = *self;
        Box::new(Done { outcome: in_savepoint(conn, write), reply })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        // A caller that gave up (its request was dropped) needs no answer.
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send> Settle for Done<T> {
    fn settle(self: Box<Self>, committed: Result<(), StoreError>) {
        let outcome = match committed {
            Ok(()) => self.outcome,
            Err(error) => Err(self.outcome.err().unwrap_or(error)),
        };
        let _ = self.reply.send(outcome);
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let Err(error) = conn.prepare_cached("SAVEPOINT request").and_then(|mut s| s.execute([])) {
        return Err(error.into());
    }
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| write(conn))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(StoreError::Panicked),
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
                    let error = StoreError::Lock(Arc::new(error));
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
        let error = StoreError::from(error);
        batch.drain(..).for_each(|task| task.fail(error.clone()));
        return;
    }
    let done: Vec<Box<dyn Settle>> = batch.drain(..).map(|task| task.run(conn)).collect();
    let committed = conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map(drop).map_err(StoreError::from);
    if let Err(error) = &committed {
        tracing::error!(error = format!("{error:#}"), requests = done.len(), "committing a batch of writes failed");
        let _ = conn.execute_batch("ROLLBACK");
    }
    for settle in done {
        settle.settle(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use futures::future::join_all;
    use vsfleet_contract::{Action, JobId, ServerId, ServerStatus};

    use crate::store::{Job, NewJob, Store, StoreError, scratch, scratch_server};

    fn queued(server_id: i64, action: Action) -> Job {
        Job::queued(NewJob {
            id: JobId::new(),
            server_id: ServerId::new(server_id).unwrap(),
            action,
            host: "h1".into(),
            origin: "api",
            payload: "{}".into(),
            requested_by: Some(1),
            created_at: crate::store::now(),
        })
    }

    /// What a request writes: the job if its server's state allows it, and the state change.
    async fn send(db: &Store, job: Job) -> Result<bool, StoreError> {
        db.write(move |tx| {
            Box::pin(async move {
                let allowed = job.action.allowed_statuses();
                let inserted = tx.insert_job_if_allowed(&job, &allowed).await?;
                if let (true, Some(status)) = (inserted, job.action.in_flight_status()) {
                    tx.set_status(job.server_id, status, job.created_at).await?;
                }
                Ok(inserted)
            })
        })
        .await
    }

    /// Sends `jobs` while the write lock is held, so they queue and are
    /// committed together rather than one by one.
    async fn send_together(db: &Store, jobs: Vec<Job>) -> Vec<Result<bool, StoreError>> {
        let Store::Sqlite(s) = db else { unreachable!() };
        let held = s.write.acquire().await.unwrap();
        let all = tokio::spawn({
            let db = db.clone();
            async move { join_all(jobs.into_iter().map(|job| send(&db, job))).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(held);
        all.await.unwrap()
    }

    #[tokio::test]
    async fn racing_requests_in_one_batch_accept_exactly_the_first_per_server() {
        let (_dir, db) = scratch().await;
        let (a, b) = (scratch_server(&db, "stopped").await, scratch_server(&db, "stopped").await);
        let results = send_together(&db, (0..10).map(|n| queued([a, b][n % 2], Action::Start)).collect()).await;
        let accepted: Vec<bool> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(accepted, [true, true, false, false, false, false, false, false, false, false]);
        assert_eq!(db.jobs_in_flight().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_request_sees_the_state_left_by_the_requests_before_it_in_its_batch() {
        let (_dir, db) = scratch().await;
        let (stopped, running) = (scratch_server(&db, "stopped").await, scratch_server(&db, "running").await);
        let jobs = vec![
            queued(stopped, Action::Stop),  // not from stopped: refused
            queued(stopped, Action::Start), // so this one is accepted
            queued(running, Action::Delete),
            queued(running, Action::Stop), // the delete is in flight
        ];
        let accepted: Vec<bool> = send_together(&db, jobs).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(accepted, [false, true, true, false]);
        assert_eq!(db.server(running).await.unwrap().unwrap().status, ServerStatus::Deleting);
    }

    #[tokio::test]
    async fn a_failing_or_panicking_write_fails_alone() {
        let (_dir, db) = scratch().await;
        let ids: Vec<i64> = join_all((0..3).map(|_| scratch_server(&db, "stopped"))).await;
        let first = queued(ids[0], Action::Start);
        let taken = first.id;
        assert!(send(&db, first).await.unwrap());
        let mut duplicate = queued(ids[1], Action::Start);
        duplicate.id = taken;
        let results =
            send_together(&db, vec![duplicate, queued(ids[2], Action::Start), queued(ids[1], Action::Start)]).await;
        assert!(results[0].as_ref().is_err_and(StoreError::is_unique_violation), "{:?}", results[0]);
        assert!(matches!(results[1], Ok(true)), "{:?}", results[1]);
        assert!(matches!(results[2], Ok(true)), "the failed one left nothing behind: {:?}", results[2]);
        let panicked: Result<(), StoreError> =
            db.write(|_| -> futures::future::BoxFuture<'_, _> { panic!("a bug in a write") }).await;
        assert!(matches!(panicked, Err(StoreError::Panicked)));
        assert!(send(&db, queued(ids[0], Action::Stop)).await.is_ok(), "the writer outlives a panic");
    }

    #[tokio::test]
    async fn rows_written_here_read_back_through_sqlx_as_written() {
        let (_dir, db) = scratch().await;
        let server = scratch_server(&db, "stopped").await;
        let job = queued(server, Action::Start);
        let (id, created_at) = (job.id, job.created_at);
        assert!(send(&db, job).await.unwrap());
        assert_eq!(db.job(id).await.unwrap().unwrap().created_at, created_at);
        let at = crate::store::now();
        db.write(move |tx| Box::pin(async move { tx.mark_published(&[id], at).await })).await.unwrap();
        assert_eq!(db.job(id).await.unwrap().unwrap().published_at, Some(at));
        let before = created_at + chrono::Duration::milliseconds(1);
        assert_eq!(db.unpublished(before, 10).await.unwrap().len(), 0, "marked published");
    }
}

//! The group-commit writer: the api's request writes (accepting a job,
//! creating a server, marking jobs published) queue here, and one task
//! commits whatever has queued in ONE transaction, with one multi-row
//! statement per kind of write, then answers each caller.
//!
//! Why: SQLite has one writer, and each sqlx statement is a hand-off to the
//! connection's own thread. Per-request transactions paid that hand-off
//! (three or four times) and a commit for every request, so requests spent
//! most of their time queueing for the connection. A batch pays them once.
//!
//! Each request keeps its own outcome: the conditions of a conditional
//! insert are evaluated per row, in arrival order, and a batch that fails
//! as a whole is rolled back and its requests are retried one by one, so
//! one bad request fails alone.

use std::collections::{HashMap, HashSet};

use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use vsfleet_contract::{Action, JobId, JobStatus, ServerId, ServerSpec, ServerStatus};

use crate::jobs::{self, Job, NewJob, QueuedJob};
use crate::servers::{self, NewServer, Server};

/// Commands taken into one transaction at most.
const MAX_BATCH: usize = 256;

/// Ids per `UPDATE … WHERE id IN (…)` when marking jobs published.
const MARKS_PER_STATEMENT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing to the database")]
    Database(#[from] sqlx::Error),
    #[error("the database writer has stopped")]
    Stopped,
}

/// A new server with its create job.
#[derive(Debug, Clone)]
pub struct NewServerJob {
    pub owner_id: i64,
    pub name: String,
    pub host: String,
    pub spec: ServerSpec,
    pub job_id: JobId,
    pub origin: &'static str,
    pub requested_by: Option<i64>,
}

/// The sending side; cheap to clone. The writer task stops once every
/// clone is dropped and the queue is empty.
#[derive(Clone, Debug)]
pub struct Writer {
    commands: mpsc::UnboundedSender<Command>,
}

enum Command {
    Insert { job: QueuedJob, allowed: Vec<ServerStatus>, then: Option<ServerStatus>, reply: Reply<Option<Job>> },
    Create { new: NewServerJob, reply: Reply<(Server, Job)> },
    Mark { ids: Vec<JobId>, reply: Reply<()> },
}

type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

/// What a command produced, delivered only after the commit.
enum Outcome {
    Inserted(Option<Job>),
    Created(Server, Job),
    Marked,
}

impl Writer {
    /// Starts the writer task on `pool` (the one-connection write pool, so
    /// other writers still queue behind a batch rather than contend).
    pub fn spawn(pool: SqlitePool) -> Self {
        let (commands, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, queue));
        Self { commands }
    }

    /// Inserts `job` only if its server is in one of `allowed` states and has
    /// no job in flight, and then moves the server to `then` if given.
    /// `None` when the condition did not hold.
    pub async fn insert_if_allowed(
        &self,
        job: QueuedJob,
        allowed: Vec<ServerStatus>,
        then: Option<ServerStatus>,
    ) -> Result<Option<Job>, WriteError> {
        self.call(|reply| Command::Insert { job, allowed, then, reply }).await
    }

    /// Inserts a server (creating) and its create job.
    pub async fn create_server(&self, new: NewServerJob) -> Result<(Server, Job), WriteError> {
        self.call(|reply| Command::Create { new, reply }).await
    }

    /// Records that JetStream acknowledged these jobs.
    pub async fn mark_published(&self, ids: Vec<JobId>) -> Result<(), WriteError> {
        self.call(|reply| Command::Mark { ids, reply }).await
    }

    async fn call<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

async fn run(pool: SqlitePool, mut queue: mpsc::UnboundedReceiver<Command>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // No waiting to fill a batch: what queued while the last one committed
    // is the next one, so a lone request is not delayed.
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&pool, std::mem::take(&mut batch)).await;
    }
}

/// Commits `commands` together and answers them; if that fails, commits
/// each alone so only the request at fault gets the error.
async fn commit(pool: &SqlitePool, commands: Vec<Command>) {
    match apply(pool, &commands).await {
        Ok(outcomes) => {
            for (command, outcome) in commands.into_iter().zip(outcomes) {
                answer(command, Ok(outcome));
            }
        }
        Err(error) if commands.len() == 1 => {
            answer(commands.into_iter().next().expect("one command"), Err(error.into()));
        }
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                commands = commands.len(),
                "batch write failed; retrying one by one"
            );
            for command in commands {
                let outcome = apply(pool, std::slice::from_ref(&command)).await;
                answer(command, outcome.map(|mut o| o.pop().expect("one outcome per command")).map_err(Into::into));
            }
        }
    }
}

/// A caller that gave up (its request was dropped) needs no answer.
fn answer(command: Command, outcome: Result<Outcome, WriteError>) {
    match (command, outcome) {
        (Command::Insert { reply, .. }, Ok(Outcome::Inserted(job))) => drop(reply.send(Ok(job))),
        (Command::Create { reply, .. }, Ok(Outcome::Created(server, job))) => drop(reply.send(Ok((server, job)))),
        (Command::Mark { reply, .. }, Ok(Outcome::Marked)) => drop(reply.send(Ok(()))),
        (Command::Insert { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (Command::Create { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (Command::Mark { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (_, Ok(_)) => unreachable!("apply returns the outcome of each command's own kind"),
    }
}

/// Runs `commands` in one `BEGIN IMMEDIATE` transaction; one outcome per command.
async fn apply(pool: &SqlitePool, commands: &[Command]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes: Vec<Option<Outcome>> = commands.iter().map(|_| None).collect();
    for (i, command) in commands.iter().enumerate() {
        if let Command::Create { new, .. } = command {
            let (server, job) = create(&mut tx, new).await?;
            outcomes[i] = Some(Outcome::Created(server, job));
        }
    }
    insert_in_rounds(&mut tx, commands, &mut outcomes).await?;
    let marks: Vec<JobId> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Mark { ids, .. } => Some(ids.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    for chunk in marks.chunks(MARKS_PER_STATEMENT) {
        jobs::mark_published(&mut *tx, chunk).await?;
    }
    tx.commit().await?;
    Ok(commands
        .iter()
        .zip(outcomes)
        .map(|(command, outcome)| match command {
            Command::Mark { .. } => Outcome::Marked,
            _ => outcome.expect("every insert and create has its outcome"),
        })
        .collect())
}

/// Conditional inserts, one statement per round; a round holds at most one
/// job per server, so a later request for a server already in the batch
/// sees the earlier one's row and state, exactly as if it had come alone
/// after it.
async fn insert_in_rounds(
    conn: &mut SqliteConnection,
    commands: &[Command],
    outcomes: &mut [Option<Outcome>],
) -> Result<(), sqlx::Error> {
    let mut pending: Vec<usize> =
        commands.iter().enumerate().filter(|(_, c)| matches!(c, Command::Insert { .. })).map(|(i, _)| i).collect();
    while !pending.is_empty() {
        let mut servers_in_round = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) =
            pending.into_iter().partition(|&i| servers_in_round.insert(insert_of(&commands[i]).0.server_id));
        let rows: Vec<(&QueuedJob, &[ServerStatus])> = round
            .iter()
            .map(|&i| {
                let (job, allowed, _) = insert_of(&commands[i]);
                (job, allowed)
            })
            .collect();
        let mut inserted: HashMap<String, Job> =
            jobs::insert_if_allowed(conn, &rows).await?.into_iter().map(|job| (job.id.clone(), job)).collect();
        let mut changes = Vec::new();
        for &i in &round {
            let (job, _, then) = insert_of(&commands[i]);
            let row = inserted.remove(&job.id.to_string());
            if let (Some(_), Some(status)) = (&row, then) {
                changes.push((job.server_id, status));
            }
            outcomes[i] = Some(Outcome::Inserted(row));
        }
        servers::set_statuses(conn, &changes).await?;
        pending = later;
    }
    Ok(())
}

fn insert_of(command: &Command) -> (&QueuedJob, &[ServerStatus], Option<ServerStatus>) {
    match command {
        Command::Insert { job, allowed, then, .. } => (job, allowed, *then),
        _ => unreachable!("only inserts are pending"),
    }
}

async fn create(conn: &mut SqliteConnection, new: &NewServerJob) -> Result<(Server, Job), sqlx::Error> {
    let server =
        servers::insert(conn, NewServer { owner_id: new.owner_id, name: &new.name, host: &new.host, spec: &new.spec })
            .await?;
    let server_id = ServerId::new(server.id).map_err(|e| sqlx::Error::Protocol(format!("new server row: {e}")))?;
    let payload = jobs::payload(server_id, new.job_id, Some(new.spec.clone()));
    let job = jobs::insert(
        conn,
        NewJob {
            id: new.job_id,
            server_id: server.id,
            action: Action::Create,
            host: &server.host,
            status: JobStatus::Queued,
            origin: new.origin,
            payload: &payload,
            requested_by: new.requested_by,
            created_at: chrono::Utc::now(),
        },
    )
    .await?;
    Ok((server, job))
}

#[cfg(test)]
mod tests {
    use futures::future::join_all;

    use super::*;
    use crate::db::{scratch, scratch_server};

    fn queued(server_id: i64, action: Action) -> QueuedJob {
        QueuedJob {
            id: JobId::new(),
            server_id,
            action,
            host: "h1".into(),
            origin: "api",
            payload: "{}".into(),
            requested_by: Some(1),
            created_at: chrono::Utc::now(),
        }
    }

    async fn send(writer: &Writer, job: QueuedJob) -> Result<Option<Job>, WriteError> {
        let allowed = ServerStatus::ALL.into_iter().filter(|s| job.action.allowed_from(*s)).collect();
        let then = job.action.in_flight_status();
        writer.insert_if_allowed(job, allowed, then).await
    }

    async fn status(pool: &SqlitePool, server_id: i64) -> String {
        let (status,): (String,) =
            sqlx::query_as("SELECT status FROM servers WHERE id = ?").bind(server_id).fetch_one(pool).await.unwrap();
        status
    }

    // The test runtime runs one thread: every request below is queued
    // before the writer task first runs, so each test is one batch.

    #[tokio::test]
    async fn racing_requests_in_one_batch_accept_exactly_the_first_per_server() {
        let (_dir, db) = scratch().await;
        let (a, b) = (scratch_server(&db, "stopped").await, scratch_server(&db, "stopped").await);
        let writer = Writer::spawn(db.write.clone());
        let results = join_all((0..10).map(|n| send(&writer, queued([a, b][n % 2], Action::Start)))).await;
        let accepted: Vec<bool> = results.into_iter().map(|r| r.unwrap().is_some()).collect();
        assert_eq!(accepted, [true, true, false, false, false, false, false, false, false, false]);
        let (in_flight,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetch_one(&db.read).await.unwrap();
        assert_eq!(in_flight, 2);
    }

    #[tokio::test]
    async fn a_request_sees_the_state_left_by_the_requests_before_it_in_the_batch() {
        let (_dir, db) = scratch().await;
        let (stopped, running) = (scratch_server(&db, "stopped").await, scratch_server(&db, "running").await);
        let writer = Writer::spawn(db.write.clone());
        let results = join_all([
            send(&writer, queued(stopped, Action::Stop)),  // not from stopped: refused
            send(&writer, queued(stopped, Action::Start)), // so this one is accepted
            send(&writer, queued(running, Action::Delete)),
            send(&writer, queued(running, Action::Stop)), // a delete is in flight
        ])
        .await;
        let accepted: Vec<bool> = results.into_iter().map(|r| r.unwrap().is_some()).collect();
        assert_eq!(accepted, [false, true, true, false]);
        assert_eq!(status(&db.read, stopped).await, "stopped");
        assert_eq!(status(&db.read, running).await, "deleting");
    }

    #[tokio::test]
    async fn a_failing_request_fails_alone() {
        let (_dir, db) = scratch().await;
        let ids: Vec<i64> = join_all((0..3).map(|_| scratch_server(&db, "stopped"))).await;
        let writer = Writer::spawn(db.write.clone());
        let taken = send(&writer, queued(ids[0], Action::Start)).await.unwrap().unwrap().job_id();
        let mut duplicate = queued(ids[1], Action::Start);
        duplicate.id = taken;
        let results = join_all([
            send(&writer, duplicate),
            send(&writer, queued(ids[2], Action::Start)),
            send(&writer, queued(ids[0], Action::Start)),
        ])
        .await;
        assert!(matches!(results[0], Err(WriteError::Database(_))), "{:?}", results[0]);
        assert!(matches!(results[1], Ok(Some(_))), "{:?}", results[1]);
        assert!(matches!(results[2], Ok(None)), "{:?}", results[2]);
    }

    #[tokio::test]
    async fn a_created_server_comes_with_its_job_and_marks_record_the_publish() {
        let (_dir, db) = scratch().await;
        let writer = Writer::spawn(db.write.clone());
        let new = NewServerJob {
            owner_id: 1,
            name: "naujas".into(),
            host: "h1".into(),
            spec: ServerSpec { cpus: Some(1.0), memory_mb: None },
            job_id: JobId::new(),
            origin: "api",
            requested_by: Some(1),
        };
        let (server, job) = writer.create_server(new.clone()).await.unwrap();
        assert_eq!((server.status(), server.name.as_str(), server.cpus), (ServerStatus::Creating, "naujas", Some(1.0)));
        assert_eq!((job.server_id, job.action(), job.job_id()), (server.id, Some(Action::Create), new.job_id));
        let request: vsfleet_contract::JobRequest = serde_json::from_str(&job.payload).unwrap();
        assert_eq!(
            (request.server_id.as_i64(), request.job_id, request.spec),
            (server.id, Some(new.job_id), Some(new.spec))
        );
        assert!(job.published_at.is_none());
        writer.mark_published(vec![job.job_id()]).await.unwrap();
        let job = jobs::get(&db.read, &job.id).await.unwrap().unwrap();
        assert!(job.published_at.is_some());
    }
}

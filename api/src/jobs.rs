//! Job rows: every request, and every job a worker reported that an operator
//! published by hand. The row is also the outbox: `published_at` stays NULL
//! until JetStream acknowledged the message.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Sqlite, SqliteConnection};
use vsfleet_contract::{Action, JobId, JobRequest, JobStatus, ServerId, ServerSpec, ServerStatus};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: String,
    pub server_id: i64,
    pub action: String,
    pub host: String,
    pub status: String,
    /// `api`, `scheduler`, or `nats` (published by hand).
    pub origin: String,
    pub attempts: i64,
    pub error: Option<String>,
    /// What the action produced (cleanup: the space reclaimed).
    pub result: Option<sqlx::types::Json<serde_json::Value>>,
    #[serde(skip)]
    pub payload: String,
    pub requested_by: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    /// The job as `user` may read it: without host paths in `error` unless
    /// they are an admin.
    pub fn for_viewer(mut self, user: &crate::users::User) -> Self {
        if !user.is_admin {
            crate::redact::optional(&mut self.error);
        }
        self
    }

    pub fn job_id(&self) -> JobId {
        self.id.parse().expect("job ids are written as uuids")
    }

    pub fn job_status(&self) -> JobStatus {
        self.status.parse().unwrap_or(JobStatus::Failed)
    }

    pub fn action(&self) -> Option<Action> {
        self.action.parse().ok()
    }
}

pub struct NewJob<'a> {
    pub id: JobId,
    pub server_id: i64,
    pub action: Action,
    pub host: &'a str,
    pub status: JobStatus,
    pub origin: &'a str,
    pub payload: &'a str,
    pub requested_by: Option<i64>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut SqliteConnection, new: NewJob<'_>) -> Result<Job, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO jobs (id, server_id, action, host, status, origin, payload, requested_by, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
    )
    .bind(new.id.to_string())
    .bind(new.server_id)
    .bind(new.action.as_str())
    .bind(new.host)
    .bind(new.status.as_str())
    .bind(new.origin)
    .bind(new.payload)
    .bind(new.requested_by)
    .bind(new.created_at)
    .fetch_one(conn)
    .await
}

/// A queued job built by the api, owned so it can wait in the writer's queue.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub id: JobId,
    pub server_id: i64,
    pub action: Action,
    pub host: String,
    pub origin: &'static str,
    pub payload: String,
    pub requested_by: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl QueuedJob {
    /// Runs the cached statement `sql`, whose `?1`…`?8` are this job's
    /// columns and `?9`, when given, `condition`; returns the rows inserted.
    fn insert(&self, conn: &rusqlite::Connection, sql: &str, condition: Option<&str>) -> rusqlite::Result<usize> {
        let (id, action, at) = (self.id.to_string(), self.action.as_str(), crate::writer::timestamp(self.created_at));
        let mut values: Vec<&dyn rusqlite::ToSql> =
            vec![&id, &self.server_id, &action, &self.host, &self.origin, &self.payload, &self.requested_by, &at];
        if let Some(condition) = &condition {
            values.push(condition);
        }
        conn.prepare_cached(sql)?.execute(values.as_slice())
    }

    /// The row as inserted: everything else starts empty.
    pub fn row(&self) -> Job {
        Job {
            id: self.id.to_string(),
            server_id: self.server_id,
            action: self.action.as_str().to_owned(),
            host: self.host.clone(),
            status: JobStatus::Queued.as_str().to_owned(),
            origin: self.origin.to_owned(),
            attempts: 0,
            error: None,
            result: None,
            payload: self.payload.clone(),
            requested_by: self.requested_by,
            created_at: self.created_at,
            published_at: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// What a worker receives: the exact JSON published, kept in the row so the
/// outbox republishes it unchanged.
pub fn payload(
    server_id: ServerId,
    id: JobId,
    spec: Option<ServerSpec>,
    created_at: DateTime<Utc>,
    limit: std::time::Duration,
) -> String {
    let request = JobRequest {
        server_id,
        job_id: Some(id),
        spec,
        deadline: Some(created_at + limit),
        fence: Some(created_at.timestamp_micros()),
    };
    serde_json::to_string(&request).expect("a job request is plain data and always serializes")
}

/// Inserts the job only if its server is in one of `allowed` states and
/// has no job in flight, in one statement: SQLite runs it atomically, so a
/// racing request or a state change since the caller's read cannot slip
/// through. `None` when the condition did not hold. On the writer's
/// connection ([`crate::writer`]).
pub fn insert_if_allowed(
    conn: &rusqlite::Connection,
    job: &QueuedJob,
    allowed: &[ServerStatus],
) -> rusqlite::Result<Option<Job>> {
    // One bound value for the set, so the statement text (and its cached
    // preparation) is the same for every action.
    let mut states = String::from("|");
    for status in allowed {
        states.push_str(status.as_str());
        states.push('|');
    }
    let inserted = job.insert(
        conn,
        "INSERT INTO jobs (id, server_id, action, host, status, origin, payload, requested_by, created_at)
         SELECT ?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8
         WHERE EXISTS (SELECT 1 FROM servers WHERE id = ?2 AND instr(?9, '|' || status || '|') > 0)
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE server_id = ?2 AND status IN ('queued', 'running'))",
        Some(&states),
    )?;
    Ok((inserted == 1).then(|| job.row()))
}

/// Inserts the job unconditionally (a new server's create job). On the
/// writer's connection.
pub fn insert_queued(conn: &rusqlite::Connection, job: &QueuedJob) -> rusqlite::Result<Job> {
    job.insert(
        conn,
        "INSERT INTO jobs (id, server_id, action, host, status, origin, payload, requested_by, created_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8)",
        None,
    )?;
    Ok(job.row())
}

pub async fn get<'e, E>(db: E, id: &str) -> Result<Option<Job>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT * FROM jobs WHERE id = ?").bind(id).fetch_optional(db).await
}

pub async fn in_flight<'e, E>(db: E, server_id: i64) -> Result<Option<Job>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as(
        "SELECT * FROM jobs WHERE server_id = ? AND status IN ('queued', 'running') ORDER BY created_at LIMIT 1",
    )
    .bind(server_id)
    .fetch_optional(db)
    .await
}

pub async fn for_server<'e, E>(db: E, server_id: i64) -> Result<Vec<Job>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT * FROM jobs WHERE server_id = ? ORDER BY created_at DESC, id LIMIT 200")
        .bind(server_id)
        .fetch_all(db)
        .await
}

/// Marks jobs as acknowledged by JetStream. On the writer's connection,
/// where a statement per job costs microseconds.
pub fn mark_published(conn: &rusqlite::Connection, ids: &[JobId]) -> rusqlite::Result<()> {
    let now = crate::writer::timestamp(Utc::now());
    let mut mark = conn.prepare_cached("UPDATE jobs SET published_at = ?1 WHERE id = ?2 AND published_at IS NULL")?;
    for id in ids {
        mark.execute(rusqlite::params![now, id.to_string()])?;
    }
    Ok(())
}

/// Queued jobs JetStream has not acknowledged, oldest first, created before
/// `before` (younger ones are still being published by their request).
pub async fn unpublished<'e, E>(db: E, before: DateTime<Utc>, limit: i64) -> Result<Vec<Job>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as(
        "SELECT * FROM jobs WHERE published_at IS NULL AND status = 'queued' AND created_at < ? ORDER BY created_at LIMIT ?",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

impl Job {
    /// A row read on the writer's connection (`SELECT *`).
    pub fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
        use crate::writer::parse_timestamp as at;
        let result: Option<String> = row.get("result")?;
        let result = result
            .map(|text| serde_json::from_str(&text).map(sqlx::types::Json))
            .transpose()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, e.into()))?;
        Ok(Job {
            id: row.get("id")?,
            server_id: row.get("server_id")?,
            action: row.get("action")?,
            host: row.get("host")?,
            status: row.get("status")?,
            origin: row.get("origin")?,
            attempts: row.get("attempts")?,
            error: row.get("error")?,
            result,
            payload: row.get("payload")?,
            requested_by: row.get("requested_by")?,
            created_at: at(row.get("created_at")?)?,
            published_at: row.get::<_, Option<String>>("published_at")?.map(at).transpose()?,
            started_at: row.get::<_, Option<String>>("started_at")?.map(at).transpose()?,
            finished_at: row.get::<_, Option<String>>("finished_at")?.map(at).transpose()?,
        })
    }

    fn result_text(&self) -> Option<String> {
        self.result.as_ref().map(|r| r.0.to_string())
    }
}

/// The rows of `ids` that exist. On the writer's connection.
pub fn get_many(conn: &rusqlite::Connection, ids: &[String]) -> rusqlite::Result<Vec<Job>> {
    crate::writer::rows_by_id(conn, "SELECT * FROM jobs WHERE id = ?1", ids, Job::from_row)
}

/// Inserts whole rows as they are (jobs published by hand, first seen
/// through their events). On the writer's connection.
pub fn insert_rows(conn: &rusqlite::Connection, rows: &[&Job]) -> rusqlite::Result<()> {
    use crate::writer::timestamp as text;
    let mut insert = conn.prepare_cached(
        "INSERT INTO jobs (id, server_id, action, host, status, origin, attempts, error, result, payload, requested_by,
         created_at, published_at, started_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    for job in rows {
        insert.execute(rusqlite::params![
            job.id,
            job.server_id,
            job.action,
            job.host,
            job.status,
            job.origin,
            job.attempts,
            job.error,
            job.result_text(),
            job.payload,
            job.requested_by,
            text(job.created_at),
            job.published_at.map(text),
            job.started_at.map(text),
            job.finished_at.map(text),
        ])?;
    }
    Ok(())
}

/// Writes what events change in a job (status, attempts, outcome, times).
/// On the writer's connection.
pub fn update_progress(conn: &rusqlite::Connection, rows: &[&Job]) -> rusqlite::Result<()> {
    use crate::writer::timestamp as text;
    let mut update = conn.prepare_cached(
        "UPDATE jobs SET status = ?2, attempts = ?3, error = ?4, result = ?5, published_at = ?6, started_at = ?7,
         finished_at = ?8 WHERE id = ?1",
    )?;
    for job in rows {
        update.execute(rusqlite::params![
            job.id,
            job.status,
            job.attempts,
            job.error,
            job.result_text(),
            job.published_at.map(text),
            job.started_at.map(text),
            job.finished_at.map(text),
        ])?;
    }
    Ok(())
}

//! Job rows: every request, and every job a worker reported that an operator
//! published by hand. The row is also the outbox: `published_at` stays NULL
//! until JetStream acknowledged the message.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Sqlite, SqliteConnection};
use vsfleet_contract::{Action, JobId, JobStatus, ServerStatus};

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

/// Inserts the job only if its server is in one of `allowed` states and
/// has no job in flight, in one statement: SQLite runs it atomically, so a
/// racing request or a state change since the caller's read cannot slip
/// through. `None` when the condition did not hold.
pub async fn insert_if_allowed(
    conn: &mut SqliteConnection,
    new: NewJob<'_>,
    allowed: &[ServerStatus],
) -> Result<Option<Job>, sqlx::Error> {
    let mut query = sqlx::QueryBuilder::new(
        "INSERT INTO jobs (id, server_id, action, host, status, origin, payload, requested_by, created_at) SELECT ",
    );
    let mut values = query.separated(", ");
    values
        .push_bind(new.id.to_string())
        .push_bind(new.server_id)
        .push_bind(new.action.as_str())
        .push_bind(new.host)
        .push_bind(new.status.as_str())
        .push_bind(new.origin)
        .push_bind(new.payload)
        .push_bind(new.requested_by)
        .push_bind(new.created_at);
    query.push(" WHERE EXISTS (SELECT 1 FROM servers WHERE id = ").push_bind(new.server_id).push(" AND status IN (");
    let mut states = query.separated(", ");
    for status in allowed {
        states.push_bind(status.as_str());
    }
    query
        .push(")) AND NOT EXISTS (SELECT 1 FROM jobs WHERE server_id = ")
        .push_bind(new.server_id)
        .push(" AND status IN ('queued', 'running')) RETURNING *");
    query.build_query_as().fetch_optional(conn).await
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

/// Marks jobs as acknowledged by JetStream, in one statement.
pub async fn mark_published<'e, E>(db: E, ids: &[JobId]) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let mut query = sqlx::QueryBuilder::new("UPDATE jobs SET published_at = ");
    query.push_bind(Utc::now()).push(" WHERE published_at IS NULL AND id IN (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(id.to_string());
    }
    query.push(")");
    query.build().execute(db).await?;
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

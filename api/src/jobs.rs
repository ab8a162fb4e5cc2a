//! Job rows: every request, and every job a worker reported that an operator
//! published by hand. The row is also the outbox: `published_at` stays NULL
//! until JetStream acknowledged the message.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Sqlite, SqliteConnection};
use vsfleet_contract::{Action, JobId, JobStatus};

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

pub async fn mark_published<'e, E>(db: E, id: JobId) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query("UPDATE jobs SET published_at = ? WHERE id = ? AND published_at IS NULL")
        .bind(Utc::now())
        .bind(id.to_string())
        .execute(db)
        .await?;
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

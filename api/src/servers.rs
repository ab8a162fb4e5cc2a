//! Server rows: the source of truth for what should exist (seed 001).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Sqlite, SqliteConnection};
use vsfleet_contract::{ServerSpec, ServerStatus};

use crate::error::ApiError;
use crate::users::User;

/// A server as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Server {
    pub id: i64,
    pub name: String,
    pub owner_id: i64,
    pub host: String,
    pub status: String,
    pub container_id: Option<String>,
    pub data_exists: bool,
    pub cpus: Option<f64>,
    pub memory_mb: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_after: Option<DateTime<Utc>>,
    /// Whether the server's host is alive (a heartbeat within three), set
    /// for API answers only: a lost host's servers wait for it.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_alive: Option<bool>,
}

impl Server {
    pub fn status(&self) -> ServerStatus {
        // Only this crate writes the column, always from a `ServerStatus`.
        self.status.parse().unwrap_or(ServerStatus::Failed)
    }

    pub fn spec(&self) -> ServerSpec {
        ServerSpec { cpus: self.cpus, memory_mb: self.memory_mb.map(|m| m as u64) }
    }

    pub fn visible_to(&self, user: &User) -> bool {
        user.is_admin || self.owner_id == user.id
    }

    /// The server with `host_alive` set from the live hosts, when they are known.
    pub fn with_liveness(mut self, alive: Option<&[vsfleet_contract::HostPresence]>) -> Self {
        self.host_alive = alive.map(|alive| alive.iter().any(|p| p.host == self.host));
        self
    }

    /// The server as `user` may read it: without host paths in
    /// `last_error` unless they are an admin.
    pub fn for_viewer(mut self, user: &User) -> Self {
        if !user.is_admin {
            crate::redact::optional(&mut self.last_error);
        }
        self
    }
}

pub async fn get<'e, E>(db: E, id: i64) -> Result<Option<Server>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT * FROM servers WHERE id = ?").bind(id).fetch_optional(db).await
}

/// The server if `user` may see it; someone else's server is "not found".
pub async fn get_visible<'e, E>(db: E, user: &User, id: i64) -> Result<Server, ApiError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    match get(db, id).await? {
        Some(server) if server.visible_to(user) => Ok(server),
        _ => Err(ApiError::NotFound("server")),
    }
}

pub async fn list<'e, E>(db: E, user: &User, include_deleted: bool) -> Result<Vec<Server>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT * FROM servers WHERE (? OR owner_id = ?) AND (? OR status != 'deleted') ORDER BY id")
        .bind(user.is_admin)
        .bind(user.id)
        .bind(include_deleted)
        .fetch_all(db)
        .await
}

pub struct NewServer<'a> {
    pub owner_id: i64,
    pub name: &'a str,
    pub host: &'a str,
    pub spec: &'a ServerSpec,
}

/// Inserts a server (creating) and returns its row. On the writer's
/// connection ([`crate::writer`]).
pub fn insert_now(conn: &rusqlite::Connection, new: &NewServer<'_>) -> rusqlite::Result<Server> {
    let now = Utc::now();
    let memory_mb = new.spec.memory_mb.map(|m| m as i64);
    conn.prepare_cached(
        "INSERT INTO servers (owner_id, name, host, status, cpus, memory_mb, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(rusqlite::params![
        new.owner_id,
        new.name,
        new.host,
        ServerStatus::Creating.as_str(),
        new.spec.cpus,
        memory_mb,
        crate::writer::timestamp(now),
    ])?;
    Ok(Server {
        id: conn.last_insert_rowid(),
        name: new.name.to_owned(),
        owner_id: new.owner_id,
        host: new.host.to_owned(),
        status: ServerStatus::Creating.as_str().to_owned(),
        container_id: None,
        data_exists: false,
        cpus: new.spec.cpus,
        memory_mb,
        last_error: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        purge_after: None,
        host_alive: None,
    })
}

/// What a request checks, read on the writer's connection.
pub struct Checked {
    pub owner_id: i64,
    pub status: ServerStatus,
    pub host: String,
    pub spec: ServerSpec,
    /// The job in flight, if any.
    pub busy_job: Option<String>,
}

/// The server's owner, state, host and spec, with its job in flight, in one
/// read. On the writer's connection.
pub fn checked_now(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<Option<Checked>> {
    use rusqlite::OptionalExtension as _;
    conn.prepare_cached(
        "SELECT s.owner_id, s.status, s.host, s.cpus, s.memory_mb,
                (SELECT j.id FROM jobs j WHERE j.server_id = s.id AND j.status IN ('queued', 'running')
                 ORDER BY j.created_at LIMIT 1)
         FROM servers s WHERE s.id = ?1",
    )?
    .query_row([id], |row| {
        let status: String = row.get(1)?;
        let memory_mb: Option<i64> = row.get(4)?;
        Ok(Checked {
            owner_id: row.get(0)?,
            // Only this crate writes the column, always from a `ServerStatus`.
            status: status.parse().unwrap_or(ServerStatus::Failed),
            host: row.get(2)?,
            spec: ServerSpec { cpus: row.get(3)?, memory_mb: memory_mb.map(|m| m as u64) },
            busy_job: row.get(5)?,
        })
    })
    .optional()
}

/// How many servers `owner_id` has that are not deleted (what
/// `api.max_servers_per_user` limits). On the writer's connection.
pub fn live_count_now(conn: &rusqlite::Connection, owner_id: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM servers WHERE owner_id = ?1 AND status != 'deleted'")?
        .query_row([owner_id], |row| row.get(0))
}

/// Servers on `host` that are not deleted (what its capacity counts). On
/// the writer's connection.
pub fn host_count_now(conn: &rusqlite::Connection, host: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM servers WHERE host = ?1 AND status != 'deleted'")?
        .query_row([host], |row| row.get(0))
}

/// Sets a server's status. On the writer's connection.
pub fn set_status_now(conn: &rusqlite::Connection, id: i64, status: ServerStatus) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE servers SET status = ?1, updated_at = ?2 WHERE id = ?3")?
        .execute(rusqlite::params![status.as_str(), crate::writer::timestamp(Utc::now()), id])?;
    Ok(())
}

impl Server {
    /// A row read on the writer's connection (`SELECT *`).
    pub fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Server> {
        use crate::writer::parse_timestamp as at;
        Ok(Server {
            id: row.get("id")?,
            name: row.get("name")?,
            owner_id: row.get("owner_id")?,
            host: row.get("host")?,
            status: row.get("status")?,
            container_id: row.get("container_id")?,
            data_exists: row.get("data_exists")?,
            cpus: row.get("cpus")?,
            memory_mb: row.get("memory_mb")?,
            last_error: row.get("last_error")?,
            created_at: at(row.get("created_at")?)?,
            updated_at: at(row.get("updated_at")?)?,
            deleted_at: row.get::<_, Option<String>>("deleted_at")?.map(at).transpose()?,
            purge_after: row.get::<_, Option<String>>("purge_after")?.map(at).transpose()?,
            host_alive: None,
        })
    }
}

/// The rows of `ids` that exist. On the writer's connection.
pub fn get_many(conn: &rusqlite::Connection, ids: &[i64]) -> rusqlite::Result<Vec<Server>> {
    crate::writer::rows_by_id(conn, "SELECT * FROM servers WHERE id = ?1", ids, Server::from_row)
}

/// Writes what a job's outcome changes in a server (status, container,
/// data, error, deletion times). On the writer's connection.
pub fn update_outcome(conn: &rusqlite::Connection, rows: &[&Server]) -> rusqlite::Result<()> {
    use crate::writer::timestamp as text;
    let mut update = conn.prepare_cached(
        "UPDATE servers SET status = ?2, container_id = ?3, data_exists = ?4, last_error = ?5, deleted_at = ?6,
         purge_after = ?7, updated_at = ?8 WHERE id = ?1",
    )?;
    for server in rows {
        update.execute(rusqlite::params![
            server.id,
            server.status,
            server.container_id,
            server.data_exists,
            server.last_error,
            server.deleted_at.map(text),
            server.purge_after.map(text),
            text(server.updated_at),
        ])?;
    }
    Ok(())
}

/// Removes purged servers. On the writer's connection.
pub fn delete_many(conn: &rusqlite::Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let mut delete = conn.prepare_cached("DELETE FROM servers WHERE id = ?1")?;
    for id in ids {
        delete.execute([id])?;
    }
    Ok(())
}

/// Forgets the inner containers of servers that no longer run any. On the
/// writer's connection.
pub fn clear_containers(conn: &rusqlite::Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let mut delete = conn.prepare_cached("DELETE FROM server_containers WHERE server_id = ?1")?;
    for id in ids {
        delete.execute([id])?;
    }
    Ok(())
}

pub async fn rename(conn: &mut SqliteConnection, id: i64, name: &str) -> Result<Server, sqlx::Error> {
    sqlx::query_as("UPDATE servers SET name = ?, updated_at = ? WHERE id = ? RETURNING *")
        .bind(name)
        .bind(Utc::now())
        .bind(id)
        .fetch_one(conn)
        .await
}

/// Servers per host among those that occupy one (everything but deleted).
pub async fn load_by_host<'e, E>(db: E) -> Result<Vec<(String, i64)>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT host, COUNT(*) FROM servers WHERE status != 'deleted' GROUP BY host").fetch_all(db).await
}

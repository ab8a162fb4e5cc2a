//! The SQLite side of [`super::Tx`]: statements on the group-commit
//! writer's rusqlite connection ([`super::writer`]), each prepared once and
//! cached, so a statement costs microseconds and no hand-off.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension as _, Row, params};
use vsfleet_contract::{JobId, PortList, ServerId, ServerSpec, ServerStatus};

use super::rows::{Checked, Job, NewServer, Server};

/// A timestamp as sqlx writes it, so rows written here sort and compare
/// with the rest.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A timestamp as sqlx reads it: RFC 3339, or SQLite's own `datetime()`
/// form taken as UTC.
fn parse_timestamp(index: usize, text: String) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&text)
        .map(|at| at.with_timezone(&Utc))
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(&text, "%F %T%.f").map(|at| at.and_utc()))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into()))
}

fn at(row: &Row<'_>, column: &str) -> rusqlite::Result<DateTime<Utc>> {
    parse_timestamp(row.as_ref().column_index(column)?, row.get(column)?)
}

fn at_opt(row: &Row<'_>, column: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let index = row.as_ref().column_index(column)?;
    row.get::<_, Option<String>>(column)?.map(|text| parse_timestamp(index, text)).transpose()
}

impl Server {
    /// A row read here (`SELECT *`).
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Server> {
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
            created_at: at(row, "created_at")?,
            updated_at: at(row, "updated_at")?,
            deleted_at: at_opt(row, "deleted_at")?,
            purge_after: at_opt(row, "purge_after")?,
            ports: row.get("ports")?,
        })
    }
}

impl Job {
    /// A row read here (`SELECT *`).
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
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
            created_at: at(row, "created_at")?,
            published_at: at_opt(row, "published_at")?,
            started_at: at_opt(row, "started_at")?,
            finished_at: at_opt(row, "finished_at")?,
        })
    }

    fn result_text(&self) -> Option<String> {
        self.result.as_ref().map(|r| r.0.to_string())
    }
}

/// The rows `sql` (one `$1` parameter) finds for each of `ids`, skipping
/// ids it finds none for.
fn rows_by_id<K: rusqlite::ToSql, T>(
    conn: &Connection,
    sql: &str,
    ids: &[K],
    from_row: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut get = conn.prepare_cached(sql)?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        found.extend(get.query_row([id], &from_row).optional()?);
    }
    Ok(found)
}

/// Runs a cached statement once per item of `items`.
fn each<T>(
    conn: &Connection,
    sql: &str,
    items: &[T],
    run: impl Fn(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(sql)?;
    for item in items {
        run(&mut statement, item)?;
    }
    Ok(())
}

pub fn checked(conn: &Connection, id: i64) -> rusqlite::Result<Option<Checked>> {
    conn.prepare_cached(super::CHECKED)?
        .query_row([id], |row| {
            let memory_mb: Option<i64> = row.get(4)?;
            let ports: PortList = row.get(5)?;
            let last_job_at = row.get::<_, Option<String>>(7)?.map(|text| parse_timestamp(7, text)).transpose()?;
            Ok(Checked {
                owner_id: row.get(0)?,
                status: row.get(1)?,
                host: row.get(2)?,
                spec: ServerSpec { cpus: row.get(3)?, memory_mb: memory_mb.map(|m| m as u64), ports: ports.0 },
                busy_job: row.get(6)?,
                last_job_at,
            })
        })
        .optional()
}

pub fn busy_job(conn: &Connection, server_id: i64) -> rusqlite::Result<Option<JobId>> {
    conn.prepare_cached(super::BUSY_JOB)?.query_row([server_id], |row| row.get(0)).optional()
}

pub fn count(conn: &Connection, sql: &str, key: &dyn rusqlite::ToSql) -> rusqlite::Result<i64> {
    conn.prepare_cached(sql)?.query_row([key], |row| row.get(0))
}

pub fn insert_server(conn: &Connection, new: &NewServer) -> rusqlite::Result<Server> {
    let memory_mb = new.spec.memory_mb.map(|m| m as i64);
    let ports = PortList(new.spec.ports.clone());
    conn.prepare_cached(super::INSERT_SERVER)?.execute(params![
        new.owner_id,
        new.name,
        new.host,
        ServerStatus::Creating,
        new.spec.cpus,
        memory_mb,
        ports,
        timestamp(new.created_at),
    ])?;
    let id = conn.last_insert_rowid();
    let id = ServerId::new(id)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, e.into()))?;
    each(conn, super::INSERT_PORT, &new.spec.ports, |insert, p| {
        insert.execute(params![new.host, p.host, id, p.container])
    })?;
    Ok(Server {
        id,
        name: new.name.clone(),
        owner_id: new.owner_id,
        host: new.host.clone(),
        status: ServerStatus::Creating,
        container_id: None,
        data_exists: false,
        cpus: new.spec.cpus,
        memory_mb,
        last_error: None,
        created_at: new.created_at,
        updated_at: new.created_at,
        deleted_at: None,
        purge_after: None,
        ports,
    })
}

pub fn taken_ports(conn: &Connection, host: &str) -> rusqlite::Result<Vec<u16>> {
    let mut query = conn.prepare_cached(super::TAKEN_PORTS)?;
    let rows = query.query_map([host], |row| row.get::<_, u16>(0))?;
    rows.collect()
}

pub fn insert_jobs(conn: &Connection, jobs: &[&Job]) -> rusqlite::Result<()> {
    each(conn, super::INSERT_JOB, jobs, |insert, job| {
        insert.execute(params![
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
            timestamp(job.created_at),
            job.published_at.map(timestamp),
            job.started_at.map(timestamp),
            job.finished_at.map(timestamp),
        ])
    })
}

/// Inserts `job` only if its server is in one of `allowed` states and has
/// no job in flight, in one statement.
pub fn insert_job_if_allowed(conn: &Connection, job: &Job, allowed: &[ServerStatus]) -> rusqlite::Result<bool> {
    // One bound value for the set, so the statement text (and its cached
    // preparation) is the same for every action.
    let mut states = String::from("|");
    for status in allowed {
        states.push_str(status.as_str());
        states.push('|');
    }
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (id, server_id, action, host, status, origin, payload, requested_by, created_at)
         SELECT $1, $2, $3, $4, 'queued', $5, $6, $7, $8
         WHERE EXISTS (SELECT 1 FROM servers WHERE id = $2 AND instr($9, '|' || status || '|') > 0)
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.server_id = $2 AND j.status IN ('queued', 'running'))",
        )?
        .execute(params![
            job.id,
            job.server_id,
            job.action,
            job.host,
            job.origin,
            job.payload,
            job.requested_by,
            timestamp(job.created_at),
            states
        ])?;
    Ok(inserted == 1)
}

pub fn set_status(conn: &Connection, id: ServerId, status: ServerStatus, at: DateTime<Utc>) -> rusqlite::Result<()> {
    conn.prepare_cached(super::SET_STATUS)?.execute(params![status, timestamp(at), id])?;
    Ok(())
}

pub fn record_activity(
    conn: &Connection,
    entry: &crate::store::rows::Entry,
    at: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(super::INSERT_ACTIVITY)?.execute(params![
        timestamp(at),
        entry.user_id,
        entry.actor,
        entry.action,
        entry.target,
        entry.result,
        entry.detail,
    ])?;
    Ok(())
}

pub fn mark_published(conn: &Connection, ids: &[JobId], at: DateTime<Utc>) -> rusqlite::Result<()> {
    let at = timestamp(at);
    each(conn, super::MARK_PUBLISHED, ids, |mark, id| mark.execute(params![at, id]))
}

pub fn jobs_by_ids(conn: &Connection, ids: &[JobId]) -> rusqlite::Result<Vec<Job>> {
    rows_by_id(conn, "SELECT * FROM jobs WHERE id = $1", ids, Job::from_row)
}

pub fn servers_by_ids(conn: &Connection, ids: &[ServerId]) -> rusqlite::Result<Vec<Server>> {
    rows_by_id(conn, "SELECT * FROM servers WHERE id = $1", ids, Server::from_row)
}

pub fn update_job_progress(conn: &Connection, jobs: &[&Job]) -> rusqlite::Result<()> {
    each(conn, super::UPDATE_JOB_PROGRESS, jobs, |update, job| {
        update.execute(params![
            job.status,
            job.attempts,
            job.error,
            job.result_text(),
            job.published_at.map(timestamp),
            job.started_at.map(timestamp),
            job.finished_at.map(timestamp),
            job.id,
        ])
    })
}

pub fn update_server_outcome(conn: &Connection, servers: &[&Server]) -> rusqlite::Result<()> {
    each(conn, super::UPDATE_SERVER_OUTCOME, servers, |update, server| {
        update.execute(params![
            server.status,
            server.container_id,
            server.data_exists,
            server.last_error,
            server.deleted_at.map(timestamp),
            server.purge_after.map(timestamp),
            timestamp(server.updated_at),
            server.id,
        ])
    })
}

pub fn delete_by_server(conn: &Connection, sql: &str, ids: &[ServerId]) -> rusqlite::Result<()> {
    each(conn, sql, ids, |delete, id| delete.execute([id]))
}

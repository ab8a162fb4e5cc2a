//! The PostgreSQL side of [`super::Tx`]: the same statements through sqlx,
//! in a transaction of the pool. Rows a write depends on are read with
//! `FOR UPDATE`, so two api replicas acting on one server or job take
//! turns: the second sees what the first committed.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use vsfleet_contract::{JobId, PortList, ServerId, ServerStatus};

use super::rows::{Checked, Job, NewServer, Server};
use super::{checked_sql, insert_server_sql};

/// The columns of `checked_sql!()`, in order.
type CheckedColumns =
    (i64, ServerStatus, String, Option<f64>, Option<i64>, PortList, Option<JobId>, Option<DateTime<Utc>>);

pub async fn checked(conn: &mut PgConnection, id: i64) -> Result<Option<Checked>, sqlx::Error> {
    // The lock first, the read after: a statement that waited for a row
    // lock sees the locked row anew, but its subqueries (the job in flight)
    // as they were when it started. The next statement sees what the
    // other transaction committed.
    sqlx::query("SELECT id FROM servers WHERE id = $1 FOR UPDATE").bind(id).execute(&mut *conn).await?;
    let row: Option<CheckedColumns> = sqlx::query_as(checked_sql!()).bind(id).fetch_optional(conn).await?;
    Ok(row.map(|(owner_id, status, host, cpus, memory_mb, ports, busy_job, last_job_at)| Checked {
        owner_id,
        status,
        host,
        spec: vsfleet_contract::ServerSpec { cpus, memory_mb: memory_mb.map(|m| m as u64), ports: ports.0 },
        busy_job,
        last_job_at,
    }))
}

pub async fn busy_job(conn: &mut PgConnection, server_id: i64) -> Result<Option<JobId>, sqlx::Error> {
    sqlx::query_scalar(super::BUSY_JOB).bind(server_id).fetch_optional(conn).await
}

/// Holds `key` until the transaction ends: racing creates of one owner or
/// on one host count each other's rows.
pub async fn lock(conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind(key).execute(conn).await.map(drop)
}

pub async fn insert_server(conn: &mut PgConnection, new: &NewServer) -> Result<Server, sqlx::Error> {
    let server: Server = sqlx::query_as(concat!(insert_server_sql!(), " RETURNING *"))
        .bind(new.owner_id)
        .bind(&new.name)
        .bind(&new.host)
        .bind(ServerStatus::Creating)
        .bind(new.spec.cpus)
        .bind(new.spec.memory_mb.map(|m| m as i64))
        .bind(PortList(new.spec.ports.clone()))
        .bind(new.created_at)
        .fetch_one(&mut *conn)
        .await?;
    for p in &new.spec.ports {
        sqlx::query(super::INSERT_PORT)
            .bind(&new.host)
            .bind(i32::from(p.host))
            .bind(server.id)
            .bind(i32::from(p.container))
            .execute(&mut *conn)
            .await?;
    }
    Ok(server)
}

pub async fn taken_ports(conn: &mut PgConnection, host: &str) -> Result<Vec<u16>, sqlx::Error> {
    let ports: Vec<i32> = sqlx::query_scalar(super::TAKEN_PORTS).bind(host).fetch_all(conn).await?;
    Ok(ports.into_iter().filter_map(|p| u16::try_from(p).ok()).collect())
}

pub async fn insert_jobs(conn: &mut PgConnection, jobs: &[&Job]) -> Result<(), sqlx::Error> {
    for job in jobs {
        super::pg::insert_job(&mut *conn, job).await?;
    }
    Ok(())
}

/// The row lock taken by [`checked`] serialises requests for one server,
/// so the condition here cannot change under the insert; the unique index
/// is the last word all the same.
pub async fn insert_job_if_allowed(
    conn: &mut PgConnection,
    job: &Job,
    allowed: &[ServerStatus],
) -> Result<bool, sqlx::Error> {
    let allowed: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    let done = sqlx::query(
        "INSERT INTO jobs (id, server_id, action, host, status, origin, payload, requested_by, created_at)
         SELECT $1, $2, $3, $4, 'queued', $5, $6, $7, $8
         WHERE EXISTS (SELECT 1 FROM servers WHERE id = $2 AND status = ANY($9))
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.server_id = $2 AND j.status IN ('queued', 'running'))",
    )
    .bind(job.id)
    .bind(job.server_id)
    .bind(job.action)
    .bind(&job.host)
    .bind(&job.origin)
    .bind(&job.payload)
    .bind(job.requested_by)
    .bind(job.created_at)
    .bind(allowed)
    .execute(conn)
    .await;
    match done {
        Ok(done) => Ok(done.rows_affected() == 1),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn set_status(
    conn: &mut PgConnection,
    id: ServerId,
    status: ServerStatus,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(super::SET_STATUS).bind(status).bind(at).bind(id).execute(conn).await.map(drop)
}

pub async fn mark_published(conn: &mut PgConnection, ids: &[JobId], at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let ids: Vec<String> = ids.iter().map(JobId::to_string).collect();
    sqlx::query("UPDATE jobs SET published_at = $1 WHERE id = ANY($2) AND published_at IS NULL")
        .bind(at)
        .bind(ids)
        .execute(conn)
        .await
        .map(drop)
}

/// Locked in id order, so two replicas recording overlapping batches wait
/// for each other instead of deadlocking.
pub async fn jobs_by_ids(conn: &mut PgConnection, ids: &[JobId]) -> Result<Vec<Job>, sqlx::Error> {
    let ids: Vec<String> = ids.iter().map(JobId::to_string).collect();
    sqlx::query_as("SELECT * FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE").bind(ids).fetch_all(conn).await
}

pub async fn servers_by_ids(conn: &mut PgConnection, ids: &[ServerId]) -> Result<Vec<Server>, sqlx::Error> {
    let ids: Vec<i64> = ids.iter().map(|id| id.as_i64()).collect();
    sqlx::query_as("SELECT * FROM servers WHERE id = ANY($1) ORDER BY id FOR UPDATE").bind(ids).fetch_all(conn).await
}

pub async fn update_job_progress(conn: &mut PgConnection, jobs: &[&Job]) -> Result<(), sqlx::Error> {
    for job in jobs {
        sqlx::query(super::UPDATE_JOB_PROGRESS)
            .bind(job.status)
            .bind(job.attempts)
            .bind(&job.error)
            .bind(&job.result)
            .bind(job.published_at)
            .bind(job.started_at)
            .bind(job.finished_at)
            .bind(job.id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub async fn update_server_outcome(conn: &mut PgConnection, servers: &[&Server]) -> Result<(), sqlx::Error> {
    for server in servers {
        sqlx::query(super::UPDATE_SERVER_OUTCOME)
            .bind(server.status)
            .bind(&server.container_id)
            .bind(server.data_exists)
            .bind(&server.last_error)
            .bind(server.deleted_at)
            .bind(server.purge_after)
            .bind(server.updated_at)
            .bind(server.id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub async fn delete_by_server(conn: &mut PgConnection, sql: &'static str, ids: &[ServerId]) -> Result<(), sqlx::Error> {
    for id in ids {
        sqlx::query(sql).bind(id).execute(&mut *conn).await?;
    }
    Ok(())
}

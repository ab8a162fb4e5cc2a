// The statements both backends run through sqlx, written once: this file
// is included by `lite` (SQLite) and `pg` (PostgreSQL), each of which
// defines `DB` and the `for_update!()` suffix first. Placeholders are `$n`,
// which both drivers number alike.

use chrono::{DateTime, Utc};
use sqlx::Executor;
use vsfleet_contract::{JobId, ServerStatus};

use crate::store::rows::{Account, Activity, Change, Cursor, Domain, InnerRow, Job, Known, Server, Token, User};

pub type Conn = <DB as sqlx::Database>::Connection;
pub type Pool = sqlx::Pool<DB>;

/// The one spelling of "a job in flight" in SQL, for a job row aliased `j`.
macro_rules! in_flight {
    () => {
        "j.status IN ('queued', 'running')"
    };
}

pub async fn ping<'e>(db: impl Executor<'e, Database = DB>) -> Result<(), sqlx::Error> {
    db.execute("SELECT 1").await.map(drop)
}

// ---- servers ----

pub async fn server<'e>(db: impl Executor<'e, Database = DB>, id: i64) -> Result<Option<Server>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM servers WHERE id = $1").bind(id).fetch_optional(db).await
}

/// The server's row, locked until the transaction ends where the backend
/// has row locks (SQLite's write transaction already holds the database).
pub async fn server_for_update(conn: &mut Conn, id: i64) -> Result<Option<Server>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT * FROM servers WHERE id = $1", for_update!())).bind(id).fetch_optional(conn).await
}

pub async fn servers<'e>(
    db: impl Executor<'e, Database = DB>,
    all: bool,
    owner: i64,
    include_deleted: bool,
    after: i64,
    limit: i64,
) -> Result<Vec<Server>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM servers WHERE ($1 OR owner_id = $2) AND ($3 OR status <> 'deleted') AND id > $4
         ORDER BY id LIMIT $5",
    )
    .bind(all)
    .bind(owner)
    .bind(include_deleted)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Servers per host among those that occupy one (everything but deleted).
pub async fn servers_per_host<'e>(db: impl Executor<'e, Database = DB>) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT host, COUNT(*) FROM servers WHERE status <> 'deleted' GROUP BY host").fetch_all(db).await
}

pub async fn servers_in<'e>(
    db: impl Executor<'e, Database = DB>,
    status: ServerStatus,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM servers WHERE status = $1 ORDER BY id").bind(status).fetch_all(db).await
}

pub async fn rename(conn: &mut Conn, id: i64, name: &str, at: DateTime<Utc>) -> Result<Server, sqlx::Error> {
    sqlx::query_as("UPDATE servers SET name = $1, updated_at = $2 WHERE id = $3 RETURNING *")
        .bind(name)
        .bind(at)
        .bind(id)
        .fetch_one(conn)
        .await
}

/// What Docker shows of a server: its status, container and data.
pub async fn set_observed(
    conn: &mut Conn,
    id: i64,
    status: ServerStatus,
    container_id: Option<&str>,
    data_exists: bool,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE servers SET status = $1, container_id = $2, data_exists = $3, updated_at = $4 WHERE id = $5")
        .bind(status)
        .bind(container_id)
        .bind(data_exists)
        .bind(at)
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
}

/// The host's servers as reconciliation compares them, locked.
pub async fn known_on_host(conn: &mut Conn, host: &str) -> Result<Vec<Known>, sqlx::Error> {
    // Locked first, read after: a statement that waited for a lock sees
    // its subqueries (the jobs in flight) as they were when it started.
    if !for_update!().is_empty() {
        sqlx::query(concat!("SELECT id FROM servers WHERE host = $1 ORDER BY id", for_update!()))
            .bind(host)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query_as(concat!(
        "SELECT s.id, s.status, s.container_id, s.data_exists, s.updated_at,
                EXISTS (SELECT 1 FROM jobs j WHERE j.server_id = s.id AND ",
        in_flight!(),
        ") AS busy
         FROM servers s WHERE s.host = $1 ORDER BY s.id"
    ))
    .bind(host)
    .fetch_all(conn)
    .await
}

/// Deleted servers past their retention, oldest first.
pub async fn purge_due<'e>(
    db: impl Executor<'e, Database = DB>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM servers WHERE status = 'deleted' AND purge_after <= $1 ORDER BY purge_after LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

// ---- jobs ----

pub async fn job<'e>(db: impl Executor<'e, Database = DB>, id: JobId) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM jobs WHERE id = $1").bind(id).fetch_optional(db).await
}

pub async fn job_in_flight<'e>(db: impl Executor<'e, Database = DB>, server_id: i64) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT * FROM jobs j WHERE j.server_id = $1 AND ",
        in_flight!(),
        " ORDER BY j.created_at LIMIT 1"
    ))
    .bind(server_id)
    .fetch_optional(db)
    .await
}

/// Every job in flight (at most one per server: a small set, on an index).
pub async fn jobs_in_flight<'e>(db: impl Executor<'e, Database = DB>) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT * FROM jobs j WHERE ", in_flight!())).fetch_all(db).await
}

/// A server's jobs, newest first, from after `after` (one of the server's jobs). The place
/// is compared as stored (no timestamp leaves the database).
pub async fn jobs_of<'e>(
    db: impl Executor<'e, Database = DB>,
    server_id: i64,
    after: Option<JobId>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(
        "SELECT j.* FROM jobs j WHERE j.server_id = $1 AND ($2 IS NULL OR EXISTS (
             SELECT 1 FROM jobs a WHERE a.id = $2 AND a.server_id = $1
             AND (j.created_at < a.created_at OR (j.created_at = a.created_at AND j.id > a.id))))
         ORDER BY j.created_at DESC, j.id LIMIT $3",
    )
    .bind(server_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Queued jobs JetStream has not acknowledged, oldest first, created before
/// `before` (younger ones are still being published by their request).
pub async fn unpublished<'e>(
    db: impl Executor<'e, Database = DB>,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM jobs WHERE published_at IS NULL AND status = 'queued' AND created_at < $1
         ORDER BY created_at LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn insert_job(conn: &mut Conn, job: &Job) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jobs (id, server_id, action, host, status, origin, attempts, error, result, payload,
         requested_by, created_at, published_at, started_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(job.id)
    .bind(job.server_id)
    .bind(job.action)
    .bind(&job.host)
    .bind(job.status)
    .bind(&job.origin)
    .bind(job.attempts)
    .bind(&job.error)
    .bind(&job.result)
    .bind(&job.payload)
    .bind(job.requested_by)
    .bind(job.created_at)
    .bind(job.published_at)
    .bind(job.started_at)
    .bind(job.finished_at)
    .execute(conn)
    .await
    .map(drop)
}

// ---- inner containers ----

pub async fn inner_containers<'e>(
    db: impl Executor<'e, Database = DB>,
    server_id: i64,
) -> Result<Vec<InnerRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT docker_id, image, names, state, status, ports, labels, created, updated_at
         FROM server_containers WHERE server_id = $1 ORDER BY names",
    )
    .bind(server_id)
    .fetch_all(db)
    .await
}

/// Replaces a server's inner containers with `report`'s.
pub async fn replace_inner_containers(
    conn: &mut Conn,
    server_id: i64,
    containers: &[vsfleet_contract::InnerContainer],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM server_containers WHERE server_id = $1").bind(server_id).execute(&mut *conn).await?;
    for c in containers {
        sqlx::query(
            "INSERT INTO server_containers (server_id, docker_id, image, names, state, status, ports, labels, created,
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(server_id)
        .bind(&c.id)
        .bind(&c.image)
        .bind(&c.names)
        .bind(&c.state)
        .bind(&c.status)
        .bind(&c.ports)
        .bind(&c.labels)
        .bind(&c.created)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Drops inner-container rows not refreshed since `before`.
pub async fn drop_stale_containers<'e>(
    db: impl Executor<'e, Database = DB>,
    before: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM server_containers WHERE updated_at < $1").bind(before).execute(db).await?.rows_affected())
}

// ---- the change feed ----

pub async fn changes_after<'e>(
    db: impl Executor<'e, Database = DB>,
    all: bool,
    owner: i64,
    after: Cursor,
    limit: i64,
) -> Result<Vec<Change>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT id, tx, at, owner_id, server_id, job_id, action, status FROM changes WHERE ",
        after_cursor!(),
        " AND ($3 OR owner_id = $4) AND ",
        settled!(),
        " ORDER BY tx, id LIMIT $5"
    ))
    .bind(after.tx)
    .bind(after.id)
    .bind(all)
    .bind(owner)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn changes_head<'e>(db: impl Executor<'e, Database = DB>) -> Result<Cursor, sqlx::Error> {
    let head: Option<Cursor> =
        sqlx::query_as(concat!("SELECT tx, id FROM changes WHERE ", settled!(), " ORDER BY tx DESC, id DESC LIMIT 1"))
            .fetch_optional(db)
            .await?;
    Ok(head.unwrap_or_default())
}

/// Rows are recorded in about id order, so the old ones are a prefix of the
/// ids: found by walking from the oldest, without an index on `at`. The
/// newest row always stays: SQLite's next id is the largest one plus one.
pub async fn drop_changes<'e>(db: impl Executor<'e, Database = DB>, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM changes WHERE id < COALESCE(
                   (SELECT id FROM changes WHERE at >= $1 ORDER BY id LIMIT 1),
                   (SELECT MAX(id) FROM changes))";
    Ok(sqlx::query(sql).bind(before).execute(db).await?.rows_affected())
}

// ---- domains ----

pub async fn domains_of<'e>(db: impl Executor<'e, Database = DB>, server_id: i64) -> Result<Vec<Domain>, sqlx::Error> {
    sqlx::query_as("SELECT server_id, name, created_at FROM domains WHERE server_id = $1 ORDER BY name")
        .bind(server_id)
        .fetch_all(db)
        .await
}

pub async fn domains_page<'e>(
    db: impl Executor<'e, Database = DB>,
    server_id: i64,
    after: &str,
    limit: i64,
) -> Result<Vec<Domain>, sqlx::Error> {
    sqlx::query_as(
        "SELECT server_id, name, created_at FROM domains WHERE server_id = $1 AND name > $2 ORDER BY name LIMIT $3",
    )
    .bind(server_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn ports_on<'e>(db: impl Executor<'e, Database = DB>, host: &str) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar(super::TAKEN_PORTS).bind(host).fetch_all(db).await
}

/// The domains of the servers with ids in `from..=to` (one page of a
/// server list), of every server when `all`, else of `owner`'s.
pub async fn domains_visible<'e>(
    db: impl Executor<'e, Database = DB>,
    all: bool,
    owner: i64,
    from: i64,
    to: i64,
) -> Result<Vec<Domain>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.server_id, d.name, d.created_at FROM domains d JOIN servers s ON s.id = d.server_id
         WHERE ($1 OR s.owner_id = $2) AND d.server_id BETWEEN $3 AND $4 ORDER BY d.server_id, d.name",
    )
    .bind(all)
    .bind(owner)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}

/// Adds a domain to a server; a name another server has is a unique violation.
pub async fn insert_domain(conn: &mut Conn, server_id: i64, name: &str, at: DateTime<Utc>) -> Result<Domain, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO domains (server_id, name, created_at) VALUES ($1, $2, $3) RETURNING server_id, name, created_at",
    )
    .bind(server_id)
    .bind(name)
    .bind(at)
    .fetch_one(conn)
    .await
}

/// Removes a server's domain; whether there was one.
pub async fn delete_domain(conn: &mut Conn, server_id: i64, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM domains WHERE server_id = $1 AND name = $2")
        .bind(server_id)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---- users and tokens ----


pub async fn user_by_token_hash<'e>(db: impl Executor<'e, Database = DB>, hash: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(db)
    .await
}

pub async fn account<'e>(db: impl Executor<'e, Database = DB>, id: i64) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, is_admin, created_at, disabled_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn account_by_email<'e>(
    db: impl Executor<'e, Database = DB>,
    email: &str,
) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, is_admin, created_at, disabled_at FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(db)
        .await
}

pub async fn accounts<'e>(
    db: impl Executor<'e, Database = DB>,
    after: i64,
    limit: i64,
) -> Result<Vec<Account>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, is_admin, created_at, disabled_at FROM users WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Inserts a user; a taken email is a unique violation.
pub async fn insert_account(
    conn: &mut Conn,
    email: &str,
    is_admin: bool,
    at: DateTime<Utc>,
) -> Result<Account, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO users (email, is_admin, created_at) VALUES ($1, $2, $3)
         RETURNING id, email, is_admin, created_at, disabled_at",
    )
    .bind(email)
    .bind(is_admin)
    .bind(at)
    .fetch_one(conn)
    .await
}

/// Sets or clears `disabled_at` (disabling twice keeps the first time).
pub async fn set_disabled(conn: &mut Conn, id: i64, disabled: bool, at: DateTime<Utc>) -> Result<Account, sqlx::Error> {
    sqlx::query_as(
        "UPDATE users SET disabled_at = CASE WHEN $1 THEN COALESCE(disabled_at, $2) END WHERE id = $3
         RETURNING id, email, is_admin, created_at, disabled_at",
    )
    .bind(disabled)
    .bind(at)
    .bind(id)
    .fetch_one(conn)
    .await
}

pub async fn insert_token(conn: &mut Conn, user_id: i64, hash: &str, at: DateTime<Utc>) -> Result<Token, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3)
         RETURNING id, user_id, created_at, revoked_at",
    )
    .bind(user_id)
    .bind(hash)
    .bind(at)
    .fetch_one(conn)
    .await
}

pub async fn token<'e>(db: impl Executor<'e, Database = DB>, id: i64) -> Result<Option<Token>, sqlx::Error> {
    sqlx::query_as("SELECT id, user_id, created_at, revoked_at FROM api_tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn tokens_of<'e>(
    db: impl Executor<'e, Database = DB>,
    user_id: i64,
    after: i64,
    limit: i64,
) -> Result<Vec<Token>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, created_at, revoked_at FROM api_tokens WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Revokes a token (revoking twice keeps the first time).
pub async fn revoke_token(conn: &mut Conn, id: i64, at: DateTime<Utc>) -> Result<Token, sqlx::Error> {
    sqlx::query_as(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2
         RETURNING id, user_id, created_at, revoked_at",
    )
    .bind(at)
    .bind(id)
    .fetch_one(conn)
    .await
}

// ---- activity ----

pub async fn record_activity<'e>(
    db: impl Executor<'e, Database = DB>,
    entry: &crate::store::rows::Entry,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO activity (at, user_id, actor, action, target, result, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(at)
    .bind(entry.user_id)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(&entry.result)
    .bind(&entry.detail)
    .execute(db)
    .await
    .map(drop)
}

/// Up to `limit` entries older than `before` (all when `None`), of
/// `user_id`'s log or of every log when `None`, newest first.
pub async fn activity<'e>(
    db: impl Executor<'e, Database = DB>,
    user_id: Option<i64>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Activity>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM activity WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

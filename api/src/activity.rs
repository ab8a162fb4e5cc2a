//! The activity log (seed 003 §3.6): who did what to what, when, and how it
//! ended. Every lifecycle request (accepted or refused), every token and
//! user change, and job outcomes. Recording is one INSERT, written in the
//! transaction of the change it describes when there is one: on the
//! writer's connection with [`record`], through sqlx with [`record_sqlx`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Sqlite;

/// One entry to record; plain data so any module can build one.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Whose log it belongs to: the owner of the server, token or account
    /// concerned, or the actor when the target is not theirs to see.
    pub user_id: Option<i64>,
    /// The user's email, `scheduler`, `operator` (the command line), a host.
    pub actor: String,
    /// `create`, `start` … `force_stop`, `rename`, `token.create`, …
    pub action: String,
    /// `server:42`, `token:7`, `user:3`.
    pub target: String,
    /// `accepted`, `refused: <code>`, `succeeded`, `failed: <reason>`.
    pub result: String,
    pub detail: Option<String>,
}

impl Entry {
    pub fn new(
        user_id: Option<i64>,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        result: impl Into<String>,
    ) -> Self {
        Self {
            user_id,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            result: result.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

const INSERT: &str =
    "INSERT INTO activity (at, user_id, actor, action, target, result, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Records `entry` on the writer's connection ([`crate::writer`]), in the
/// caller's transaction.
pub fn record(conn: &rusqlite::Connection, entry: &Entry) -> rusqlite::Result<()> {
    conn.prepare_cached(INSERT)?.execute(rusqlite::params![
        crate::writer::timestamp(Utc::now()),
        entry.user_id,
        entry.actor,
        entry.action,
        entry.target,
        entry.result,
        entry.detail,
    ])?;
    Ok(())
}

/// Records `entry` through sqlx (a transaction, or the write pool).
pub async fn record_sqlx<'e, E>(db: E, entry: &Entry) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query(INSERT)
        .bind(crate::writer::timestamp(Utc::now()))
        .bind(entry.user_id)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.result)
        .bind(&entry.detail)
        .execute(db)
        .await?;
    Ok(())
}

/// An entry as stored and listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Activity {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub user_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub detail: Option<String>,
}

/// A page of the log, newest first.
pub struct Page {
    pub entries: Vec<Activity>,
    /// The `before` cursor of the next page; `None` on the last one.
    pub next: Option<i64>,
}

/// Up to `limit` entries older than `before` (all when `None`), of
/// `user_id`'s log or of every log when `None`.
pub async fn page<'e, E>(db: E, user_id: Option<i64>, before: Option<i64>, limit: u32) -> Result<Page, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let mut entries: Vec<Activity> = sqlx::query_as(
        "SELECT * FROM activity WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR id < ?2)
         ORDER BY id DESC LIMIT ?3",
    )
    .bind(user_id)
    .bind(before)
    .bind(i64::from(limit) + 1)
    .fetch_all(db)
    .await?;
    let next = if entries.len() > limit as usize {
        entries.truncate(limit as usize);
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Page { entries, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::scratch;

    #[tokio::test]
    async fn pages_run_newest_first_and_end_with_no_cursor() {
        let (_dir, db) = scratch().await;
        for n in 0..5 {
            let owner = if n % 2 == 0 { Some(1) } else { Some(2) };
            record_sqlx(&db.write, &Entry::new(owner, "u@example.test", "start", format!("server:{n}"), "accepted"))
                .await
                .unwrap();
        }
        let first = page(&db.read, None, None, 2).await.unwrap();
        let targets: Vec<&str> = first.entries.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["server:4", "server:3"]);
        let second = page(&db.read, None, first.next, 2).await.unwrap();
        let third = page(&db.read, None, second.next, 2).await.unwrap();
        assert_eq!(third.entries.len(), 1);
        assert_eq!(third.next, None);
        let own = page(&db.read, Some(2), None, 10).await.unwrap();
        assert!(own.entries.iter().all(|e| e.user_id == Some(2)) && own.entries.len() == 2);
    }
}

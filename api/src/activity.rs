//! The activity log (seed 003 §3.6): who did what to what, when, and how it
//! ended. Every lifecycle request (accepted or refused), every token and
//! user change, and job outcomes. Recording is one INSERT, written in the
//! transaction of the change it describes when there is one.

use crate::store::{Store, StoreError};

pub use crate::store::{Activity, Entry};

/// A page of the log, newest first.
pub struct Page {
    pub entries: Vec<Activity>,
    /// The `before` cursor of the next page; `None` on the last one.
    pub next: Option<i64>,
}

/// Up to `limit` entries older than `before` (all when `None`), of
/// `user_id`'s log or of every log when `None`.
pub async fn page(db: &Store, user_id: Option<i64>, before: Option<i64>, limit: u32) -> Result<Page, StoreError> {
    let mut entries = db.activity(user_id, before, i64::from(limit) + 1).await?;
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
    use crate::store::scratch;

    #[tokio::test]
    async fn pages_run_newest_first_and_end_with_no_cursor() {
        let (_dir, db) = scratch().await;
        for n in 0..5 {
            let owner = if n % 2 == 0 { Some(1) } else { Some(2) };
            let entry = Entry::new(owner, "u@example.test", "start", format!("server:{n}"), "accepted");
            db.write(move |tx| Box::pin(async move { tx.record_activity(&entry).await })).await.unwrap();
        }
        let first = page(&db, None, None, 2).await.unwrap();
        let targets: Vec<&str> = first.entries.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["server:4", "server:3"]);
        let second = page(&db, None, first.next, 2).await.unwrap();
        let third = page(&db, None, second.next, 2).await.unwrap();
        assert_eq!(third.entries.len(), 1);
        assert_eq!(third.next, None);
        let own = page(&db, Some(2), None, 10).await.unwrap();
        assert!(own.entries.iter().all(|e| e.user_id == Some(2)) && own.entries.len() == 2);
    }
}

//! Cursor pagination of the lists: `?limit=N&after=CURSOR`, answered with
//! a page and `next`, the `after` of the page that follows (null on the
//! last). The cursor is the place of the page's last row in the list's
//! order (keyset), so rows added or removed meanwhile neither repeat nor
//! push another row out of the walk.

use serde::Deserialize;
use utoipa::IntoParams;
use vsfleet_contract::JobId;

use crate::error::ApiError;

/// Rows per page unless asked.
pub const DEFAULT: u32 = 100;
/// The most rows one page holds.
pub const MAX: u32 = 500;

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct PageQuery {
    /// Rows per page: 100 unless asked, at most 500.
    limit: Option<u32>,
    /// The `next` of the page before; none for the first page.
    after: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(DEFAULT).clamp(1, MAX))
    }

    /// What to fetch: one row more than the page, to know whether another page follows.
    pub fn fetch(&self) -> i64 {
        self.limit() + 1
    }

    fn bad(&self) -> ApiError {
        ApiError::BadRequest(format!("after: {:?} is not a cursor of this list", self.after.as_deref().unwrap_or("")))
    }

    /// For lists in id order: the id to go on after (0: from the start).
    pub fn after_id(&self) -> Result<i64, ApiError> {
        match &self.after {
            None => Ok(0),
            Some(text) => text.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| self.bad()),
        }
    }

    /// For a server's jobs: the job to go on after.
    pub fn after_job(&self) -> Result<Option<JobId>, ApiError> {
        self.after.as_deref().map(|text| JobId::parse_canonical(text).map_err(|_| self.bad())).transpose()
    }

    /// For lists in text order: the text to go on after ("": from the start).
    pub fn after_text(&self) -> &str {
        self.after.as_deref().unwrap_or("")
    }

    /// The page out of `rows` (fetched with [`Self::fetch`]), and the
    /// cursor of the next page when there is one.
    pub fn split<T>(&self, mut rows: Vec<T>, cursor: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
        let limit = self.limit() as usize;
        if rows.len() <= limit {
            return (rows, None);
        }
        rows.truncate(limit);
        let next = rows.last().map(cursor);
        (rows, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(limit: Option<u32>, after: Option<&str>) -> PageQuery {
        PageQuery { limit, after: after.map(str::to_owned) }
    }

    #[test]
    fn a_page_says_where_the_next_begins_and_the_last_says_none() {
        let q = query(Some(2), None);
        assert_eq!(q.fetch(), 3);
        assert_eq!(q.split(vec![1, 2, 3], |n| n.to_string()), (vec![1, 2], Some("2".into())));
        assert_eq!(q.split(vec![1, 2], |n| n.to_string()), (vec![1, 2], None));
        assert_eq!(query(Some(0), None).limit(), 1);
        assert_eq!(query(Some(9999), None).limit(), i64::from(MAX));
        assert_eq!(query(None, None).limit(), i64::from(DEFAULT));
    }

    #[test]
    fn a_cursor_that_is_not_one_is_refused() {
        assert_eq!(query(None, Some("17")).after_id().unwrap(), 17);
        assert!(query(None, Some("-1")).after_id().is_err());
        assert!(query(None, Some("x")).after_id().is_err());
        assert!(query(None, Some("not-a-uuid")).after_job().is_err());
        assert_eq!(query(None, None).after_job().unwrap(), None);
    }
}

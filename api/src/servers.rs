//! Servers as the API shows them: who may see one, with its host's
//! liveness, without host paths for tenants. The rows are
//! [`crate::store::Server`], the source of truth for what should exist
//! (seed 001).

use crate::error::ApiError;
use crate::store::Store;
use crate::store::User;

pub use crate::store::{NewServer, Server};

impl Server {
    pub fn visible_to(&self, user: &User) -> bool {
        user.is_admin || self.owner_id == user.id
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

/// The server if `user` may see it; someone else's server is "not found".
pub async fn get_visible(store: &Store, user: &User, id: i64) -> Result<Server, ApiError> {
    match store.server(id).await? {
        Some(server) if server.visible_to(user) => Ok(server),
        _ => Err(ApiError::NotFound("server")),
    }
}

/// The servers `user` may see.
pub async fn list(
    store: &Store,
    user: &User,
    include_deleted: bool,
    after: i64,
    limit: i64,
) -> Result<Vec<Server>, ApiError> {
    Ok(store.servers(user.is_admin, user.id, include_deleted, after, limit).await?)
}

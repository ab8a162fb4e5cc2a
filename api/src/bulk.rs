//! Admin bulk actions (seed 004's wanted-and-never-built bulk operations):
//! one action over many servers, each through the same request path as a
//! single one (same checks, same jobs), answered server by server.

use vsfleet_contract::{Action, ServerStatus};

use crate::error::ApiError;
use crate::jobs::Job;
use crate::lifecycle::{self, Actor, Lifecycle};
use crate::users::User;

/// The most servers one bulk request may name or select.
pub const MAX_SERVERS: usize = 1000;

/// Which servers: listed, or every one in a status.
pub enum Selection {
    Ids(Vec<i64>),
    Status(ServerStatus),
}

/// Requests `action` for each selected server, in id order; one refusal
/// does not stop the rest.
pub async fn run(
    state: &Lifecycle,
    user: &User,
    action: Action,
    selection: Selection,
    keep_data: bool,
) -> Result<Vec<(i64, Result<Job, ApiError>)>, ApiError> {
    if !user.is_admin {
        return Err(ApiError::NotFound("route"));
    }
    let invalid = |message: String| ApiError::invalid_field("invalid_bulk", "action", message);
    match action {
        Action::Start
        | Action::Stop
        | Action::Restart
        | Action::Delete
        | Action::Restore
        | Action::Purge
        | Action::Cleanup => {}
        other => return Err(invalid(format!("{other} cannot be requested in bulk"))),
    }
    if keep_data && action != Action::Purge {
        return Err(invalid("keep_data goes only with purge".into()));
    }
    let mut ids = match selection {
        Selection::Ids(ids) => ids,
        Selection::Status(status) => state.db.servers_in(status).await?,
    };
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > MAX_SERVERS {
        return Err(ApiError::invalid_field(
            "invalid_bulk",
            "ids",
            format!("{} servers selected; a bulk request takes at most {MAX_SERVERS}", ids.len()),
        ));
    }
    let mut outcomes = Vec::with_capacity(ids.len());
    for id in ids {
        let outcome = match action {
            Action::Purge => lifecycle::purge(state, Actor::User(user), id, keep_data).await,
            _ => lifecycle::request(state, Actor::User(user), id, action).await,
        };
        outcomes.push((id, outcome));
    }
    tracing::info!(%action, servers = outcomes.len(), accepted = outcomes.iter().filter(|(_, o)| o.is_ok()).count(), "bulk request");
    Ok(outcomes)
}

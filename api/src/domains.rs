//! A server's domain names (seed 003 §3.5): its owner or an admin adds and
//! removes them while the server is live; each name belongs to one server
//! (the database's unique index decides between racing adds); they go when
//! the server is deleted ([`crate::job_events`]).

use vsfleet_contract::DomainName;

use crate::activity::Entry;
use crate::error::ApiError;
use crate::store::{Domain, Store, User, transaction};

fn parse(name: &str) -> Result<DomainName, ApiError> {
    DomainName::parse(name.trim()).map_err(|e| ApiError::invalid_field("invalid_domain", "name", e))
}

/// The activity entry of a change to a server's domains, in its owner's log.
fn logged(action: &str, user: &User, owner: i64, server_id: i64, name: &DomainName) -> Entry {
    Entry::new(Some(owner), user.email.clone(), action, format!("server:{server_id}"), "succeeded")
        .with_detail(name.as_str())
}

/// Adds `name` to the server; 409 `domain_taken` when any server has it.
pub async fn add(db: &Store, user: &User, server_id: i64, name: &str) -> Result<Domain, ApiError> {
    let name = parse(name)?;
    let now = crate::store::now();
    transaction!(db, |q, conn| {
        let server = match q::server_for_update(&mut *conn, server_id).await? {
            Some(server) if server.visible_to(user) => server,
            _ => return Err(ApiError::NotFound("server")),
        };
        if !server.status.is_live() {
            return Err(ApiError::InvalidTransition { action: "add a domain", status: server.status });
        }
        let domain = match q::insert_domain(&mut *conn, server_id, name.as_str(), now).await {
            Ok(domain) => domain,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ApiError::Conflict {
                    code: "domain_taken",
                    message: format!("{name} is already a domain of a server; remove it there first"),
                });
            }
            Err(e) => return Err(e.into()),
        };
        q::record_activity(&mut *conn, &logged("domain.add", user, server.owner_id, server_id, &name), now).await?;
        Ok::<_, ApiError>(domain)
    })
}

/// The server's domains, if `user` may see the server.
pub async fn list(db: &Store, user: &User, server_id: i64, after: &str, limit: i64) -> Result<Vec<Domain>, ApiError> {
    crate::servers::get_visible(db, user, server_id).await?;
    Ok(db.domains_page(server_id, after, limit).await?)
}

/// Removes `name` from the server and returns it as it was stored; 404
/// when the server does not have it.
pub async fn remove(db: &Store, user: &User, server_id: i64, name: &str) -> Result<DomainName, ApiError> {
    let name = parse(name)?;
    let now = crate::store::now();
    transaction!(db, |q, conn| {
        let server = match q::server_for_update(&mut *conn, server_id).await? {
            Some(server) if server.visible_to(user) => server,
            _ => return Err(ApiError::NotFound("server")),
        };
        if !q::delete_domain(&mut *conn, server_id, name.as_str()).await? {
            return Err(ApiError::NotFound("domain"));
        }
        q::record_activity(&mut *conn, &logged("domain.remove", user, server.owner_id, server_id, &name), now).await?;
        Ok::<_, ApiError>(name)
    })
}

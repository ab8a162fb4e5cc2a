use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use vsfleet_contract::{Action, ServerId};

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, CurrentUser, OptionalJson, job_id, server_id};
use super::views::{self, DomainView, InnerContainerView, JobView, ServerView};
use crate::bulk::Selection;
use crate::error::ApiError;
use crate::lifecycle::{Actor, Wanted};
use crate::store::{Domain, User};
use crate::{domains, lifecycle, monitor, servers};

type Reply = Result<(StatusCode, Json<Value>), ApiError>;

fn ok(status: StatusCode, body: Value) -> Reply {
    Ok((status, Json(body)))
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers and the broker is connected; the body
/// says which is down.
pub async fn readyz(State(state): State<AppState>) -> Reply {
    let database = state.db.ping().await.is_ok();
    let broker = state.lifecycle.nats.connection_state() == async_nats::connection::State::Connected;
    let status = if database && broker { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    ok(status, json!({ "database": database, "broker": broker }))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateServer {
    name: String,
    cpus: Option<f64>,
    memory_mb: Option<u64>,
    /// `[{"container": 22}]`: each gets a host port on the server's host.
    #[serde(default)]
    ports: Vec<WantedPort>,
    /// Admins only: the host to put the server on.
    host: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WantedPort {
    container: u16,
}

pub async fn create_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateServer>,
) -> Reply {
    let wanted =
        Wanted { cpus: body.cpus, memory_mb: body.memory_mb, ports: body.ports.iter().map(|p| p.container).collect() };
    let (server, job) = lifecycle::create(&state.lifecycle, &user, &body.name, wanted, body.host.as_deref()).await?;
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    let (server, job) = (ServerView::new(server, &user, alive.as_deref()), JobView::new(job, &user));
    ok(StatusCode::ACCEPTED, json!({ "server": server, "job": job }))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    include_deleted: bool,
}

pub async fn list_servers(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Reply {
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    let mut domains: HashMap<ServerId, Vec<Domain>> = HashMap::new();
    for domain in state.db.domains_visible(user.is_admin, user.id).await? {
        domains.entry(domain.server_id).or_default().push(domain);
    }
    let list: Vec<_> = servers::list(&state.db, &user, q.include_deleted)
        .await?
        .into_iter()
        .map(|s| {
            let own = domains.remove(&s.id).unwrap_or_default();
            ServerView::new(s, &user, alive.as_deref()).with_domains(own)
        })
        .collect();
    ok(StatusCode::OK, json!({ "servers": list }))
}

pub async fn get_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let server = servers::get_visible(&state.db, &user, server_id(&id)?).await?;
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    ok(
        StatusCode::OK,
        json!({ "server": with_domains(&state, ServerView::new(server, &user, alive.as_deref())).await? }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    name: String,
}

pub async fn rename_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Rename>,
) -> Reply {
    let server = lifecycle::rename(&state.lifecycle, &user, server_id(&id)?, &body.name).await?;
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    ok(
        StatusCode::OK,
        json!({ "server": with_domains(&state, ServerView::new(server, &user, alive.as_deref())).await? }),
    )
}

pub async fn delete_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let job = lifecycle::request(&state.lifecycle, Actor::User(&user), server_id(&id)?, Action::Delete).await?;
    accepted(&state, job, &user).await
}

#[derive(Deserialize)]
pub struct ActionQuery {
    /// With stop: kill now, without waiting behind the job in flight.
    #[serde(default)]
    force: bool,
}

pub async fn server_action(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath((id, action)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ActionQuery>,
) -> Reply {
    let id = server_id(&id)?;
    // Create has its own route and delete is `DELETE /v1/servers/{id}`.
    let action = match action.parse::<Action>() {
        // Purge has its own route (it takes a body).
        Ok(a @ (Action::Start | Action::Stop | Action::Restart | Action::Restore | Action::Cleanup)) => a,
        _ => return Err(ApiError::NotFound("route")),
    };
    if action == Action::Stop && query.force {
        let server = lifecycle::force_stop(&state.lifecycle, &user, id).await?;
        let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
        return ok(
            StatusCode::OK,
            json!({ "server": with_domains(&state, ServerView::new(server, &user, alive.as_deref())).await? }),
        );
    }
    let job = lifecycle::request(&state.lifecycle, Actor::User(&user), id, action).await?;
    accepted(&state, job, &user).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PurgeOptions {
    /// Forget the server but leave its archives on the host.
    #[serde(default)]
    keep_data: bool,
}

/// `POST /v1/servers/{id}/purge`, with an optional `{"keep_data": true}`.
pub async fn purge_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    OptionalJson(options): OptionalJson<PurgeOptions>,
) -> Reply {
    let job = lifecycle::purge(&state.lifecycle, Actor::User(&user), server_id(&id)?, options.keep_data).await?;
    accepted(&state, job, &user).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    action: String,
    /// The servers, by id; or `status`: every server in it.
    ids: Option<Vec<i64>>,
    status: Option<String>,
    #[serde(default)]
    keep_data: bool,
}

/// `POST /v1/servers/bulk` (admins): one job or one refusal per server.
pub async fn bulk(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<BulkRequest>,
) -> Reply {
    let action = body.action.parse::<Action>().map_err(|e| ApiError::invalid_field("invalid_bulk", "action", e))?;
    let selection = match (body.ids, body.status) {
        (Some(ids), None) => Selection::Ids(ids),
        (None, Some(status)) => {
            Selection::Status(status.parse().map_err(|e| ApiError::invalid_field("invalid_bulk", "status", e))?)
        }
        _ => return Err(ApiError::invalid_field("invalid_bulk", "ids", "give either ids or status")),
    };
    let outcomes = crate::bulk::run(&state.lifecycle, &user, action, selection, body.keep_data).await?;
    let accepted = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
    let results: Vec<_> = outcomes
        .into_iter()
        .map(|(id, outcome)| match outcome {
            Ok(job) => json!({ "server_id": id, "job": JobView::new(job, &user) }),
            Err(refused) => {
                let refused = refused.for_viewer(&user);
                json!({ "server_id": id, "error": refused.body()["error"] })
            }
        })
        .collect();
    let refused = results.len() - accepted;
    ok(StatusCode::OK, json!({ "accepted": accepted, "refused": refused, "results": results }))
}

/// The view with the server's domains.
async fn with_domains(state: &AppState, view: ServerView) -> Result<ServerView, ApiError> {
    let domains = state.db.domains_of(view.id.as_i64()).await?;
    Ok(view.with_domains(domains))
}

/// A 202 for an accepted job; when its host is not alive the job waits on
/// the host's queue, and the answer says so.
async fn accepted(state: &AppState, job: crate::jobs::Job, user: &User) -> Reply {
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    let job = JobView::new(job, user);
    if alive.is_none_or(|alive| alive.iter().any(|p| p.host == job.host)) {
        return ok(StatusCode::ACCEPTED, json!({ "job": job }));
    }
    let warning = format!("host {} is not alive: the job waits on its queue and runs when the host is back", job.host);
    ok(StatusCode::ACCEPTED, json!({ "job": job, "warning": warning }))
}

pub async fn server_jobs(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let id = server_id(&id)?;
    servers::get_visible(&state.db, &user, id).await?;
    let list: Vec<_> = state.db.jobs_of(id).await?.into_iter().map(|j| JobView::new(j, &user)).collect();
    ok(StatusCode::OK, json!({ "jobs": list }))
}

/// A job is visible to its requester, the server's owner, and admins. Jobs
/// outlive purged servers, so the requester is checked first.
pub async fn get_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let id = job_id(&id)?;
    let job = state.db.job(id).await?.ok_or(ApiError::NotFound("job"))?;
    let visible = user.is_admin
        || job.requested_by == Some(user.id)
        || state.db.server(job.server_id.as_i64()).await?.is_some_and(|s| s.owner_id == user.id);
    if !visible {
        return Err(ApiError::NotFound("job"));
    }
    ok(StatusCode::OK, json!({ "job": JobView::new(job, &user) }))
}

/// The containers inside a server, as the monitor last saw them.
pub async fn server_containers(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let id = server_id(&id)?;
    servers::get_visible(&state.db, &user, id).await?;
    ok(
        StatusCode::OK,
        json!({ "containers": views::all::<_, InnerContainerView>(monitor::list(&state.db, id).await?) }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    name: String,
}

/// `POST /v1/servers/{id}/domains` `{"name": "app.example.com"}`.
pub async fn add_domain(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewDomain>,
) -> Reply {
    let domain = domains::add(&state.db, &user, server_id(&id)?, &body.name).await?;
    ok(StatusCode::CREATED, json!({ "domain": DomainView::from(domain) }))
}

pub async fn server_domains(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let list = domains::list(&state.db, &user, server_id(&id)?).await?;
    ok(StatusCode::OK, json!({ "domains": views::all::<_, DomainView>(list) }))
}

pub async fn remove_domain(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Reply {
    let removed = domains::remove(&state.db, &user, server_id(&id)?, &name).await?;
    ok(StatusCode::OK, json!({ "removed": removed }))
}

/// Worker hosts (admins only): alive or not, and what their last sync found.
pub async fn hosts(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Reply {
    if !user.is_admin {
        return Err(ApiError::NotFound("route"));
    }
    let max_age = 3 * state.settings.worker.heartbeat_secs as i64;
    let alive = state.lifecycle.registry.alive(&state.lifecycle.hosts, max_age).await?;
    let syncs = state.syncs.lock().expect("not poisoned").clone();
    let mut names: Vec<String> = alive.iter().map(|p| p.host.clone()).chain(syncs.keys().cloned()).collect();
    names.sort();
    names.dedup();
    let list: Vec<Value> = names
        .into_iter()
        .map(|h| {
            let presence = alive.iter().find(|p| p.host == h);
            json!({
                "host": h,
                "alive": presence.is_some(),
                "degraded": presence.and_then(|p| p.degraded.as_deref()),
                "capacity": presence.and_then(|p| p.capacity),
                "last_sync": syncs.get(&h),
            })
        })
        .collect();
    // Messages from NATS that failed the api's checks, by kind (in the dead letters).
    ok(StatusCode::OK, json!({ "hosts": list, "rejected_messages": state.inbound.counts() }))
}

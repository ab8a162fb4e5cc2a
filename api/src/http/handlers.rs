use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use vsfleet_contract::{Action, ServerId};

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, CurrentUser, OptionalJson, job_id, server_id};
use super::page::PageQuery;
use super::views::bodies::*;
use super::views::{self, DomainView, InnerContainerView, JobView, ServerView};
use crate::bulk::Selection;
use crate::error::ApiError;
use crate::error::ErrorBody;
use crate::lifecycle::{Actor, Wanted};
use crate::store::{Domain, User};
use crate::{domains, lifecycle, monitor, servers};

pub type Reply<T> = Result<(StatusCode, Json<T>), ApiError>;

pub fn ok<T>(status: StatusCode, body: T) -> Reply<T> {
    Ok((status, Json(body)))
}

/// A 202: `body`, with the job to follow in `Location`.
pub struct Accepted<T>(pub vsfleet_contract::JobId, pub T);

impl<T: serde::Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> Response {
        let location = format!("/v1/jobs/{}", self.0);
        (StatusCode::ACCEPTED, [(LOCATION, location)], Json(self.1)).into_response()
    }
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers and the broker is connected; the body
/// says which is down.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses(
    (status = 200, description = "ready", body = Readiness),
    (status = 503, description = "the database or the broker is down", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.db.ping().await.is_ok();
    let broker = state.lifecycle.nats.connection_state() == async_nats::connection::State::Connected;
    if database && broker {
        return (StatusCode::OK, Json(Readiness { database, broker })).into_response();
    }
    let retry = [(axum::http::header::RETRY_AFTER, crate::error::RETRY_AFTER_SECS)];
    (StatusCode::SERVICE_UNAVAILABLE, retry, Json(Readiness { database, broker })).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[derive(Deserialize, ToSchema)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WantedPort {
    container: u16,
}

/// Creates a server: committed as `creating`, then its create job is sent to its host.
#[utoipa::path(post, path = "/v1/servers", tag = "servers", request_body = CreateServer, responses(
    (status = 202, description = "accepted: the create job is queued", body = CreatedBody, headers(("Location" = String, description = "the job: `/v1/jobs/{id}`"))),
    (status = "default", description = "refused", body = ErrorBody)))]
pub async fn create_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateServer>,
) -> Result<Accepted<CreatedBody>, ApiError> {
    let wanted =
        Wanted { cpus: body.cpus, memory_mb: body.memory_mb, ports: body.ports.iter().map(|p| p.container).collect() };
    let (server, job) = lifecycle::create(&state.lifecycle, &user, &body.name, wanted, body.host.as_deref()).await?;
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    let (server, job) = (ServerView::new(server, &user, alive.as_deref()), JobView::new(job, &user));
    Ok(Accepted(job.id, CreatedBody { server, job }))
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Include soft-deleted servers.
    #[serde(default)]
    include_deleted: bool,
}

/// The caller's servers (every server for an admin), by id, a page at a time.
#[utoipa::path(get, path = "/v1/servers", tag = "servers", params(ListQuery, PageQuery), responses(
    (status = 200, body = ServersBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn list_servers(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Reply<ServersBody> {
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    let after = page.after_id()?;
    let rows = servers::list(&state.db, &user, q.include_deleted, after, page.fetch()).await?;
    let (rows, next) = page.split(rows, |s| s.id.to_string());
    // The page's servers' domains only: ids are ascending, the page is (after, last].
    let mut domains: HashMap<ServerId, Vec<Domain>> = HashMap::new();
    if let Some(last) = rows.last() {
        for domain in state.db.domains_visible(user.is_admin, user.id, after + 1, last.id.as_i64()).await? {
            domains.entry(domain.server_id).or_default().push(domain);
        }
    }
    let list: Vec<_> = rows
        .into_iter()
        .map(|s| {
            let own = domains.remove(&s.id).unwrap_or_default();
            ServerView::new(s, &user, alive.as_deref()).with_domains(own)
        })
        .collect();
    ok(StatusCode::OK, ServersBody { servers: list, next })
}

#[utoipa::path(get, path = "/v1/servers/{id}", tag = "servers", params(ServerPath), responses(
    (status = 200, body = ServerBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn get_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply<ServerBody> {
    let server = servers::get_visible(&state.db, &user, server_id(&id)?).await?;
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    ok(
        StatusCode::OK,
        ServerBody { server: with_domains(&state, ServerView::new(server, &user, alive.as_deref())).await? },
    )
}

/// A server id in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServerPath {
    /// The server's id: a positive integer.
    #[allow(dead_code)]
    id: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    name: String,
}

#[utoipa::path(patch, path = "/v1/servers/{id}", tag = "servers", params(ServerPath), request_body = Rename,
    responses((status = 200, body = ServerBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn rename_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Rename>,
) -> Reply<ServerBody> {
    let server = lifecycle::rename(&state.lifecycle, &user, server_id(&id)?, &body.name).await?;
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    ok(
        StatusCode::OK,
        ServerBody { server: with_domains(&state, ServerView::new(server, &user, alive.as_deref())).await? },
    )
}

/// Soft-deletes a server: its container goes, its data is archived, and
/// it can be restored until `purge_after`.
#[utoipa::path(delete, path = "/v1/servers/{id}", tag = "servers", params(ServerPath), responses(
    (status = 202, body = JobBody, headers(("Location" = String, description = "the job: `/v1/jobs/{id}`"))), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn delete_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Accepted<JobBody>, ApiError> {
    let job = lifecycle::request(&state.lifecycle, Actor::User(&user), server_id(&id)?, Action::Delete).await?;
    accepted(&state, job, &user).await
}

#[derive(Deserialize, IntoParams)]
pub struct ActionQuery {
    /// With stop: kill now, without waiting behind the job in flight.
    #[serde(default)]
    force: bool,
}

/// An action path segment.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum PathAction {
    Start,
    Stop,
    Restart,
    Restore,
    Cleanup,
}

/// Start, stop, restart, restore, or clean up (`docker system prune`
/// inside a running server). `stop?force=true` kills the container now and
/// answers 200 with the server.
#[utoipa::path(post, path = "/v1/servers/{id}/{action}", tag = "servers",
    params(ServerPath, ("action" = PathAction, Path, description = "the action"), ActionQuery),
    responses(
        (status = 202, description = "accepted", body = JobBody, headers(("Location" = String, description = "the job: `/v1/jobs/{id}`"))),
        (status = 200, description = "stopped at once (`force`)", body = ServerBody),
        (status = "default", description = "refused", body = ErrorBody)))]
pub async fn server_action(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath((id, action)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ActionQuery>,
) -> Result<Response, ApiError> {
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
        let server = with_domains(&state, ServerView::new(server, &user, alive.as_deref())).await?;
        return Ok((StatusCode::OK, Json(ServerBody { server })).into_response());
    }
    let job = lifecycle::request(&state.lifecycle, Actor::User(&user), id, action).await?;
    Ok(accepted(&state, job, &user).await?.into_response())
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeOptions {
    /// Forget the server but leave its archives on the host.
    #[serde(default)]
    keep_data: bool,
}

/// Purges a deleted or failed server: its data and archives go, and its
/// rows. The body is optional; `keep_data` (admins) leaves the archives.
#[utoipa::path(post, path = "/v1/servers/{id}/purge", tag = "servers", params(ServerPath),
    request_body(content = Option<PurgeOptions>, description = "optional"),
    responses((status = 202, body = JobBody, headers(("Location" = String, description = "the job: `/v1/jobs/{id}`"))), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn purge_server(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    OptionalJson(options): OptionalJson<PurgeOptions>,
) -> Result<Accepted<JobBody>, ApiError> {
    let job = lifecycle::purge(&state.lifecycle, Actor::User(&user), server_id(&id)?, options.keep_data).await?;
    accepted(&state, job, &user).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    action: String,
    /// The servers, by id; or `status`: every server in it.
    ids: Option<Vec<i64>>,
    status: Option<String>,
    #[serde(default)]
    keep_data: bool,
}

/// One action on many servers (admins): one job or one refusal per server.
#[utoipa::path(post, path = "/v1/servers/bulk", tag = "servers", request_body = BulkRequest, responses(
    (status = 200, body = BulkBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn bulk(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<BulkRequest>,
) -> Reply<BulkBody> {
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
            Ok(job) => BulkResult { server_id: id, job: Some(JobView::new(job, &user)), error: None },
            Err(refused) => BulkResult { server_id: id, job: None, error: Some(refused.for_viewer(&user).detail()) },
        })
        .collect();
    let refused = results.len() - accepted;
    ok(StatusCode::OK, BulkBody { accepted, refused, results })
}

/// The view with the server's domains.
async fn with_domains(state: &AppState, view: ServerView) -> Result<ServerView, ApiError> {
    let domains = state.db.domains_of(view.id.as_i64()).await?;
    Ok(view.with_domains(domains))
}

/// A 202 for an accepted job; when its host is not alive the job waits on
/// the host's queue, and the answer says so.
async fn accepted(state: &AppState, job: crate::jobs::Job, user: &User) -> Result<Accepted<JobBody>, ApiError> {
    let alive = lifecycle::live_hosts_or_none(&state.lifecycle).await;
    let job = JobView::new(job, user);
    let warning = (!alive.is_none_or(|alive| alive.iter().any(|p| p.host == job.host)))
        .then(|| format!("host {} is not alive: the job waits on its queue and runs when the host is back", job.host));
    Ok(Accepted(job.id, JobBody { job, warning }))
}

/// The server's jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/servers/{id}/jobs", tag = "jobs", params(ServerPath, PageQuery), responses(
    (status = 200, body = JobsBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn server_jobs(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Reply<JobsBody> {
    let id = server_id(&id)?;
    servers::get_visible(&state.db, &user, id).await?;
    let after = page.after_job()?;
    // A job of another server, or none, is no place in this list: refused
    // rather than answered with an empty last page.
    if let Some(after) = after
        && state.db.job(after).await?.is_none_or(|j| j.server_id.as_i64() != id)
    {
        return Err(ApiError::BadRequest(format!("after: {after} is not a job of server {id}")));
    }
    let (rows, next) = page.split(state.db.jobs_of(id, after, page.fetch()).await?, |j| j.id.to_string());
    ok(StatusCode::OK, JobsBody { jobs: rows.into_iter().map(|j| JobView::new(j, &user)).collect(), next })
}

/// A job is visible to its requester, the server's owner, and admins. Jobs
/// outlive purged servers, so the requester is checked first.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, format = "uuid", description = "the job's id")),
    responses((status = 200, body = JobBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply<JobBody> {
    let id = job_id(&id)?;
    let job = state.db.job(id).await?.ok_or(ApiError::NotFound("job"))?;
    let visible = user.is_admin
        || job.requested_by == Some(user.id)
        || state.db.server(job.server_id.as_i64()).await?.is_some_and(|s| s.owner_id == user.id);
    if !visible {
        return Err(ApiError::NotFound("job"));
    }
    ok(StatusCode::OK, JobBody { job: JobView::new(job, &user), warning: None })
}

/// The containers inside a server, as the monitor last saw them (at most
/// 1000, all in one answer).
#[utoipa::path(get, path = "/v1/servers/{id}/containers", tag = "servers", params(ServerPath), responses(
    (status = 200, body = ContainersBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn server_containers(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Reply<ContainersBody> {
    let id = server_id(&id)?;
    servers::get_visible(&state.db, &user, id).await?;
    let containers = views::all::<_, InnerContainerView>(monitor::list(&state.db, id).await?);
    ok(StatusCode::OK, ContainersBody { containers })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// `app.example.com`
    name: String,
}

/// Adds a domain name to a server.
#[utoipa::path(post, path = "/v1/servers/{id}/domains", tag = "domains", params(ServerPath), request_body = NewDomain,
    responses((status = 201, body = DomainBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn add_domain(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewDomain>,
) -> Reply<DomainBody> {
    let domain = domains::add(&state.db, &user, server_id(&id)?, &body.name).await?;
    ok(StatusCode::CREATED, DomainBody { domain: DomainView::from(domain) })
}

/// The server's domain names, by name, a page at a time.
#[utoipa::path(get, path = "/v1/servers/{id}/domains", tag = "domains", params(ServerPath, PageQuery), responses(
    (status = 200, body = DomainsBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn server_domains(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Reply<DomainsBody> {
    let rows = domains::list(&state.db, &user, server_id(&id)?, page.after_text(), page.fetch()).await?;
    let (rows, next) = page.split(rows, |d| d.name.clone());
    ok(StatusCode::OK, DomainsBody { domains: views::all::<_, DomainView>(rows), next })
}

#[utoipa::path(delete, path = "/v1/servers/{id}/domains/{name}", tag = "domains",
    params(ServerPath, ("name" = String, Path, description = "the domain name")),
    responses((status = 200, body = RemovedBody), (status = "default", description = "refused", body = ErrorBody)))]
pub async fn remove_domain(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Reply<RemovedBody> {
    let removed = domains::remove(&state.db, &user, server_id(&id)?, &name).await?;
    ok(StatusCode::OK, RemovedBody { removed: removed.to_string() })
}

/// Worker hosts (admins only): alive or not, and what their last sync found.
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", responses(
    (status = 200, body = HostsBody), (status = "default", description = "refused (a user gets 404)", body = ErrorBody)))]
pub async fn hosts(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Reply<HostsBody> {
    if !user.is_admin {
        return Err(ApiError::NotFound("route"));
    }
    let max_age = 3 * state.settings.worker.heartbeat_secs as i64;
    let alive = state.lifecycle.registry.alive(&state.lifecycle.hosts, max_age).await?;
    let syncs = state.syncs.lock().expect("not poisoned").clone();
    let mut names: Vec<String> = alive.iter().map(|p| p.host.clone()).chain(syncs.keys().cloned()).collect();
    names.sort();
    names.dedup();
    let hosts = names
        .into_iter()
        .map(|h| {
            let presence = alive.iter().find(|p| p.host == h);
            HostView {
                alive: presence.is_some(),
                degraded: presence.and_then(|p| p.degraded.clone()),
                capacity: presence.and_then(|p| p.capacity),
                last_sync: syncs.get(&h).cloned(),
                host: h,
            }
        })
        .collect();
    ok(StatusCode::OK, HostsBody { hosts, rejected_messages: state.inbound.counts() })
}

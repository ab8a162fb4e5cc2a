//! Turning a request into a job: check ownership and state, commit the job
//! row with the server's state change in one transaction (shared with the
//! requests queued beside it, see [`crate::store`]), then publish.

use async_nats::connection::State as NatsState;
use chrono::Utc;
use tracing::Instrument as _;
use vsfleet_contract::{Action, HostPresence, JobId, ServerId, ServerName, ServerSpec, ServerStatus, step};

use crate::activity::Entry;
use crate::error::ApiError;
use crate::jobs::{self, Job, NewJob};
use crate::servers::{self, NewServer, Server};
use crate::store::{Checked, Store, StoreError, Tx, transaction};
use crate::users::User;

/// What accepting requests needs: the database, NATS (the broker's state,
/// forced stops), the publisher, the live hosts and the settings. Cheap to
/// clone; the HTTP handlers, the schedule and the events recorder share it.
#[derive(Clone)]
pub struct Lifecycle {
    pub db: Store,
    pub nats: async_nats::Client,
    pub dispatcher: crate::dispatch::Dispatcher,
    pub settings: std::sync::Arc<vsfleet_contract::Settings>,
    /// The live hosts, followed from `hosts`.
    pub registry: crate::hosts::Registry,
    pub hosts: async_nats::jetstream::kv::Store,
}

/// Who asks for a job.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A user through the API: sees their own servers, or all as admin.
    User(&'a User),
    /// vsfleet itself (auto-purge, orphan removal): sees every server.
    Scheduler,
}

impl Actor<'_> {
    fn origin(self) -> &'static str {
        match self {
            Actor::User(_) => "api",
            Actor::Scheduler => "scheduler",
        }
    }

    fn user_id(self) -> Option<i64> {
        match self {
            Actor::User(user) => Some(user.id),
            Actor::Scheduler => None,
        }
    }

    /// How the activity log names the actor.
    fn name(self) -> String {
        match self {
            Actor::User(user) => user.email.clone(),
            Actor::Scheduler => "scheduler".to_owned(),
        }
    }
}

/// What the activity log says of a request: accepted changes belong to the
/// server's owner (who then sees what an admin did to their server),
/// refusals to the one refused (a refusal may concern a server they cannot see).
#[derive(Debug, Clone)]
struct Note {
    actor: String,
    actor_id: Option<i64>,
    action: &'static str,
    target: String,
}

impl Note {
    fn new(actor: Actor<'_>, action: &'static str, server: Option<i64>) -> Self {
        let target = server.map_or_else(|| "server:new".to_owned(), |id| format!("server:{id}"));
        Self { actor: actor.name(), actor_id: actor.user_id(), action, target }
    }

    fn done(&self, owner: i64, target: String, result: &str, detail: String) -> Entry {
        Entry::new(Some(owner), self.actor.clone(), self.action, target, result).with_detail(detail)
    }

    fn refused(&self, error: &ApiError) -> Entry {
        Entry::new(self.actor_id, self.actor.clone(), self.action, self.target.clone(), error.as_refusal())
            .with_detail(error.to_string())
    }
}

/// Records a request refused before it reached a transaction, and returns
/// the refusal. A failure to record is logged, never the client's answer.
/// Internal errors are not refusals and are not logged here (the server log
/// has them).
async fn refuse<T>(state: &Lifecycle, note: &Note, error: ApiError) -> Result<T, ApiError> {
    if matches!(error, ApiError::Internal(_) | ApiError::Corrupt(_)) {
        return Err(error);
    }
    let entry = note.refused(&error);
    if let Err(e) = state.db.write(move |tx| Box::pin(async move { tx.record_activity(&entry).await })).await {
        tracing::warn!(error = format!("{e:#}"), "recording a refused request in the activity log failed");
    }
    Err(error)
}

/// Records a refusal in the transaction that refused it, and returns it.
async fn refuse_in<T>(tx: &mut Tx<'_>, note: &Note, refused: ApiError) -> Result<Result<T, ApiError>, StoreError> {
    tx.record_activity(&note.refused(&refused)).await?;
    Ok(Err(refused))
}

/// Refuses before anything is written when the broker is unreachable: the
/// outbox would deliver the job later, but an operator expects a request
/// made during an outage to be either refused now or carried out.
fn ensure_broker(state: &Lifecycle) -> Result<(), ApiError> {
    if state.nats.connection_state() == NatsState::Connected {
        Ok(())
    } else {
        Err(ApiError::Unavailable {
            code: "broker_unavailable",
            message: "the job broker (NATS) is unreachable; nothing was accepted, try again shortly".into(),
        })
    }
}

/// The hosts whose heartbeat is recent (three heartbeats), with their
/// health and capacity.
pub async fn live_hosts(state: &Lifecycle) -> Result<Vec<HostPresence>, ApiError> {
    let max_age = 3 * state.settings.worker.heartbeat_secs as i64;
    state.registry.alive(&state.hosts, max_age).await.map_err(|e| ApiError::Unavailable {
        code: "broker_unavailable",
        message: format!("cannot read the live hosts from NATS: {e}"),
    })
}

/// The live hosts for an answer (`host_alive`, the lost-host warning),
/// from the registry's memory: no round trip on the request path. `None`
/// while the watch has delivered nothing yet (just after start).
pub async fn live_hosts_or_none(state: &Lifecycle) -> Option<Vec<HostPresence>> {
    state.registry.alive_known(3 * state.settings.worker.heartbeat_secs as i64)
}

/// Where a new server goes: the host an admin pinned, if it can take it,
/// else the live, healthy host with room and the fewest servers. The
/// writer checks the room again in the insert's transaction.
async fn place(state: &Lifecycle, pinned: Option<&str>) -> Result<Placement, ApiError> {
    let alive = live_hosts(state).await?;
    let load = state.db.servers_per_host().await?;
    let count = |host: &str| load.iter().find(|(h, _)| h == host).map_or(0, |(_, n)| *n);
    let room = |p: &HostPresence| p.capacity.is_none_or(|c| count(&p.host) < i64::from(c));
    if let Some(host) = pinned {
        if let Err(e) = vsfleet_contract::subjects::check_host_id(host) {
            return Err(ApiError::invalid_field("invalid_host", "host", e));
        }
        let conflict = |code, message: String| Err(ApiError::Conflict { code, message });
        return match alive.iter().find(|p| p.host == host) {
            None => {
                conflict("host_not_alive", format!("host {host} is not alive; a new server can only go to a live host"))
            }
            Some(p) if p.degraded.is_some() => conflict(
                "host_degraded",
                format!("host {host} is degraded ({}); it takes no new servers", p.degraded.as_deref().unwrap_or("")),
            ),
            Some(p) if !room(p) => conflict(
                "host_full",
                format!("host {host} has {} servers, its capacity", p.capacity.unwrap_or_default()),
            ),
            Some(p) => Ok(Placement { host: p.host.clone(), capacity: p.capacity }),
        };
    }
    // A degraded host (Docker unreachable) would only hold the create in
    // its queue: prefer any healthy one.
    let healthy: Vec<&HostPresence> = alive.iter().filter(|p| p.degraded.is_none()).collect();
    if let Some(best) = healthy.iter().filter(|p| room(p)).min_by_key(|p| count(&p.host)) {
        return Ok(Placement { host: best.host.clone(), capacity: best.capacity });
    }
    Err(ApiError::Unavailable {
        code: "no_host_available",
        message: match (alive.first(), healthy.is_empty()) {
            (None, _) => "no worker host is alive to place the server on".into(),
            (Some(_), false) => format!("every live host is at its capacity ({} hosts)", healthy.len()),
            (Some(p), true) => format!(
                "no worker host can take a server now: {} is degraded ({})",
                p.host,
                p.degraded.as_deref().unwrap_or("")
            ),
        },
    })
}

struct Placement {
    host: String,
    capacity: Option<u32>,
}

/// What a create asks for; the limits not given are the configured defaults.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    /// Container ports to publish, each on a host port allocated here.
    pub ports: Vec<u16>,
}

/// Creates a server: the name, the limits (the configured defaults for
/// those not given, within the configured maxima) and, for a user who is
/// not an admin, the number of live servers they have are checked; the
/// last in the transaction of the insert, so racing creates cannot both
/// pass it. Published ports get host ports the host offered and no other
/// server holds (see [`crate::ports`]).
pub async fn create(
    state: &Lifecycle,
    user: &User,
    name: &str,
    requested: Wanted,
    pinned: Option<&str>,
) -> Result<(Server, Job), ApiError> {
    let note = Note::new(Actor::User(user), "create", None);
    let name = match ServerName::parse(name) {
        Ok(name) => name,
        Err(e) => return refuse(state, &note, ApiError::invalid_field("invalid_name", "name", e)).await,
    };
    let api = &state.settings.api;
    let mut spec = ServerSpec {
        cpus: requested.cpus.or(Some(api.default_cpus)),
        memory_mb: requested.memory_mb.or(Some(api.default_memory_mb)),
        ports: Vec::new(),
    };
    if let Err(e) = spec
        .validate_within(api.max_cpus, api.max_memory_mb)
        .and_then(|()| vsfleet_contract::ports::check_ports(requested.ports.iter().copied()))
    {
        return refuse(state, &note, ApiError::invalid_field("invalid_spec", e.field(), e)).await;
    }
    if let Err(e) = ensure_broker(state) {
        return refuse(state, &note, e).await;
    }
    if pinned.is_some() && !user.is_admin {
        let e = ApiError::invalid_field("host_not_allowed", "host", "only an admin may choose a server's host");
        return refuse(state, &note, e).await;
    }
    let Placement { host, capacity } = match place(state, pinned).await {
        Ok(placement) => placement,
        Err(e) => return refuse(state, &note, e.for_viewer(user)).await,
    };
    let wanted_ports = requested.ports;
    let offered = match wanted_ports.len() {
        0 => Vec::new(),
        n => match crate::ports::offer(&state.nats, &state.settings.subjects(), &state.db, &host, n).await {
            Ok(offered) => offered,
            Err(e) => return refuse(state, &note, e.for_viewer(user)).await,
        },
    };

    let (owner, origin, job_id) = (user.id, Actor::User(user).origin(), JobId::new());
    let max_servers = (!user.is_admin).then_some(i64::from(api.max_servers_per_user));
    let limit = api.deadlines.of(Action::Create);
    let placed = host.clone();
    let accepted = state
        .db
        .write(move |tx| {
            Box::pin(async move {
                let refuse = async |tx: &mut Tx<'_>, refused: ApiError| refuse_in(tx, &note, refused).await;
                tx.lock_for_create(owner, &placed).await?;
                if let Some(max) = max_servers
                    && tx.live_count(owner).await? >= max
                {
                    let refused = ApiError::invalid_field(
                        "limit_reached",
                        "servers",
                        format!("a user may have {max} servers that are not deleted; delete one first"),
                    );
                    return refuse(tx, refused).await;
                }
                // Racing creates placed on one host cannot both take its last place.
                if let Some(capacity) = capacity
                    && tx.host_count(&placed).await? >= i64::from(capacity)
                {
                    let refused = ApiError::Unavailable {
                        code: "no_host_available",
                        message: format!("host {placed} reached its capacity ({capacity}) meanwhile; try again"),
                    };
                    return refuse(tx, refused).await;
                }
                let Some(published) = crate::ports::allocate(tx, &placed, &wanted_ports, &offered).await? else {
                    let refused = ApiError::Unavailable {
                        code: "no_port_available",
                        message: format!(
                            "host {placed} has no free port left in its range for {} published ports; try again",
                            wanted_ports.len()
                        ),
                    };
                    return refuse(tx, refused).await;
                };
                spec.ports = published;
                let created_at = crate::store::now();
                let new = NewServer { owner_id: owner, name: name.as_str().to_owned(), host: placed, spec, created_at };
                let server = tx.insert_server(&new).await?;
                let server_id = server.id;
                let job = Job::queued(NewJob {
                    id: job_id,
                    server_id: server.id,
                    action: Action::Create,
                    host: server.host.clone(),
                    origin,
                    payload: jobs::payload(
                        server_id,
                        job_id,
                        Some(new.spec.clone()),
                        created_at,
                        limit,
                        Default::default(),
                    ),
                    requested_by: Some(owner),
                    created_at,
                });
                tx.insert_jobs(&[&job]).await?;
                let target = format!("server:{}", server.id);
                tx.record_activity(&note.done(owner, target, "accepted", format!("job {}", job.id))).await?;
                Ok(Ok((server, job)))
            })
        })
        .instrument(step!("commit"))
        .await?;
    let (server, job) = accepted?;
    tracing::info!(server_id = %server.id, job_id = %job.id, host, "server accepted for creation");
    publish(state, &job).await;
    Ok((server, job))
}

/// Accepts `action` on a server the actor may act on. The checks and the
/// insert run together on the writer, in the transaction it commits with
/// the requests queued beside it: no state change can slip in between, and
/// the request needs no read of its own (each sqlx read is a hand-off to a
/// connection thread and back).
pub async fn request(state: &Lifecycle, actor: Actor<'_>, server_id: i64, action: Action) -> Result<Job, ApiError> {
    request_job(state, actor, server_id, action, false).await
}

/// A purge; with `keep_data` the host keeps the server's archives and only
/// the server's rows go (its id is never reused).
pub async fn purge(state: &Lifecycle, actor: Actor<'_>, server_id: i64, keep_data: bool) -> Result<Job, ApiError> {
    // Kept archives count against no quota and only an operator can remove
    // them: not a tenant's choice.
    if keep_data && matches!(actor, Actor::User(user) if !user.is_admin) {
        let refused = ApiError::invalid_field(
            "keep_data_not_allowed",
            "keep_data",
            "only an admin may keep a purged server's data",
        );
        return refuse(state, &Note::new(actor, "purge", Some(server_id)), refused).await;
    }
    request_job(state, actor, server_id, Action::Purge, keep_data).await
}

async fn request_job(
    state: &Lifecycle,
    actor: Actor<'_>,
    server_id: i64,
    action: Action,
    keep_data: bool,
) -> Result<Job, ApiError> {
    let note = Note::new(actor, action.as_str(), Some(server_id));
    if let Err(e) = ensure_broker(state) {
        return refuse(state, &note, e).await;
    }
    let Ok(typed_id) = ServerId::new(server_id) else {
        return refuse(state, &note, ApiError::NotFound("server")).await;
    };
    let viewer = match actor {
        Actor::User(user) => Some((user.id, user.is_admin)),
        Actor::Scheduler => None,
    };
    let (origin, requested_by) = (actor.origin(), actor.user_id());
    let limit = state.settings.api.deadlines.of(action);
    let accepted = state
        .db
        .write(move |tx| {
            Box::pin(async move {
                let refuse = async |tx: &mut Tx<'_>, refused: ApiError| refuse_in(tx, &note, refused).await;
                let Some(found) = tx.checked(server_id).await? else {
                    return refuse(tx, ApiError::NotFound("server")).await;
                };
                if let Err(refused) = check(&found, viewer, action) {
                    return refuse(tx, refused).await;
                }
                let owner = found.owner_id;
                let id = JobId::new();
                // Start and restart may rebuild the container, so they carry the spec.
                let spec = matches!(action, Action::Start | Action::Restart).then(|| found.spec.clone());
                let created_at = jobs::created_at(found.last_job_at);
                let live_data = action == Action::Purge && found.status == ServerStatus::Failed;
                let purge = jobs::Purge { keep_data, live_data };
                let payload = jobs::payload(typed_id, id, spec, created_at, limit, purge);
                let job = Job::queued(NewJob {
                    id,
                    server_id: typed_id,
                    action,
                    host: found.host,
                    origin,
                    payload,
                    requested_by,
                    created_at,
                });
                let allowed = action.allowed_statuses();
                // Checked above in this transaction; the conditional insert and
                // the unique index still guard the rule where it is stored.
                if !tx.insert_job_if_allowed(&job, &allowed).await? {
                    return Ok(Err(ApiError::Internal(anyhow::anyhow!(
                        "job for server {server_id} refused without a reason"
                    ))));
                }
                if let Some(status) = action.in_flight_status() {
                    tx.set_status(typed_id, status, created_at).await?;
                }
                let done = note.done(owner, note.target.clone(), "accepted", format!("job {}", job.id));
                tx.record_activity(&done).await?;
                Ok(Ok(job))
            })
        })
        .instrument(step!("commit"))
        .await?;
    let job = accepted?;
    tracing::info!(server_id, job_id = %job.id, %action, origin = actor.origin(), "job accepted");
    publish(state, &job).await;
    Ok(job)
}

/// Visibility, jobs in flight, then the state machine, in that order (the
/// job in flight is the more useful answer while a create or delete runs).
/// `viewer` is the user's id and admin flag; `None` sees every server.
fn check(found: &Checked, viewer: Option<(i64, bool)>, action: Action) -> Result<(), ApiError> {
    if viewer.is_some_and(|(id, admin)| !admin && found.owner_id != id) {
        return Err(ApiError::NotFound("server"));
    }
    if let Some(busy) = &found.busy_job {
        return Err(ApiError::JobInFlight(*busy));
    }
    if !action.allowed_from(found.status) {
        return Err(ApiError::InvalidTransition { action: action.as_str(), status: found.status });
    }
    Ok(())
}

/// Asks `host` to remove the stopped containers of a server that has no
/// live row (an orphan). No state check: there is no state to check.
pub async fn reap(state: &Lifecycle, host: &str, server_id: ServerId) -> Result<Job, ApiError> {
    ensure_broker(state)?;
    let id = server_id.as_i64();
    let limit = state.settings.api.deadlines.of(Action::Reap);
    let (job_id, created_at) = (JobId::new(), crate::store::now());
    let job = Job::queued(NewJob {
        id: job_id,
        server_id,
        action: Action::Reap,
        host: host.to_owned(),
        origin: Actor::Scheduler.origin(),
        payload: jobs::payload(server_id, job_id, None, created_at, limit, Default::default()),
        requested_by: None,
        created_at,
    });
    let accepted = state
        .db
        .write(move |tx| {
            Box::pin(async move {
                if let Some(busy) = tx.busy_job(id).await? {
                    return Ok(Err(ApiError::JobInFlight(busy)));
                }
                tx.insert_jobs(&[&job]).await?;
                Ok(Ok(job))
            })
        })
        .await?;
    let job = accepted?;
    tracing::warn!(%server_id, host, job_id = %job.id, "removing an orphan container");
    publish(state, &job).await;
    Ok(job)
}

/// Kills the server's container at once, without waiting behind the job in
/// flight (a stuck or hung server can always be stopped). The host answers
/// directly over NATS; the server's row follows unless a job is in flight,
/// which records its own outcome.
pub async fn force_stop(state: &Lifecycle, user: &User, server_id: i64) -> Result<Server, ApiError> {
    let outcome = kill(state, user, server_id).await.map_err(|e| e.for_viewer(user));
    let note = Note::new(Actor::User(user), "force_stop", Some(server_id));
    let entry = match &outcome {
        Ok(server) => note.done(server.owner_id, note.target.clone(), "succeeded", format!("now {}", server.status)),
        Err(ApiError::Internal(_) | ApiError::Corrupt(_)) => return outcome,
        Err(refused) => note.refused(refused),
    };
    if let Err(e) = state.db.write(move |tx| Box::pin(async move { tx.record_activity(&entry).await })).await {
        tracing::warn!(error = format!("{e:#}"), "recording a forced stop in the activity log failed");
    }
    outcome
}

async fn kill(state: &Lifecycle, user: &User, server_id: i64) -> Result<Server, ApiError> {
    ensure_broker(state)?;
    let server = servers::get_visible(&state.db, user, server_id).await?;
    if !server.status.may_force_stop() {
        return Err(ApiError::InvalidTransition { action: "stop", status: server.status });
    }
    let subject = state.settings.subjects().kill(&server.host);
    let body = serde_json::json!({ "server_id": server_id });
    let reply: vsfleet_contract::KillReply =
        crate::control::ask(&state.nats, subject, &body, &server.host, "a forced stop").await?;
    let observed = reply
        .result
        .map_err(|why| crate::control::unavailable(format!("host {} could not kill the server: {why}", server.host)))?;
    tracing::warn!(server_id, host = server.host, "server force-stopped");
    let seen = vsfleet_contract::Observed {
        server_id: ServerId::new(server_id).map_err(anyhow::Error::from)?,
        host: server.host.clone(),
        at: Utc::now(),
        cause: "forced stop".into(),
        observed,
    };
    crate::reconcile::apply_observed(&state.db, &seen).await?;
    servers::get_visible(&state.db, user, server_id).await
}

/// Renames a server; no job. The change and its activity entry (or the
/// refusal's) are one transaction.
pub async fn rename(state: &Lifecycle, user: &User, server_id: i64, name: &str) -> Result<Server, ApiError> {
    let note = Note::new(Actor::User(user), "rename", Some(server_id));
    let parsed = ServerName::parse(name);
    transaction!(&state.db, |q, conn| {
        let outcome = match &parsed {
            Err(e) => Err(ApiError::invalid_field("invalid_name", "name", e)),
            Ok(name) => match q::server_for_update(&mut *conn, server_id).await? {
                Some(server) if server.visible_to(user) => {
                    if !server.status.may_rename() {
                        Err(ApiError::InvalidTransition { action: "rename", status: server.status })
                    } else {
                        Ok(q::rename(&mut *conn, server_id, name.as_str(), crate::store::now()).await?)
                    }
                }
                _ => Err(ApiError::NotFound("server")),
            },
        };
        let entry = match &outcome {
            Ok(server) => note.done(server.owner_id, note.target.clone(), "succeeded", format!("to {:?}", server.name)),
            Err(ApiError::Internal(_) | ApiError::Corrupt(_)) => return outcome,
            Err(refused) => note.refused(refused),
        };
        q::record_activity(&mut *conn, &entry, crate::store::now()).await?;
        Ok::<_, ApiError>(outcome)
    })?
}

/// Publishes after commit. A failure is not the client's problem: the job
/// is committed and the outbox publishes it once NATS answers.
async fn publish(state: &Lifecycle, job: &Job) {
    if let Err(error) = state.dispatcher.publish(job).instrument(step!("publish")).await {
        tracing::warn!(job_id = %job.id, error = format!("{error:#}"), "publish failed; the outbox will retry");
    }
}

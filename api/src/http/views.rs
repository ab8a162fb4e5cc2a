//! The API's response bodies: what a viewer reads of each row. Rows are
//! the store's; these are the API's, so a column added to a table shows in
//! no answer until it is added here, and what tenants must not read
//! (host paths in errors) is taken out on the way.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use vsfleet_contract::{Action, HostPresence, JobId, JobStatus, PublishedPort, ServerId, ServerStatus};

use crate::store::{Account, Activity, Domain, InnerRow, Job, Server, Token, User};

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerView {
    pub id: ServerId,
    pub name: String,
    pub owner_id: i64,
    pub host: String,
    pub status: ServerStatus,
    pub container_id: Option<String>,
    pub data_exists: bool,
    pub cpus: Option<f64>,
    pub memory_mb: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_after: Option<DateTime<Utc>>,
    /// Whether the server's host is alive (a heartbeat within three); absent
    /// while the api has not heard from the hosts yet (just after start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_alive: Option<bool>,
    /// Its domain names, in order.
    pub domains: Vec<String>,
    /// Its published TCP ports: `{"container": 22, "host": 20000}`, the
    /// host port on its host.
    pub ports: Vec<PublishedPort>,
}

impl ServerView {
    pub fn with_domains(mut self, domains: Vec<Domain>) -> Self {
        self.domains = domains.into_iter().map(|d| d.name).collect();
        self
    }

    /// `server` as `viewer` may read it, with its host's liveness from `alive`.
    pub fn new(server: Server, viewer: &User, alive: Option<&[HostPresence]>) -> Self {
        let host_alive = alive.map(|alive| alive.iter().any(|p| p.host == server.host));
        let s = server.for_viewer(viewer);
        Self {
            id: s.id,
            name: s.name,
            owner_id: s.owner_id,
            host: s.host,
            status: s.status,
            container_id: s.container_id,
            data_exists: s.data_exists,
            cpus: s.cpus,
            memory_mb: s.memory_mb,
            last_error: s.last_error,
            created_at: s.created_at,
            updated_at: s.updated_at,
            deleted_at: s.deleted_at,
            purge_after: s.purge_after,
            host_alive,
            domains: Vec::new(),
            ports: s.ports.0,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: JobId,
    pub server_id: ServerId,
    pub action: Action,
    pub host: String,
    pub status: JobStatus,
    /// `api`, `scheduler`, or `nats` (published by hand).
    pub origin: String,
    pub attempts: i64,
    pub error: Option<String>,
    /// What the action produced (cleanup: the space reclaimed).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub requested_by: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobView {
    /// `job` as `viewer` may read it.
    pub fn new(job: Job, viewer: &User) -> Self {
        let j = job.for_viewer(viewer);
        Self {
            id: j.id,
            server_id: j.server_id,
            action: j.action,
            host: j.host,
            status: j.status,
            origin: j.origin,
            attempts: j.attempts,
            error: j.error,
            result: j.result.map(|r| r.0),
            requested_by: j.requested_by,
            created_at: j.created_at,
            published_at: j.published_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: i64,
    pub email: String,
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        Self { id: a.id, email: a.email, admin: a.admin, created_at: a.created_at, disabled_at: a.disabled_at }
    }
}

/// A token: never its secret, but when it is created ([`NewTokenView`]).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub user_id: i64,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<Token> for TokenView {
    fn from(t: Token) -> Self {
        Self { id: t.id, user_id: t.user_id, created_at: t.created_at, revoked_at: t.revoked_at }
    }
}

/// A token just created, with the secret shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewTokenView {
    pub id: i64,
    pub user_id: i64,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub secret: String,
}

impl From<crate::users::NewToken> for NewTokenView {
    fn from(t: crate::users::NewToken) -> Self {
        let token = t.token;
        Self {
            id: token.id,
            user_id: token.user_id,
            created_at: token.created_at,
            revoked_at: token.revoked_at,
            secret: t.secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub user_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub detail: Option<String>,
}

impl From<Activity> for ActivityView {
    fn from(a: Activity) -> Self {
        Self {
            id: a.id,
            at: a.at,
            user_id: a.user_id,
            actor: a.actor,
            action: a.action,
            target: a.target,
            result: a.result,
            detail: a.detail,
        }
    }
}

/// A container inside a server, as its monitor last reported it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InnerContainerView {
    pub docker_id: String,
    pub image: String,
    pub names: String,
    pub state: String,
    pub status: String,
    pub ports: String,
    pub labels: String,
    pub created: String,
    pub updated_at: DateTime<Utc>,
}

impl From<InnerRow> for InnerContainerView {
    fn from(c: InnerRow) -> Self {
        Self {
            docker_id: c.docker_id,
            image: c.image,
            names: c.names,
            state: c.state,
            status: c.status,
            ports: c.ports,
            labels: c.labels,
            created: c.created,
            updated_at: c.updated_at,
        }
    }
}

/// A domain name of a server.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainView {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<Domain> for DomainView {
    fn from(d: Domain) -> Self {
        Self { name: d.name, created_at: d.created_at }
    }
}

/// The envelopes the handlers answer with: one type per answer, so the
/// OpenAPI document describes what is sent.
pub mod bodies {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use utoipa::ToSchema;

    use super::*;
    use crate::error::ErrorDetail;

    #[derive(Debug, Serialize, ToSchema)]
    pub struct ServerBody {
        pub server: ServerView,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct ServersBody {
        pub servers: Vec<ServerView>,
        /// The `after` of the next page; null on the last.
        pub next: Option<String>,
    }

    /// A create accepted: the server, `creating`, and its create job.
    #[derive(Debug, Serialize, ToSchema)]
    pub struct CreatedBody {
        pub server: ServerView,
        pub job: JobView,
    }

    /// A job accepted.
    #[derive(Debug, Serialize, ToSchema)]
    pub struct JobBody {
        pub job: JobView,
        /// When the job's host is not alive: the job waits on its queue.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub warning: Option<String>,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct JobsBody {
        pub jobs: Vec<JobView>,
        /// The `after` of the next page; null on the last.
        pub next: Option<String>,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct ContainersBody {
        pub containers: Vec<InnerContainerView>,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct DomainBody {
        pub domain: DomainView,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct DomainsBody {
        pub domains: Vec<DomainView>,
        /// The `after` of the next page; null on the last.
        pub next: Option<String>,
    }

    /// The domain name removed, as stored (lowercase).
    #[derive(Debug, Serialize, ToSchema)]
    pub struct RemovedBody {
        pub removed: String,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct HostView {
        pub host: String,
        /// A heartbeat within three heartbeat intervals.
        pub alive: bool,
        /// Why the host takes no work now (Docker unreachable), if so.
        pub degraded: Option<String>,
        /// The most servers it takes (`worker.capacity`).
        pub capacity: Option<u32>,
        /// What its last full sync found.
        pub last_sync: Option<crate::events::HostSync>,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct HostsBody {
        pub hosts: Vec<HostView>,
        /// Messages from NATS that failed the api's checks, by kind (they are in the dead letters).
        pub rejected_messages: BTreeMap<String, u64>,
    }

    /// One server of a bulk request: its job, or why it was refused.
    #[derive(Debug, Serialize, ToSchema)]
    pub struct BulkResult {
        pub server_id: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub job: Option<JobView>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub error: Option<ErrorDetail>,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct BulkBody {
        pub accepted: usize,
        pub refused: usize,
        pub results: Vec<BulkResult>,
    }

    /// Which of the api's dependencies answer.
    #[derive(Debug, Serialize, ToSchema)]
    pub struct Readiness {
        pub database: bool,
        pub broker: bool,
    }

    /// A user just created, with their first token (its secret shown this once).
    #[derive(Debug, Serialize, ToSchema)]
    pub struct NewUserBody {
        pub user: AccountView,
        pub token: NewTokenView,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct UserBody {
        pub user: AccountView,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct UsersBody {
        pub users: Vec<AccountView>,
        /// The `after` of the next page; null on the last.
        pub next: Option<String>,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct NewTokenBody {
        pub token: NewTokenView,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct TokenBody {
        pub token: TokenView,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct TokensBody {
        pub tokens: Vec<TokenView>,
        /// The `after` of the next page; null on the last.
        pub next: Option<String>,
    }

    /// A page of the activity log, newest first.
    #[derive(Debug, Serialize, ToSchema)]
    pub struct ActivityBody {
        pub activity: Vec<ActivityView>,
        /// The `before` of the next page; null on the last.
        pub next: Option<i64>,
    }
}

/// Converts every row of a list.
pub fn all<R, V: From<R>>(rows: Vec<R>) -> Vec<V> {
    rows.into_iter().map(V::from).collect()
}

//! One type per table row, with its columns typed: ids, states and actions
//! are the contract's types, so a value that is not one of theirs fails the
//! read with an error naming it ([`vsfleet_contract::column`]) instead of
//! becoming a default. sqlx maps them (`FromRow`) for both backends; the
//! SQLite writer, which reads through rusqlite, has one mapper per row it
//! reads (`from_row`).

use chrono::{DateTime, Utc};
use vsfleet_contract::{Action, JobId, JobStatus, PortList, ServerId, ServerSpec, ServerStatus};

/// A server as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Server {
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
    /// Its published ports, allocated at create and kept until purge.
    pub ports: PortList,
}

impl Server {
    pub fn spec(&self) -> ServerSpec {
        ServerSpec { cpus: self.cpus, memory_mb: self.memory_mb.map(|m| m as u64), ports: self.ports.0.clone() }
    }
}

/// A job as stored: every request, and every job a worker reported that an
/// operator published by hand. The row is also the outbox: `published_at`
/// stays empty until JetStream acknowledged the message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
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
    pub result: Option<sqlx::types::Json<serde_json::Value>>,
    /// The exact JSON published, so the outbox republishes it unchanged.
    pub payload: String,
    pub requested_by: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    /// A new queued job: everything the events fill in starts empty.
    pub fn queued(new: NewJob) -> Self {
        Job {
            id: new.id,
            server_id: new.server_id,
            action: new.action,
            host: new.host,
            status: JobStatus::Queued,
            origin: new.origin.to_owned(),
            attempts: 0,
            error: None,
            result: None,
            payload: new.payload,
            requested_by: new.requested_by,
            created_at: new.created_at,
            published_at: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// What a new job is made of.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub server_id: ServerId,
    pub action: Action,
    pub host: String,
    pub origin: &'static str,
    pub payload: String,
    pub requested_by: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// What a new server is made of.
#[derive(Debug, Clone)]
pub struct NewServer {
    pub owner_id: i64,
    pub name: String,
    pub host: String,
    pub spec: ServerSpec,
    pub created_at: DateTime<Utc>,
}

/// What a request checks of a server, read with its row locked.
#[derive(Debug, Clone)]
pub struct Checked {
    pub owner_id: i64,
    pub status: ServerStatus,
    pub host: String,
    pub spec: ServerSpec,
    /// The job in flight, if any.
    pub busy_job: Option<JobId>,
    /// When its newest job was created: a new job's fence must be later,
    /// whichever api replica's clock made the last one.
    pub last_job_at: Option<DateTime<Utc>>,
}

/// A server as reconciliation compares it with its host.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Known {
    pub id: ServerId,
    pub status: ServerStatus,
    pub container_id: Option<String>,
    pub data_exists: bool,
    pub updated_at: DateTime<Utc>,
    /// A job for it is queued or running.
    pub busy: bool,
}

/// The authenticated caller.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub is_admin: bool,
}

/// A user as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub id: i64,
    pub email: String,
    #[sqlx(rename = "is_admin")]
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A token as stored: never its secret.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Token {
    pub id: i64,
    pub user_id: i64,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

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

/// An activity log entry as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
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

/// A domain name of a server.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Domain {
    pub server_id: ServerId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A container inside a server, as its monitor last reported it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InnerRow {
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

/// One entry of the change feed (`changes`, written by triggers): a
/// server's new status (`purged` when its row went), or a job's.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Change {
    pub id: i64,
    /// PostgreSQL's transaction id; 0 on SQLite.
    pub tx: i64,
    pub at: DateTime<Utc>,
    pub owner_id: Option<i64>,
    pub server_id: i64,
    pub job_id: Option<String>,
    pub action: Option<String>,
    pub status: String,
}

impl Change {
    pub fn cursor(&self) -> Cursor {
        Cursor { tx: self.tx, id: self.id }
    }
}

/// A place in the change feed: what a client resumes after (the SSE event
/// id, `"{tx}.{id}"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
pub struct Cursor {
    pub tx: i64,
    pub id: i64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.tx, self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an event id (TX.ID)");
        let (tx, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor { tx: tx.parse().map_err(|_| bad())?, id: id.parse().map_err(|_| bad())? })
    }
}

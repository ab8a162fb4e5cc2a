//! Layered configuration: defaults, then an optional TOML file
//! (`--config FILE` or `VSFLEET_CONFIG`), then `VSFLEET_<SECTION>__<KEY>`
//! environment variables. One file can configure all three services; each
//! reads the sections it needs. A bad value stops the service at start with
//! a message naming the key. Every key is documented in the README.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::Action;
use crate::subjects::{Subjects, check_host_id};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub api: ApiSettings,
    pub worker: WorkerSettings,
    pub scheduler: SchedulerSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `human` (one readable line per event) or `json` (one JSON object
    /// per line, for a log shipper).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (created when missing), or `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// for several api replicas on one database.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    pub url: String,
    /// Root of every subject, stream, consumer and bucket name.
    pub prefix: String,
    /// How long JetStream remembers a `Nats-Msg-Id`: a job published twice
    /// within it (the api's outbox retrying) runs once.
    pub duplicate_window_secs: u64,
    /// How long a worker may hold a job without a sign of life before
    /// JetStream redelivers it. A worker signals progress every third of it
    /// while it works, so this bounds how long a job held by a killed
    /// worker waits, not how long a job may take.
    pub ack_wait_secs: u64,
    /// Deliveries of one job before it is given up.
    pub max_deliver: i64,
    /// How long the api waits for JetStream to acknowledge a publish.
    pub publish_timeout_ms: u64,
    /// Authentication: at most one of user + password, token, nkey seed
    /// file, credentials file. Which one was used is named when NATS refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_seed_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// TLS to the broker; required as soon as any file is set.
    #[serde(default)]
    pub tls: NatsTls,
    /// Jobs nobody consumes (a host that is gone) are dropped after this
    /// long; their deadlines have long passed by then.
    pub jobs_max_age_secs: u64,
    /// The most the jobs stream may hold; past it new jobs are refused
    /// (the api answers 503 and keeps them in its outbox), never old ones dropped.
    pub jobs_max_bytes: i64,
    /// Copies of every stream and bucket in a JetStream cluster (1, 3 or 5;
    /// at most the cluster's size). 3 keeps the services working when one
    /// node of three is lost.
    pub replicas: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    /// CA that signed the server's certificate (else the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for servers that verify clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl NatsTls {
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// How long a soft-deleted server stays restorable (seconds; 24 hours).
    pub retention_secs: u64,
    /// How often committed but unacknowledged jobs are published again.
    pub outbox_interval_ms: u64,
    /// Remove stopped containers that carry our labels but belong to no live
    /// server. Their data is never touched; running ones are only reported.
    pub remove_orphans: bool,
    /// Inner-container rows not refreshed for this long are dropped by the
    /// stale cleanup (seed 003 §3.4: five minutes).
    pub container_rows_ttl_secs: u64,
    /// How long the change feed behind `GET /v1/events` is kept: a client
    /// that reconnects within it misses nothing.
    pub events_retention_secs: u64,
    /// How long each action may take, from request to result, before the
    /// watchdog marks its job failed (and the worker gives it up).
    pub deadlines: Deadlines,
    /// How often the watchdog looks for jobs past their deadline.
    pub watchdog_interval_ms: u64,
    /// Limits a server gets when its request names none.
    pub default_cpus: f64,
    pub default_memory_mb: u64,
    /// The most a request may ask for (422 above).
    pub max_cpus: f64,
    pub max_memory_mb: u64,
    /// Live (not deleted) servers one user may have; admins are exempt.
    pub max_servers_per_user: u32,
    /// How long a client may take to send a request's head once it began
    /// sending it; then the connection is dropped (slow or half-open clients
    /// must not hold connections).
    pub http_header_timeout_secs: u64,
    /// How long a connection may sit with no request in flight and nothing
    /// sent; then it is closed.
    pub http_idle_timeout_secs: u64,
    /// The longest a request may take to be answered (its status and
    /// headers: an event stream's body goes on); then 503
    /// `request_timeout`. What the request committed stays committed.
    pub request_timeout_secs: u64,
    /// At shutdown, how long the requests being served may take to finish;
    /// then their connections are closed. Below the supervisor's stop
    /// timeout (compose's `stop_grace_period`, systemd's `TimeoutStopSec`).
    pub drain_timeout_secs: u64,
}

/// Seconds each action's job may take from request to result: queued
/// behind other jobs, redelivered after a crash, retried, and run. Past it
/// the job is failed with the reason, so a vanished worker or a lost host
/// never leaves a server stuck in `creating` or `deleting`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadlines {
    pub create: u64,
    pub start: u64,
    pub stop: u64,
    pub restart: u64,
    pub delete: u64,
    pub restore: u64,
    pub purge: u64,
    pub cleanup: u64,
    pub reap: u64,
}

impl Deadlines {
    pub fn of(&self, action: Action) -> Duration {
        let secs = match action {
            Action::Create => self.create,
            Action::Start => self.start,
            Action::Stop => self.stop,
            Action::Restart => self.restart,
            Action::Delete => self.delete,
            Action::Restore => self.restore,
            Action::Purge => self.purge,
            Action::Cleanup => self.cleanup,
            Action::Reap => self.reap,
        };
        Duration::from_secs(secs)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Every host reports what it really has; the api reconciles.
    pub sync_interval_ms: u64,
    /// Stale inner-container rows are dropped.
    pub cleanup_interval_ms: u64,
    /// Deleted servers past `purge_after` are purged.
    pub purge_interval_ms: u64,
    /// Where `GET /metrics` answers; unset: no metrics listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where `GET /healthz` (the process runs) and `GET /readyz` (NATS is
    /// connected) answer, for an orchestrator's probes; unset: none. May be
    /// `metrics_listen`'s address: one listener then serves all three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// This host's id in subjects and labels; defaults to the hostname.
    pub host_id: String,
    /// The seed's `SERVERS` directory: `{data_root}/{id}/apps` and `/docker`.
    pub data_root: PathBuf,
    pub image: String,
    /// `sysbox-runc` in production; must be registered with Docker.
    pub runtime: String,
    pub network: String,
    pub container_prefix: String,
    /// Jobs one worker process runs at once (for different servers).
    pub concurrency: usize,
    /// Seconds Docker waits after SIGTERM before it kills a stopping container.
    pub stop_timeout_secs: i32,
    pub heartbeat_secs: u64,
    /// The most servers (deleted ones not yet purged included) this host
    /// takes; the api places a new server only on a host below it.
    pub capacity: u32,
    /// The host ports this host offers for servers' published ports
    /// (`"FIRST-LAST"`); the api allocates from it.
    pub port_range: crate::PortRange,
    /// Where `GET /metrics` answers; unset: no metrics listener (two
    /// worker processes on one host each need their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where `GET /healthz` (the process runs) and `GET /readyz` (Docker
    /// answers and NATS is connected) answer, for an orchestrator's probes;
    /// unset: none. May be `metrics_listen`'s address: one listener then
    /// serves all three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<SocketAddr>,
    /// Run servers unconfined: every capability but CAP_SYS_RESOURCE, no
    /// seccomp or AppArmor profile, writable /proc/sys, all devices. Only
    /// for the default-runtime stand-in for Sysbox in tests, whose inner
    /// Docker needs it (`--privileged` itself fails on hosts whose bounding
    /// set lacks CAP_SYS_RESOURCE). Refused with sysbox-runc, which gives
    /// an inner Docker what it needs without any of this.
    pub unconfined: bool,
    /// Follow Docker's event stream to report drift within a second; the
    /// periodic sync is the backstop.
    pub follow_docker_events: bool,
    /// How often the containers inside each running server are listed
    /// (seed 000 §8: 3 s); 0 turns the monitor off.
    pub monitor_interval_ms: u64,
    /// How long one server may take to answer the monitor before it is skipped.
    pub monitor_timeout_ms: u64,
    /// Tries of a transiently failing action within one delivery (Docker
    /// unreachable, a 5xx, a timeout), with exponential backoff and jitter,
    /// before the job is handed back to JetStream for a later delivery.
    pub retry_attempts: usize,
    /// The most time those tries may spend waiting, in all.
    pub retry_max_ms: u64,
    /// Processes (and threads) one server may run, its inner Docker's included.
    pub pids_limit: i64,
    /// Where templates live: each is a directory (a compose file and its
    /// files) named by its template name. Absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates_dir: Option<PathBuf>,
    /// The template every new server gets as its system stack, rendered
    /// into `apps/sistema/` and brought up inside it at create (seed 000
    /// §7). Unset: servers get no system stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_template: Option<String>,
    /// How long a create keeps trying to bring the system stack up (the
    /// inner Docker starting included) before it gives up and leaves the
    /// server running with a warning. Within `api.deadlines.create`.
    pub stack_timeout_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Not a `source`: its text is the whole message, shown once.
    #[error("configuration: {0}")]
    Load(config::ConfigError),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl From<config::ConfigError> for SettingsError {
    fn from(e: config::ConfigError) -> Self {
        SettingsError::Load(e)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database: DatabaseSettings { url: "sqlite://vsfleet.db".into() },
            nats: NatsSettings {
                url: "nats://127.0.0.1:4222".into(),
                prefix: "vs".into(),
                duplicate_window_secs: 24 * 3600,
                ack_wait_secs: 30,
                max_deliver: 5,
                publish_timeout_ms: 5000,
                user: None,
                password: None,
                token: None,
                nkey_seed_file: None,
                creds_file: None,
                tls: NatsTls::default(),
                jobs_max_age_secs: 24 * 3600,
                jobs_max_bytes: 1 << 30,
                replicas: 1,
            },
            api: ApiSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                retention_secs: 24 * 3600,
                outbox_interval_ms: 1000,
                remove_orphans: false,
                container_rows_ttl_secs: 300,
                events_retention_secs: 7200,
                deadlines: Deadlines {
                    create: 900,
                    start: 600,
                    stop: 600,
                    restart: 600,
                    delete: 1800,
                    restore: 600,
                    purge: 3600,
                    cleanup: 1800,
                    reap: 600,
                },
                watchdog_interval_ms: 5000,
                default_cpus: 1.0,
                default_memory_mb: 1024,
                max_cpus: 4.0,
                max_memory_mb: 16 * 1024,
                max_servers_per_user: 10,
                http_header_timeout_secs: 10,
                http_idle_timeout_secs: 60,
                request_timeout_secs: 30,
                drain_timeout_secs: 20,
            },
            worker: WorkerSettings {
                host_id: default_host_id(),
                data_root: PathBuf::from("/var/lib/vsfleet/SERVERS"),
                image: "hosting-dind-ubuntu".into(),
                runtime: "sysbox-runc".into(),
                network: "filtered-users".into(),
                container_prefix: "hosting-users-dind-".into(),
                concurrency: 4,
                stop_timeout_secs: 30,
                heartbeat_secs: 5,
                capacity: 100,
                port_range: crate::PortRange { first: 20000, last: 29999 },
                metrics_listen: None,
                health_listen: None,
                unconfined: false,
                follow_docker_events: true,
                monitor_interval_ms: 3000,
                monitor_timeout_ms: 2000,
                retry_attempts: 4,
                retry_max_ms: 20_000,
                pids_limit: 4096,
                templates_dir: None,
                system_template: None,
                stack_timeout_secs: 120,
            },
            scheduler: SchedulerSettings {
                sync_interval_ms: 30_000,
                cleanup_interval_ms: 60_000,
                purge_interval_ms: 60_000,
                metrics_listen: None,
                health_listen: None,
            },
            log: LogSettings { format: LogFormat::Human },
        }
    }
}

/// The hostname, with characters that cannot stand in a subject token
/// (dots of a FQDN) turned into `-`.
fn default_host_id() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .take(64)
        .collect();
    if id.is_empty() { "localhost".into() } else { id }
}

impl Settings {
    /// Loads the layers: defaults, `file`, the environment. The binaries
    /// take `file` from `--config` or `VSFLEET_CONFIG` ([`crate::cli`]).
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder().add_source(config::Config::try_from(&Settings::default())?);
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
        }
        let mut settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("VSFLEET")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    // VSFLEET_CONFIG names the file; it is not a setting.
                    .source(Some(std::env::vars().filter(|(k, _)| k != "VSFLEET_CONFIG").collect())),
            )
            .build()?
            .try_deserialize()?;
        // Compose passes `VSFLEET_WORKER__SYSTEM_TEMPLATE=` for "none".
        if settings.worker.system_template.as_deref().is_some_and(|t| t.trim().is_empty()) {
            settings.worker.system_template = None;
        }
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, reason: String| Err(SettingsError::Invalid { key, reason });
        if let Err(e) = Subjects::new(&self.nats.prefix) {
            return invalid("nats.prefix", e.to_string());
        }
        if let Err(e) = check_host_id(&self.worker.host_id) {
            return invalid("worker.host_id", e.to_string());
        }
        let url = &self.database.url;
        if !["sqlite:", "postgres://", "postgresql://"].iter().any(|scheme| url.starts_with(scheme)) {
            return invalid("database.url", format!("{url:?} is neither a sqlite: nor a postgres:// URL"));
        }
        if self.nats.urls().is_empty() {
            return invalid("nats.url", "names no server".into());
        }
        for url in self.nats.urls() {
            if !url.starts_with("nats://") && !url.starts_with("tls://") {
                return invalid("nats.url", format!("{url:?} is not a nats:// URL"));
            }
        }
        if !self.worker.data_root.is_absolute() {
            return invalid("worker.data_root", format!("{:?} is not an absolute path", self.worker.data_root));
        }
        let prefix = &self.worker.container_prefix;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
            return invalid("worker.container_prefix", format!("{prefix:?} is not a valid start of a container name"));
        }
        for (key, value) in [
            ("worker.image", &self.worker.image),
            ("worker.runtime", &self.worker.runtime),
            ("worker.network", &self.worker.network),
        ] {
            if value.trim().is_empty() {
                return invalid(key, "must not be empty".into());
            }
        }
        if self.worker.concurrency == 0 {
            return invalid("worker.concurrency", "must be at least 1".into());
        }
        if self.nats.max_deliver < 1 {
            return invalid("nats.max_deliver", "must be at least 1".into());
        }
        if self.worker.unconfined && self.worker.runtime == "sysbox-runc" {
            return invalid(
                "worker.unconfined",
                "Sysbox containers need no extra privileges; this is for the runc stand-in".into(),
            );
        }
        for (key, ms) in [
            ("scheduler.sync_interval_ms", self.scheduler.sync_interval_ms),
            ("scheduler.cleanup_interval_ms", self.scheduler.cleanup_interval_ms),
            ("scheduler.purge_interval_ms", self.scheduler.purge_interval_ms),
            ("api.watchdog_interval_ms", self.api.watchdog_interval_ms),
        ] {
            if ms < 100 {
                return invalid(key, "must be at least 100".into());
            }
        }
        for action in Action::ALL {
            if self.api.deadlines.of(action).is_zero() {
                return invalid("api.deadlines", format!("the deadline of {action} must be at least 1 second"));
            }
        }
        if self.worker.heartbeat_secs == 0 {
            return invalid("worker.heartbeat_secs", "must be at least 1".into());
        }
        self.nats.auth()?;
        let tls = &self.nats.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return invalid(
                "nats.tls.cert_file",
                "a client certificate needs its key (nats.tls.key_file), and a key its certificate".into(),
            );
        }
        if self.nats.jobs_max_age_secs < self.nats.duplicate_window_secs {
            return invalid(
                "nats.jobs_max_age_secs",
                "must be at least nats.duplicate_window_secs (JetStream requires it)".into(),
            );
        }
        if self.nats.jobs_max_bytes < 1 << 20 {
            return invalid("nats.jobs_max_bytes", "must be at least 1 MiB".into());
        }
        let api = &self.api;
        let defaults =
            crate::ServerSpec { cpus: Some(api.default_cpus), memory_mb: Some(api.default_memory_mb), ports: vec![] };
        if !(api.max_cpus.is_finite() && api.max_cpus >= 0.01) {
            return invalid("api.max_cpus", "must be at least 0.01".into());
        }
        if api.max_memory_mb < 6 {
            return invalid("api.max_memory_mb", "must be at least 6 (Docker's minimum)".into());
        }
        if let Err(e) = defaults.validate_within(api.max_cpus, api.max_memory_mb) {
            let key = if e.field() == "cpus" { "api.default_cpus" } else { "api.default_memory_mb" };
            return invalid(key, format!("{e} (the default must be within the maximum)"));
        }
        for (key, secs) in [
            ("api.http_header_timeout_secs", api.http_header_timeout_secs),
            ("api.http_idle_timeout_secs", api.http_idle_timeout_secs),
            ("api.request_timeout_secs", api.request_timeout_secs),
            ("api.drain_timeout_secs", api.drain_timeout_secs),
        ] {
            if secs == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if api.request_timeout_secs.saturating_mul(1000) <= self.nats.publish_timeout_ms {
            return invalid(
                "api.request_timeout_secs",
                "must be above nats.publish_timeout_ms: a request waits that long for JetStream".into(),
            );
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return invalid(
                "nats.replicas",
                "must be 1 to 5 (JetStream's limit), and at most the cluster's size".into(),
            );
        }
        if self.nats.ack_wait_secs < 3 {
            return invalid(
                "nats.ack_wait_secs",
                "must be at least 3 (progress is signalled every third of it)".into(),
            );
        }
        if self.worker.capacity == 0 {
            return invalid("worker.capacity", "must be at least 1".into());
        }
        if self.worker.pids_limit < 1 {
            return invalid("worker.pids_limit", "must be at least 1".into());
        }
        self.validate_system_stack()?;
        Ok(())
    }

    fn validate_system_stack(&self) -> Result<(), SettingsError> {
        let invalid = |key, reason: String| Err(SettingsError::Invalid { key, reason });
        let worker = &self.worker;
        if let Some(dir) = &worker.templates_dir
            && !dir.is_absolute()
        {
            return invalid("worker.templates_dir", format!("{dir:?} is not an absolute path"));
        }
        let Some(name) = &worker.system_template else { return Ok(()) };
        if !is_template_name(name) {
            return invalid(
                "worker.system_template",
                format!(
                    "{name:?} is not a template name (a-z, 0-9, `_` and `-`, at most 63, starting with a letter or digit)"
                ),
            );
        }
        if worker.templates_dir.is_none() {
            return invalid("worker.system_template", "needs worker.templates_dir, where the template is".into());
        }
        if worker.stack_timeout_secs == 0 || worker.stack_timeout_secs >= self.api.deadlines.create {
            return invalid(
                "worker.stack_timeout_secs",
                format!(
                    "must be at least 1 and below api.deadlines.create ({}s): a create also creates and starts the container",
                    self.api.deadlines.create
                ),
            );
        }
        Ok(())
    }

    pub fn subjects(&self) -> Subjects {
        Subjects::new(&self.nats.prefix).expect("validated at load")
    }

    pub fn retention(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.api.retention_secs as i64)
    }

    /// The longest scheduler period: the schedule stream's dedup window must
    /// cover it so replicas publish each period's job once.
    pub fn longest_schedule_period(&self) -> Duration {
        let s = &self.scheduler;
        Duration::from_millis(s.sync_interval_ms.max(s.cleanup_interval_ms).max(s.purge_interval_ms))
    }
}

impl NatsSettings {
    /// The servers of `nats.url`, a comma-separated list (the nodes of a
    /// cluster: the client connects to any that answers, and learns the
    /// others from it).
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// The one way of authenticating that is configured, if any.
    pub fn auth(&self) -> Result<NatsAuth<'_>, SettingsError> {
        let invalid = |key, reason: &str| Err(SettingsError::Invalid { key, reason: reason.into() });
        let mut chosen = Vec::new();
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => chosen.push(NatsAuth::UserPassword { user, password }),
            (Some(_), None) => return invalid("nats.password", "nats.user needs a password"),
            (None, Some(_)) => return invalid("nats.user", "nats.password needs a user"),
            (None, None) => {}
        }
        if let Some(token) = &self.token {
            chosen.push(NatsAuth::Token(token));
        }
        if let Some(path) = &self.nkey_seed_file {
            chosen.push(NatsAuth::NkeySeedFile(path));
        }
        if let Some(path) = &self.creds_file {
            chosen.push(NatsAuth::CredsFile(path));
        }
        match chosen.len() {
            0 => Ok(NatsAuth::None),
            1 => Ok(chosen.remove(0)),
            _ => invalid(
                "nats",
                "set one of nats.user + nats.password, nats.token, nats.nkey_seed_file, nats.creds_file, not several",
            ),
        }
    }
}

/// A template's name is a single directory name under `worker.templates_dir`:
/// no separators or dots, so it can never name a path outside it.
pub fn is_template_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// How a service proves who it is to NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsAuth<'a> {
    None,
    UserPassword { user: &'a str, password: &'a str },
    Token(&'a str),
    NkeySeedFile(&'a Path),
    CredsFile(&'a Path),
}

impl NatsAuth<'_> {
    /// The setting(s) it came from, for error messages (never the secret).
    pub fn setting(&self) -> &'static str {
        match self {
            NatsAuth::None => {
                "no credentials (nats.user/password, nats.token, nats.nkey_seed_file, nats.creds_file are unset)"
            }
            NatsAuth::UserPassword { .. } => "nats.user + nats.password",
            NatsAuth::Token(_) => "nats.token",
            NatsAuth::NkeySeedFile(_) => "nats.nkey_seed_file",
            NatsAuth::CredsFile(_) => "nats.creds_file",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let mut s = Settings::default();
        s.worker.data_root = PathBuf::from("relative/dir");
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("worker.data_root"), "{err}");

        let dir = tempfile_dir();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[worker]\nconcurrency = \"many\"\n").unwrap();
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("concurrency"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_system_template_is_a_plain_name_in_an_absolute_templates_dir() {
        let with = |dir: Option<&str>, name: Option<&str>| {
            let mut s = Settings::default();
            s.worker.templates_dir = dir.map(PathBuf::from);
            s.worker.system_template = name.map(str::to_owned);
            s.validate().map_err(|e| e.to_string())
        };
        assert!(with(None, None).is_ok());
        assert!(with(Some("/etc/vsfleet/templates"), None).is_ok());
        assert!(with(Some("/etc/vsfleet/templates"), Some("sistema")).is_ok());
        assert!(with(Some("/t"), Some("a-b_9")).is_ok());
        for bad in ["", "../etc", "a/b", ".hidden", "-x", "_x", "Sistema", "a.b", &"x".repeat(64)] {
            let err = with(Some("/t"), Some(bad)).unwrap_err();
            assert!(err.contains("worker.system_template"), "{bad:?}: {err}");
        }
        let err = with(None, Some("sistema")).unwrap_err();
        assert!(err.contains("worker.system_template") && err.contains("worker.templates_dir"), "{err}");
        let err = with(Some("templates"), Some("sistema")).unwrap_err();
        assert!(err.contains("worker.templates_dir"), "{err}");

        let mut s = Settings::default();
        s.worker.templates_dir = Some("/t".into());
        s.worker.system_template = Some("sistema".into());
        s.worker.stack_timeout_secs = s.api.deadlines.create;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("worker.stack_timeout_secs"), "{err}");
        s.worker.stack_timeout_secs = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn the_system_stack_is_configured_from_a_file() {
        // Not under tempfile_dir(): another test removes that when it ends.
        let dir = std::env::temp_dir().join(format!("vsfleet-settings-stack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("stack.toml");
        std::fs::write(&file, "[worker]\ntemplates_dir = \"/srv/templates\"\nsystem_template = \"sistema\"\n").unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.worker.templates_dir.as_deref(), Some(Path::new("/srv/templates")));
        assert_eq!(s.worker.system_template.as_deref(), Some("sistema"));
        assert_eq!(s.worker.stack_timeout_secs, 120);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vsfleet-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

//! Connecting to NATS, the same way in every service: the credentials and
//! TLS files of the settings, a name and an inbox prefix per role (the
//! permission config in `nats/` lets each role receive replies on its own
//! inbox only, so no one can read another's replies or pulled jobs), and a
//! first connection that stops the service with the reason when the broker
//! refuses who it is, instead of a JetStream timeout later.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::ConnectErrorKind;

use crate::settings::{NatsAuth, Settings};
use crate::subjects::Subjects;

/// Who connects; decides the client name and the inbox prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    Api,
    Scheduler,
    /// The worker of one host.
    Worker(&'a str),
    /// People: the NATS CLI takes `--inbox-prefix` with the same value.
    Operator,
    Readonly,
}

impl Role<'_> {
    pub fn name(&self) -> String {
        match self {
            Role::Api => "vsfleet-api".into(),
            Role::Scheduler => "vsfleet-scheduler".into(),
            Role::Worker(host) => format!("vsfleet-worker {host}"),
            Role::Operator => "vsfleet-operator".into(),
            Role::Readonly => "vsfleet-readonly".into(),
        }
    }

    /// `_INBOX.{prefix}.{role}[.{host}]`: what the role's user may subscribe to.
    pub fn inbox_prefix(&self, subjects: &Subjects) -> String {
        let prefix = subjects.prefix();
        match self {
            Role::Api => format!("_INBOX.{prefix}.api"),
            Role::Scheduler => format!("_INBOX.{prefix}.scheduler"),
            Role::Worker(host) => format!("_INBOX.{prefix}.worker.{host}"),
            Role::Operator => format!("_INBOX.{prefix}.operator"),
            Role::Readonly => format!("_INBOX.{prefix}.readonly"),
        }
    }

    /// The role of a user of the generated configuration ([`crate::permissions::users`]).
    pub fn of_user(user: &str) -> Option<Role<'_>> {
        match user {
            "api" => Some(Role::Api),
            "scheduler" => Some(Role::Scheduler),
            "operator" => Some(Role::Operator),
            "readonly" => Some(Role::Readonly),
            other => other.strip_prefix("worker-").map(Role::Worker),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "NATS at {url} refused to authenticate this service ({setting}): {source}. \
         Check the credentials and that the user exists in the server's configuration"
    )]
    Refused {
        url: String,
        setting: &'static str,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("TLS to NATS at {url} failed (nats.tls.*, and a tls:// URL or a server that requires TLS): {source}")]
    Tls {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot read {setting} {path}: {source}")]
    Credentials {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("nats.url {url:?}: {source}")]
    Address {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Connects as `role`. While the broker cannot be reached the first
/// connection is retried (a service may start before NATS); a refusal of
/// the credentials or a TLS failure ends it at once. Once connected the
/// client reconnects by itself for as long as the process lives.
pub async fn connect(settings: &Settings, role: Role<'_>) -> Result<async_nats::Client, ConnectError> {
    let url = settings.nats.url.as_str();
    let servers = settings.nats.urls();
    let auth = settings.nats.auth()?;
    let mut delay = Duration::from_millis(100);
    loop {
        let options = options(settings, role, auth).await?;
        match options.connect(servers.as_slice()).await {
            Ok(client) => return Ok(client),
            Err(source) => match source.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    return Err(ConnectError::Refused { url: url.to_owned(), setting: auth.setting(), source });
                }
                ConnectErrorKind::Tls => return Err(ConnectError::Tls { url: url.to_owned(), source }),
                // A handshake the client refused (an unverifiable certificate)
                // comes back as I/O: retrying cannot help.
                ConnectErrorKind::Io if is_invalid_data(&source) => {
                    return Err(ConnectError::Tls { url: url.to_owned(), source });
                }
                ConnectErrorKind::ServerParse => return Err(ConnectError::Address { url: url.to_owned(), source }),
                _ => {
                    tracing::warn!(url, error = %source, retry_in = ?delay, "NATS is not reachable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            },
        }
    }
}

async fn options(
    settings: &Settings,
    role: Role<'_>,
    auth: NatsAuth<'_>,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let mut options = async_nats::ConnectOptions::new()
        .event_callback(|event| async move {
            match event {
                // A missing permission shows only here: the operation itself times out.
                async_nats::Event::ServerError(error) => tracing::error!(
                    %error,
                    "NATS refused an operation; this service's user may lack a permission (nats/auth.conf, nats/README.md)"
                ),
                other => tracing::info!(event = %other, "NATS connection"),
            }
        })
        .name(role.name())
        .custom_inbox_prefix(role.inbox_prefix(&settings.subjects()))
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5));
    options = match auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => options.user_and_password(user.into(), password.into()),
        NatsAuth::Token(token) => options.token(token.into()),
        NatsAuth::NkeySeedFile(path) => {
            let seed = read("nats.nkey_seed_file", path)?;
            options.nkey(seed.trim().to_owned())
        }
        NatsAuth::CredsFile(path) => options.credentials_file(path).await.map_err(|source| {
            ConnectError::Credentials { setting: "nats.creds_file", path: path.to_owned(), source }
        })?,
    };
    let tls = &settings.nats.tls;
    if tls.is_set() || settings.nats.urls().iter().any(|u| u.starts_with("tls://")) {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            read("nats.tls.ca_file", ca)?;
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            read("nats.tls.cert_file", cert)?;
            read("nats.tls.key_file", key)?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(options)
}

/// An I/O error of kind `InvalidData` in the chain: what rustls reports for
/// a certificate it cannot verify.
fn is_invalid_data(error: &async_nats::ConnectError) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData) {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Reads a file named by a setting, so a missing one is reported by its key.
fn read(setting: &'static str, path: &Path) -> Result<String, ConnectError> {
    std::fs::read_to_string(path).map_err(|source| ConnectError::Credentials { setting, path: path.to_owned(), source })
}

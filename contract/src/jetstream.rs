//! The JetStream objects vsfleet relies on, created idempotently by whichever
//! service starts first. `nats/*.json` holds the same definitions for the
//! NATS CLI; a test keeps the two in step.

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, kv, stream};

use crate::settings::Settings;

pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEAD_MAX_BYTES: i64 = 256 << 20;

/// The jobs stream: a work queue, so an acknowledged job is gone and a
/// recreated consumer never replays old jobs (an old `delete` replayed after
/// a restore would be a disaster). Dedup by `Nats-Msg-Id` = job id.
pub fn jobs_stream(settings: &Settings) -> stream::Config {
    let subjects = settings.subjects();
    stream::Config {
        name: subjects.jobs_stream(),
        subjects: vec![subjects.jobs_wildcard()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: settings.nats.replicas,
        duplicate_window: Duration::from_secs(settings.nats.duplicate_window_secs),
        // Nothing piles up unseen on a subject no worker consumes (a host
        // that is gone): old jobs age out (their deadlines passed long
        // before), and a full stream refuses new jobs rather than drop any.
        max_age: Duration::from_secs(settings.nats.jobs_max_age_secs),
        max_bytes: settings.nats.jobs_max_bytes,
        discard: stream::DiscardPolicy::New,
        // `nats stream view` can page a work queue only through direct gets
        // (a consumer of its own would take the jobs from the workers).
        allow_direct: true,
        ..Default::default()
    }
}

/// Workers' reports: kept a week for operators (`nats stream view`), read by
/// the api's durable consumer.
pub fn events_stream(settings: &Settings) -> stream::Config {
    let subjects = settings.subjects();
    stream::Config {
        name: subjects.events_stream(),
        subjects: vec![subjects.events_wildcard()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: settings.nats.replicas,
        max_age: EVENTS_MAX_AGE,
        allow_direct: true,
        ..Default::default()
    }
}

/// Periodic jobs. The dedup window covers the longest period, so scheduler
/// replicas emit each period's job once; an hour of history is plenty.
pub fn schedule_stream(settings: &Settings) -> stream::Config {
    let subjects = settings.subjects();
    stream::Config {
        name: subjects.schedule_stream(),
        subjects: vec![subjects.schedule_wildcard()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: settings.nats.replicas,
        max_age: Duration::from_secs(3600),
        duplicate_window: (settings.longest_schedule_period() * 2).max(Duration::from_secs(120)),
        ..Default::default()
    }
}

/// Jobs that will never run (poison, or out of deliveries), kept a month
/// for operators to read and replay with the NATS CLI.
pub fn dead_stream(settings: &Settings) -> stream::Config {
    let subjects = settings.subjects();
    stream::Config {
        name: subjects.dead_stream(),
        subjects: vec![format!("{}.dead.>", subjects.prefix())],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: settings.nats.replicas,
        max_age: Duration::from_secs(30 * 24 * 3600),
        // Forged messages land here too: bounded, the oldest go first.
        max_bytes: DEAD_MAX_BYTES,
        allow_direct: true,
        ..Default::default()
    }
}

/// The api replicas' shared consumer of the workers' events.
pub fn api_events_consumer(settings: &Settings) -> pull::Config {
    let subjects = settings.subjects();
    pull::Config {
        durable_name: Some(subjects.api_events_consumer()),
        filter_subject: subjects.api_events_filter(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        ..Default::default()
    }
}

/// The api replicas' shared consumer of the schedule (cleanup, purge).
pub fn api_schedule_consumer(settings: &Settings) -> pull::Config {
    let subjects = settings.subjects();
    pull::Config {
        durable_name: Some(subjects.api_schedule_consumer()),
        filter_subject: subjects.schedule_wildcard(),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(60),
        ..Default::default()
    }
}

/// A worker host's consumer of the sync ticks: a new host starts with the
/// next tick, not the last hour's.
pub fn sync_consumer(settings: &Settings, host: &str) -> pull::Config {
    let subjects = settings.subjects();
    pull::Config {
        durable_name: Some(subjects.sync_consumer(host)),
        filter_subject: subjects.schedule(crate::schedule::Periodic::Sync),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(60),
        ..Default::default()
    }
}

/// A worker host's consumer of its jobs (`nats.ack_wait_secs`, `nats.max_deliver`).
pub fn jobs_consumer(settings: &Settings, host: &str) -> pull::Config {
    let subjects = settings.subjects();
    pull::Config {
        durable_name: Some(subjects.worker_consumer(host)),
        filter_subject: subjects.host_jobs_filter(host),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(settings.nats.ack_wait_secs),
        max_deliver: settings.nats.max_deliver,
        ..Default::default()
    }
}

/// Live workers: each refreshes its key every heartbeat; entries older than
/// three heartbeats expire, so a dead host drops out by itself.
pub fn hosts_bucket(settings: &Settings) -> kv::Config {
    kv::Config {
        bucket: settings.subjects().hosts_bucket(),
        history: 1,
        max_age: Duration::from_secs(3 * settings.worker.heartbeat_secs),
        // File, like every stream here: the bucket must outlive a broker
        // restart, or no worker could announce itself after one.
        storage: stream::StorageType::File,
        num_replicas: settings.nats.replicas,
        ..Default::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("creating stream {name}: {source}")]
    Stream {
        name: String,
        #[source]
        source: StreamSetupError,
    },
    #[error("creating key-value bucket {name}: {source}")]
    Bucket {
        name: String,
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
}

/// The JetStream errors of creating, reading or changing a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamSetupError {
    #[error(transparent)]
    Create(#[from] jetstream::context::CreateStreamError),
    #[error(transparent)]
    Get(#[from] jetstream::context::GetStreamError),
    #[error(transparent)]
    Info(#[from] jetstream::context::RequestError),
}

pub struct Objects {
    pub jobs: stream::Stream,
    pub events: stream::Stream,
    pub schedule: stream::Stream,
    pub dead: stream::Stream,
    pub hosts: kv::Store,
}

/// The objects a worker uses, created by the api: a worker may not create
/// or change streams (`nats/auth.conf`). Waits, saying so, while the api
/// has not created them yet; gives up on any other failure (no answer at
/// all usually means a permission is missing: nats-server then logs, and
/// the client reports, a permissions violation).
pub async fn bind(
    js: &jetstream::Context,
    settings: &Settings,
) -> Result<(stream::Stream, stream::Stream, kv::Store), BindError> {
    let subjects = settings.subjects();
    let names = [subjects.jobs_stream(), subjects.schedule_stream(), format!("KV_{}", subjects.hosts_bucket())];
    let (mut warned, mut failures) = (false, 0);
    loop {
        let mut found = Vec::new();
        let mut missing = None;
        for name in &names {
            match js.get_stream(name).await {
                Ok(stream) => found.push(stream),
                Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    missing = Some(name.clone());
                    break;
                }
                Err(source) => {
                    failures += 1;
                    if failures >= 2 {
                        return Err(BindError { name: name.clone(), source });
                    }
                    missing = Some(name.clone());
                    break;
                }
            }
        }
        match missing {
            None => {
                let hosts = js.get_key_value(subjects.hosts_bucket()).await.map_err(|e| BindError {
                    name: subjects.hosts_bucket(),
                    source: jetstream::context::GetStreamError::with_source(GetStreamErrorKind::Request, e),
                })?;
                let mut found = found.into_iter();
                let (jobs, schedule) = (found.next().expect("found"), found.next().expect("found"));
                return Ok((jobs, schedule, hosts));
            }
            Some(name) if !warned => {
                tracing::warn!(stream = name, "waiting for the api to create the streams and the hosts bucket");
                warned = true;
            }
            Some(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read {name} from JetStream: {source}. If NATS reported a permissions violation, \
     nats.user is not this service's user (the worker of host H is worker-H: nats/README.md)"
)]
pub struct BindError {
    pub name: String,
    #[source]
    pub source: jetstream::context::GetStreamError,
}

/// Creates what is missing and returns handles to all of it. A stream or
/// bucket made with another `nats.replicas` is changed to it (JetStream
/// moves the data), so a deployment can grow from one node to a cluster.
pub async fn ensure(js: &jetstream::Context, settings: &Settings) -> Result<Objects, SetupError> {
    let get = |config: stream::Config| async move {
        let name = config.name.clone();
        let wanted = Editable::of(&config);
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|source| SetupError::Stream { name: name.clone(), source: source.into() })?;
        match converge(js, stream.cached_info(), wanted).await? {
            true => js.get_stream(&name).await.map_err(|source| SetupError::Stream { name, source: source.into() }),
            false => Ok(stream),
        }
    };
    let jobs = get(jobs_stream(settings)).await?;
    let events = get(events_stream(settings)).await?;
    let schedule = get(schedule_stream(settings)).await?;
    let dead = get(dead_stream(settings)).await?;
    let bucket = hosts_bucket(settings);
    let name = bucket.bucket.clone();
    if let Ok(mut existing) = js.get_stream(format!("KV_{name}")).await {
        let info = existing.info().await.map_err(|e| SetupError::Stream { name: name.clone(), source: e.into() })?;
        let wanted = Editable { replicas: bucket.num_replicas, allow_direct: info.config.allow_direct };
        converge(js, info, wanted).await?;
    }
    let hosts = js.create_key_value(bucket).await.map_err(|source| SetupError::Bucket { name, source })?;
    Ok(Objects { jobs, events, schedule, dead, hosts })
}

impl SetupError {
    /// JetStream answered that it cannot place or serve the stream yet: a
    /// cluster still electing its leader or waiting for a peer to come up.
    /// The codes are JetStream's (10005 "no suitable peers for placement",
    /// 10008 "JetStream system temporarily unavailable"); async-nats carries
    /// them in the error's text.
    pub fn is_cluster_forming(&self) -> bool {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(error) = source {
            text.push_str(&error.to_string());
            source = error.source();
        }
        cluster_forming(&text)
    }
}

fn cluster_forming(text: &str) -> bool {
    ["error code 10005", "error code 10008", "no suitable peers", "temporarily unavailable"]
        .iter()
        .any(|sign| text.contains(sign))
}

/// [`ensure`], waiting up to `patience` for a JetStream cluster that is
/// still forming (a service started with, or just before, its cluster):
/// a warning every try, then the last error.
pub async fn ensure_when_ready(
    js: &jetstream::Context,
    settings: &Settings,
    patience: Duration,
) -> Result<Objects, SetupError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(250);
    loop {
        match ensure(js, settings).await {
            Err(error) if error.is_cluster_forming() && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %error, retry_in = ?pause, "JetStream cannot place the streams yet; waiting for the cluster");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            outcome => return outcome,
        }
    }
}

/// What of an existing stream's configuration the services bring in line
/// with the code: what a deployment changes (its replicas) and what a
/// release adds (direct gets for the CLI).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Editable {
    replicas: usize,
    allow_direct: bool,
}

impl Editable {
    fn of(config: &stream::Config) -> Self {
        Editable { replicas: config.num_replicas, allow_direct: config.allow_direct }
    }
}

/// Updates a stream whose editable settings differ; says whether it did.
async fn converge(js: &jetstream::Context, info: &stream::Info, wanted: Editable) -> Result<bool, SetupError> {
    let have = Editable::of(&info.config);
    if have == wanted {
        return Ok(false);
    }
    let name = info.config.name.clone();
    tracing::info!(stream = name, ?have, ?wanted, "bringing the stream's settings in line");
    let config =
        stream::Config { num_replicas: wanted.replicas, allow_direct: wanted.allow_direct, ..info.config.clone() };
    js.update_stream(config).await.map_err(|source| SetupError::Stream { name, source: source.into() })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    //! `nats/*.json` are what operators feed to `nats stream add --config`;
    //! they must say what the code creates (for the default prefix `vs`).

    use super::*;

    fn stream_file(raw: &str) -> stream::Config {
        serde_json::from_str(raw).expect("a valid stream definition")
    }

    fn assert_same(file: &stream::Config, code: &stream::Config) {
        assert_eq!(file.name, code.name);
        assert_eq!(file.subjects, code.subjects);
        assert_eq!(file.retention, code.retention);
        assert_eq!(file.storage, code.storage);
        assert_eq!(file.max_age, code.max_age);
        assert_eq!(file.num_replicas, code.num_replicas);
        // The server reads 0 and -1 alike: no limit.
        assert_eq!(file.max_bytes.max(0), code.max_bytes.max(0));
        assert_eq!(file.discard, code.discard);
        if code.duplicate_window != Duration::ZERO {
            assert_eq!(file.duplicate_window, code.duplicate_window);
        }
        assert_eq!(file.allow_direct, code.allow_direct, "{}", code.name);
    }

    #[test]
    fn only_a_cluster_that_cannot_place_a_stream_yet_is_waited_for() {
        assert!(cluster_forming(
            "creating stream x_jobs: jetstream error: no suitable peers for placement, peer offline (code 400, error code 10005)"
        ));
        assert!(cluster_forming(
            "jetstream error: JetStream system temporarily unavailable (code 503, error code 10008)"
        ));
        assert!(!cluster_forming("creating stream x_jobs: jetstream error: permissions violation"));
    }

    #[test]
    fn the_cli_stream_definitions_match_the_code() {
        let settings = Settings::default();
        for (file, code) in [
            (include_str!("../../nats/jobs-stream.json"), jobs_stream(&settings)),
            (include_str!("../../nats/events-stream.json"), events_stream(&settings)),
            (include_str!("../../nats/schedule-stream.json"), schedule_stream(&settings)),
            (include_str!("../../nats/dead-stream.json"), dead_stream(&settings)),
        ] {
            assert_same(&stream_file(file), &code);
        }
    }

    fn assert_same_consumer(raw: &str, code: &pull::Config) {
        let file: pull::Config = serde_json::from_str(raw).expect("a valid consumer definition");
        let name = &code.durable_name;
        assert_eq!(file.durable_name, code.durable_name);
        assert_eq!(file.filter_subject, code.filter_subject, "{name:?}");
        assert_eq!(file.filter_subjects, code.filter_subjects, "{name:?}");
        assert_eq!(file.deliver_policy, code.deliver_policy, "{name:?}");
        assert_eq!(file.ack_policy, code.ack_policy, "{name:?}");
        assert_eq!(file.ack_wait, code.ack_wait, "{name:?}");
        // The server reads 0 and -1 alike: no limit.
        assert_eq!(file.max_deliver.max(0), code.max_deliver.max(0), "{name:?}");
        assert_eq!(file.replay_policy, code.replay_policy, "{name:?}");
        assert_eq!(file.max_ack_pending.max(0), code.max_ack_pending.max(0), "{name:?}");
        assert_eq!(file.inactive_threshold, code.inactive_threshold, "{name:?}");
    }

    #[test]
    fn the_cli_consumer_definitions_match_the_code() {
        let settings = Settings::default();
        for (file, code) in [
            (include_str!("../../nats/worker-consumer.json"), jobs_consumer(&settings, "host1")),
            (include_str!("../../nats/sync-consumer.json"), sync_consumer(&settings, "host1")),
            (include_str!("../../nats/api-consumer.json"), api_events_consumer(&settings)),
            (include_str!("../../nats/api-schedule-consumer.json"), api_schedule_consumer(&settings)),
        ] {
            assert_same_consumer(file, &code);
        }
    }
}

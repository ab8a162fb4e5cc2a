//! `vsfleet-worker check`: the health check of a running worker, for a
//! container's HEALTHCHECK (`docker-compose.yml`). Part of the binary, not
//! of the library.
//!
//! Healthy when, within five seconds:
//! - Docker answers a ping on the worker's socket (the worker calls its
//!   host *degraded* otherwise, and fetches no jobs), and
//! - this host's entry is in the hosts bucket: the worker refreshes it every
//!   `worker.heartbeat_secs` and the bucket drops an entry three heartbeats
//!   after its last refresh, so an entry present is one at most three
//!   heartbeats old.
//!
//! It connects as the worker's own NATS user, which may read the bucket's
//! stream info but not its values (`nats/auth.conf`): it counts the message
//! under this host's key rather than reading it.

use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::TryStreamExt as _;
use vsfleet_contract::Settings;
use vsfleet_contract::connect::{Role, connect};

const TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    tokio::time::timeout(TIMEOUT, check(settings)).await.context("no answer within 5 s (NATS or Docker)")?
}

async fn check(settings: &Settings) -> anyhow::Result<()> {
    let host = &settings.worker.host_id;
    let docker = vsfleet_worker::docker::connect().await.context("degraded: Docker is unreachable")?;
    docker.ping().await.context("degraded: Docker does not answer a ping")?;

    let nats = connect(settings, Role::Worker(host)).await?;
    let js = async_nats::jetstream::new(nats);
    let bucket = settings.subjects().hosts_bucket();
    let stream = js.get_stream(format!("KV_{bucket}")).await.with_context(|| format!("reading the bucket {bucket}"))?;
    let key = format!("$KV.{bucket}.{host}");
    let mut subjects = stream.info_with_subjects(&key).await.with_context(|| format!("reading the bucket {bucket}"))?;
    while let Some((subject, count)) = subjects.try_next().await? {
        if subject == key && count > 0 {
            return Ok(());
        }
    }
    bail!("host {host} has no entry in the bucket {bucket}: no heartbeat for three heartbeats")
}

//! The lifecycle operations (seed 000 §3–5, seed 004). Each one converges:
//! run twice, or again after being killed half way, it reaches the same end
//! state, and it reports what the host looks like afterwards.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tracing::Instrument as _;
use vsfleet_contract::{Action, ContainerState, JobRequest, Observation, ServerId, ServerSpec, step};

use crate::docker::Containers;
use crate::error::OpError;
use crate::layout::DataRoot;
use crate::stack::StackConfig;

/// Kept for reporting the outcome when the system stack's bring-up takes
/// what is left of a job's time.
const STACK_MARGIN: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Operations {
    pub containers: Containers,
    pub root: DataRoot,
    /// The system stack every new server gets, if one is configured.
    pub stack: Option<StackConfig>,
}

/// Carries out jobs. [`Operations`] is the only implementation a worker
/// binary builds; the benchmark supplies one that does no Docker work, so
/// that no configuration can turn a production worker into a no-op.
pub trait Execute: Send + Sync + 'static {
    fn run(&self, action: Action, job: &JobRequest) -> impl Future<Output = Result<Outcome, OpError>> + Send;

    fn observe(&self, id: ServerId) -> impl Future<Output = Result<Observation, OpError>> + Send;
}

impl Execute for Operations {
    async fn run(&self, action: Action, job: &JobRequest) -> Result<Outcome, OpError> {
        Operations::run(self, action, job).await
    }

    async fn observe(&self, id: ServerId) -> Result<Observation, OpError> {
        Operations::observe(self, id).await
    }
}

/// What a job leaves behind: the host's view of the server, and what the
/// action produced, if anything.
#[derive(Debug)]
pub struct Outcome {
    pub observed: Observation,
    pub detail: Option<serde_json::Value>,
}

impl Operations {
    pub async fn run(&self, action: Action, job: &JobRequest) -> Result<Outcome, OpError> {
        let (id, spec) = (job.server_id, job.spec.as_ref());
        // A job is outside input like any other: its spec gets the api's
        // checks before any arithmetic or Docker call uses it.
        if let Some(spec) = spec {
            self.check(spec).map_err(|e| OpError::Refused(format!("invalid spec: {e}")))?;
        }
        // What is left of the job's time, for the system stack's bring-up
        // (a job that arrives late must not run past its deadline).
        let budget = job.deadline.map(|d| (d - Utc::now()).to_std().unwrap_or_default().saturating_sub(STACK_MARGIN));
        let mut detail = None;
        match action {
            Action::Create => {
                let (container, detail) = self.create(id, spec, budget).await?;
                return self.started(id, container, detail);
            }
            Action::Start => {
                let (container, detail) = self.start(id, spec, budget).await?;
                return self.started(id, container, detail);
            }
            Action::Stop => self.stop(id).await?,
            Action::Restart => self.restart(id, spec).await?,
            Action::Delete => self.delete(id).await?,
            Action::Restore => self.restore(id).await?,
            Action::Purge => self.purge(id, job.keep_data, job.live_data).await?,
            Action::Cleanup => detail = Some(self.cleanup(id).await?),
            Action::Reap => self.reap(id).await?,
        }
        Ok(Outcome { observed: self.observe(id).instrument(step!("observe")).await?, detail })
    }

    /// A server whose container Docker started, reported without asking
    /// Docker again: the inspect would repeat what the start said. A
    /// container that exits afterwards (at once, or while the system stack
    /// was installed) is reported by the event stream ([`crate::watch`]) as
    /// drift, after this outcome: its look waits for the server's lock.
    fn started(&self, id: ServerId, container: String, detail: Option<serde_json::Value>) -> Result<Outcome, OpError> {
        let _step = step!("observe").entered();
        let archived =
            !self.root.archives(id).map_err(OpError::io("listing archives in", self.root.root()))?.is_empty();
        let observed = Observation {
            container: ContainerState::Running,
            container_id: Some(container),
            data_exists: self.root.data_exists(id),
            archived,
        };
        Ok(Outcome { observed, detail })
    }

    /// What the host has for the server now.
    pub async fn observe(&self, id: ServerId) -> Result<Observation, OpError> {
        let found = self.containers.find(id).await?.filter(|f| f.ours);
        let archived =
            !self.root.archives(id).map_err(OpError::io("listing archives in", self.root.root()))?.is_empty();
        Ok(Observation {
            container: found.as_ref().map_or(ContainerState::Absent, |f| f.state),
            container_id: found.map(|f| f.id),
            data_exists: self.root.data_exists(id),
            archived,
        })
    }

    /// The api's checks, and the host's own: a host port outside this
    /// host's `worker.port_range` is never published, whoever wrote the job.
    fn check(&self, spec: &ServerSpec) -> Result<(), String> {
        spec.validate().map_err(|e| e.to_string())?;
        let range = self.containers.port_range();
        match spec.ports.iter().find(|p| !range.contains(p.host)) {
            Some(p) => Err(format!("host port {} is outside this host's worker.port_range {range}", p.host)),
            None => Ok(()),
        }
    }

    /// Directories, spec file, container, started; then the system stack,
    /// whose result (up, or why not) is the job's detail.
    async fn create(
        &self,
        id: ServerId,
        spec: Option<&ServerSpec>,
        budget: Option<Duration>,
    ) -> Result<(String, Option<serde_json::Value>), OpError> {
        let spec = spec.cloned().unwrap_or_default();
        self.prepare_dirs(id, &spec).instrument(step!("dirs and spec file")).await?;
        let container = match self.containers.find_ours(id).instrument(step!("docker inspect")).await? {
            Some(found) => {
                // Kept only if it is what the spec describes: otherwise the
                // API would show limits that Docker does not enforce.
                let differences = self.containers.differences(&found.id, id, &spec).await?;
                if differences.is_empty() {
                    found.id
                } else {
                    tracing::warn!(
                        container = found.id,
                        ?differences,
                        "existing container differs from the spec; replacing it (data untouched)"
                    );
                    self.containers.remove(&found.id).await?;
                    self.containers.create(id, &spec).await?
                }
            }
            None => self.containers.create(id, &spec).await?,
        };
        self.containers.start(&container).instrument(step!("docker start")).await?;
        let detail = self.give_stack(id, &container, &spec, budget).await;
        Ok((container, detail))
    }

    /// Starts the container, recreating it from the spec when it is
    /// missing. A server whose create failed before it got its system stack
    /// gets it here; its containers restart with the server afterwards.
    async fn start(
        &self,
        id: ServerId,
        spec: Option<&ServerSpec>,
        budget: Option<Duration>,
    ) -> Result<(String, Option<serde_json::Value>), OpError> {
        let container = self.ensure_container(id, spec).await?;
        self.containers.start(&container).instrument(step!("docker start")).await?;
        if self.root.stack_given_file(id).exists() {
            return Ok((container, None));
        }
        let spec = spec.cloned().or_else(|| self.root.read_spec(id)).unwrap_or_default();
        let detail = self.give_stack(id, &container, &spec, budget).await;
        Ok((container, detail))
    }

    async fn give_stack(
        &self,
        id: ServerId,
        container: &str,
        spec: &ServerSpec,
        budget: Option<Duration>,
    ) -> Option<serde_json::Value> {
        let stack = self.stack.as_ref()?;
        let ports: Vec<(u16, u16)> = spec.ports.iter().map(|p| (p.container, p.host)).collect();
        Some(crate::stack::install(stack, &self.root, &self.containers, id, container, &ports, budget).await)
    }

    async fn stop(&self, id: ServerId) -> Result<(), OpError> {
        match self.containers.find_ours(id).await? {
            Some(found) => self.containers.stop(&found.id).await,
            None => Ok(()), // nothing to stop; the server shows as missing
        }
    }

    async fn restart(&self, id: ServerId, spec: Option<&ServerSpec>) -> Result<(), OpError> {
        match self.containers.find_ours(id).await? {
            Some(found) if found.state == ContainerState::Running => self.containers.restart(&found.id).await,
            _ => self.start(id, spec, None).await.map(drop),
        }
    }

    /// Container stopped and removed, `docker/` removed, the rest moved to
    /// `{id}-deleted-{timestamp}` (seed 000 §5.2).
    async fn delete(&self, id: ServerId) -> Result<(), OpError> {
        if let Some(found) = self.containers.find_ours(id).await? {
            self.containers.remove(&found.id).await?;
        }
        let dir = self.root.server_dir(id);
        if !dir.is_dir() {
            return Ok(()); // already archived by an earlier delivery
        }
        let docker_dir = self.root.docker_dir(id);
        match tokio::fs::remove_dir_all(&docker_dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(OpError::io("removing", docker_dir)(e)),
        }
        let mut at = Utc::now();
        let mut archive = self.root.archive_dir(id, at);
        // Two deletes of one server within a second (delete, restore,
        // delete) must not collide: take the next free second.
        while archive.exists() {
            at += chrono::Duration::seconds(1);
            archive = self.root.archive_dir(id, at);
        }
        tokio::fs::rename(&dir, &archive).await.map_err(OpError::io("archiving", dir))?;
        tracing::info!(archive = %archive.display(), "server data archived");
        Ok(())
    }

    /// Moves the newest archive back. The container is recreated by start.
    async fn restore(&self, id: ServerId) -> Result<(), OpError> {
        let dir = self.root.server_dir(id);
        if dir.is_dir() {
            return Ok(()); // restored by an earlier delivery
        }
        let archives = self.root.archives(id).map_err(OpError::io("listing archives in", self.root.root()))?;
        let Some(newest) = archives.last() else {
            return Err(OpError::Refused(format!("server {id} has no archive to restore")));
        };
        tokio::fs::rename(newest, &dir).await.map_err(OpError::io("restoring", newest.clone()))?;
        tracing::info!(from = %newest.display(), "server data restored");
        Ok(())
    }

    /// The only path that deletes user data: a deleted server's container
    /// (if any) and archives. A server with live data is refused. With
    /// `keep_data` the archives stay where they are (the api forgets the
    /// server; its id is never reused, so no new server meets them).
    async fn purge(&self, id: ServerId, keep_data: bool, live_data: bool) -> Result<(), OpError> {
        let dir = self.root.server_dir(id);
        if dir.exists() && live_data {
            // A failed server: archived as a delete would, then purged
            // below. Never one that runs: whatever the message says, a
            // running server is not failed.
            if self.containers.find_ours(id).await?.is_some_and(|f| f.state == ContainerState::Running) {
                return Err(OpError::Refused(format!(
                    "server {id} is running; only a failed or deleted server is purged"
                )));
            }
            self.delete(id).await?;
        }
        if dir.exists() {
            return Err(OpError::Refused(format!(
                "server {id} has live data at {}; only a deleted server can be purged",
                dir.display()
            )));
        }
        if let Some(found) = self.containers.find_ours(id).await? {
            self.containers.remove(&found.id).await?;
        }
        if keep_data {
            for archive in self.root.archives(id).map_err(OpError::io("listing archives in", self.root.root()))? {
                tracing::info!(archive = %archive.display(), "archive kept (purge with keep_data)");
            }
            return Ok(());
        }
        for archive in self.root.archives(id).map_err(OpError::io("listing archives in", self.root.root()))? {
            tokio::fs::remove_dir_all(&archive).await.map_err(OpError::io("purging", archive.clone()))?;
            tracing::info!(archive = %archive.display(), "archive purged");
        }
        Ok(())
    }

    /// `docker system prune -a -f --volumes` inside the running server
    /// (seed 000 §9.2); reports what the inner Docker said it reclaimed.
    async fn cleanup(&self, id: ServerId) -> Result<serde_json::Value, OpError> {
        let Some(found) = self.containers.find_ours(id).await?.filter(|f| f.state == ContainerState::Running) else {
            return Err(OpError::Refused(format!("server {id} is not running; cleanup needs its Docker daemon")));
        };
        let out = self.containers.exec(&found.id, &["docker", "system", "prune", "-a", "-f", "--volumes"]).await?;
        if out.exit_code != 0 {
            // The inner daemon may still be starting: worth another try.
            return Err(OpError::Inner(format!("docker system prune exited {}: {}", out.exit_code, out.stderr.trim())));
        }
        let reclaimed = parse_reclaimed(&out.stdout);
        tracing::info!(reclaimed = reclaimed.as_deref().unwrap_or("?"), "inner docker pruned");
        Ok(json!({
            "reclaimed": reclaimed,
            "reclaimed_bytes": reclaimed.as_deref().and_then(parse_size),
        }))
    }

    /// Removes containers of ours labelled for a server that has no live
    /// row (an orphan). A running one is refused: we never stop a container
    /// we cannot explain. Data directories are never touched here.
    async fn reap(&self, id: ServerId) -> Result<(), OpError> {
        for seen in self.containers.list_managed().await?.into_iter().filter(|c| c.server_id == id) {
            if seen.state == ContainerState::Running {
                return Err(OpError::Refused(format!(
                    "orphan container {} of server {id} is running; not stopping a container that belongs to no server",
                    seen.container_id
                )));
            }
            self.containers.remove(&seen.container_id).await?;
            tracing::warn!(container = seen.container_id, "orphan container removed");
        }
        Ok(())
    }

    /// Our container for the server, created from the spec when missing.
    async fn ensure_container(&self, id: ServerId, spec: Option<&ServerSpec>) -> Result<String, OpError> {
        if let Some(found) = self.containers.find_ours(id).instrument(step!("docker inspect")).await? {
            return Ok(found.id);
        }
        let has_archive =
            !self.root.archives(id).map_err(OpError::io("listing archives in", self.root.root()))?.is_empty();
        if !self.root.data_exists(id) && has_archive {
            return Err(OpError::Refused(format!("server {id} is deleted (its data is archived); restore it first")));
        }
        // A job published by hand carries no spec: use the one written at
        // create, checked like any input (the file is on disk, not trusted).
        let spec = spec.cloned().or_else(|| self.root.read_spec(id)).unwrap_or_default();
        self.check(&spec).map_err(|e| OpError::Refused(format!("invalid spec in the spec file: {e}")))?;
        self.prepare_dirs(id, &spec).await?;
        tracing::info!("container missing; recreating it from the spec");
        self.containers.create(id, &spec).await
    }

    async fn prepare_dirs(&self, id: ServerId, spec: &ServerSpec) -> Result<(), OpError> {
        for dir in [self.root.apps_dir(id), self.root.docker_dir(id)] {
            tokio::fs::create_dir_all(&dir).await.map_err(OpError::io("creating", dir))?;
        }
        let root = self.root.clone();
        let spec = spec.clone();
        let path = root.spec_file(id);
        tokio::task::spawn_blocking(move || root.write_spec(id, &spec))
            .await
            .map_err(|e| OpError::Refused(format!("writing spec: {e}")))?
            .map_err(OpError::io("writing", path))
    }
}

/// The size in "Total reclaimed space: 1.234MB".
fn parse_reclaimed(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| l.trim().strip_prefix("Total reclaimed space:")).map(|v| v.trim().to_owned())
}

/// Docker's human sizes ("0B", "12.5kB", "1.2MB", "3GB"), decimal units.
fn parse_size(text: &str) -> Option<u64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let factor = match unit {
        "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    Some((number.trim().parse::<f64>().ok()? * factor).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_output_is_read_for_the_reclaimed_space() {
        let out = "Deleted Images:\nuntagged: x\n\nTotal reclaimed space: 4.39MB\n";
        assert_eq!(parse_reclaimed(out).as_deref(), Some("4.39MB"));
        assert_eq!(parse_size("4.39MB"), Some(4_390_000));
        assert_eq!(parse_size("0B"), Some(0));
        assert_eq!(parse_size("12kB"), Some(12_000));
        assert_eq!(parse_reclaimed("nothing"), None);
    }

    #[test]
    fn every_docker_size_unit_is_read_in_decimal() {
        assert_eq!(parse_size("7B"), Some(7));
        assert_eq!(parse_size("1.5KB"), Some(1_500));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("1.25TB"), Some(1_250_000_000_000));
        assert_eq!(parse_size("3PB"), None);
        assert_eq!(parse_size("12"), None);
    }
}

//! The lifecycle operations (seed 000 §3–5, seed 004). Each one converges:
//! run twice, or again after being killed half way, it reaches the same end
//! state, and it reports what the host looks like afterwards.

use chrono::Utc;
use vsfleet_contract::{Action, ContainerState, Observation, ServerId, ServerSpec};

use crate::docker::Containers;
use crate::error::OpError;
use crate::layout::DataRoot;

#[derive(Clone)]
pub struct Operations {
    pub containers: Containers,
    pub root: DataRoot,
}

impl Operations {
    pub async fn run(
        &self,
        action: Action,
        id: ServerId,
        spec: Option<&ServerSpec>,
    ) -> Result<Observation, OpError> {
        match action {
            Action::Create => self.create(id, spec).await?,
            Action::Start => self.start(id, spec).await?,
            Action::Stop => self.stop(id).await?,
            Action::Restart => self.restart(id, spec).await?,
            Action::Delete => self.delete(id).await?,
            Action::Restore => self.restore(id).await?,
            Action::Purge => self.purge(id).await?,
        }
        self.observe(id).await
    }

    /// What the host has for the server now.
    pub async fn observe(&self, id: ServerId) -> Result<Observation, OpError> {
        let found = self.containers.find(id).await?.filter(|f| f.ours);
        let archived = !self
            .root
            .archives(id)
            .map_err(OpError::io("listing archives in", self.root.root()))?
            .is_empty();
        Ok(Observation {
            container: found.as_ref().map_or(ContainerState::Absent, |f| f.state),
            container_id: found.map(|f| f.id),
            data_exists: self.root.data_exists(id),
            archived,
        })
    }

    /// Directories, spec file, container, started.
    async fn create(&self, id: ServerId, spec: Option<&ServerSpec>) -> Result<(), OpError> {
        let spec = spec.cloned().unwrap_or_default();
        self.prepare_dirs(id, &spec).await?;
        let container = match self.containers.find_ours(id).await? {
            Some(found) => found.id,
            None => self.containers.create(id, &spec).await?,
        };
        self.containers.start(&container).await
    }

    /// Starts the container, recreating it from the spec when it is missing.
    async fn start(&self, id: ServerId, spec: Option<&ServerSpec>) -> Result<(), OpError> {
        let container = self.ensure_container(id, spec).await?;
        self.containers.start(&container).await
    }

    async fn stop(&self, id: ServerId) -> Result<(), OpError> {
        match self.containers.find_ours(id).await? {
            Some(found) => self.containers.stop(&found.id).await,
            None => Ok(()), // nothing to stop; the server shows as missing
        }
    }

    async fn restart(&self, id: ServerId, spec: Option<&ServerSpec>) -> Result<(), OpError> {
        match self.containers.find_ours(id).await? {
            Some(found) if found.state == ContainerState::Running => {
                self.containers.restart(&found.id).await
            }
            _ => self.start(id, spec).await,
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
        tokio::fs::rename(&dir, &archive)
            .await
            .map_err(OpError::io("archiving", dir))?;
        tracing::info!(archive = %archive.display(), "server data archived");
        Ok(())
    }

    /// Moves the newest archive back. The container is recreated by start.
    async fn restore(&self, id: ServerId) -> Result<(), OpError> {
        let dir = self.root.server_dir(id);
        if dir.is_dir() {
            return Ok(()); // restored by an earlier delivery
        }
        let archives = self
            .root
            .archives(id)
            .map_err(OpError::io("listing archives in", self.root.root()))?;
        let Some(newest) = archives.last() else {
            return Err(OpError::Refused(format!(
                "server {id} has no archive to restore"
            )));
        };
        tokio::fs::rename(newest, &dir)
            .await
            .map_err(OpError::io("restoring", newest.clone()))?;
        tracing::info!(from = %newest.display(), "server data restored");
        Ok(())
    }

    /// The only path that deletes user data: a deleted server's container
    /// (if any) and archives. A server with live data is refused.
    async fn purge(&self, id: ServerId) -> Result<(), OpError> {
        let dir = self.root.server_dir(id);
        if dir.exists() {
            return Err(OpError::Refused(format!(
                "server {id} has live data at {}; only a deleted server can be purged",
                dir.display()
            )));
        }
        if let Some(found) = self.containers.find_ours(id).await? {
            self.containers.remove(&found.id).await?;
        }
        for archive in self
            .root
            .archives(id)
            .map_err(OpError::io("listing archives in", self.root.root()))?
        {
            tokio::fs::remove_dir_all(&archive)
                .await
                .map_err(OpError::io("purging", archive.clone()))?;
            tracing::info!(archive = %archive.display(), "archive purged");
        }
        Ok(())
    }

    /// Our container for the server, created from the spec when missing.
    async fn ensure_container(
        &self,
        id: ServerId,
        spec: Option<&ServerSpec>,
    ) -> Result<String, OpError> {
        if let Some(found) = self.containers.find_ours(id).await? {
            return Ok(found.id);
        }
        let has_archive = !self
            .root
            .archives(id)
            .map_err(OpError::io("listing archives in", self.root.root()))?
            .is_empty();
        if !self.root.data_exists(id) && has_archive {
            return Err(OpError::Refused(format!(
                "server {id} is deleted (its data is archived); restore it first"
            )));
        }
        // A job published by hand carries no spec: use the one written at create.
        let spec = spec
            .cloned()
            .or_else(|| self.root.read_spec(id))
            .unwrap_or_default();
        self.prepare_dirs(id, &spec).await?;
        tracing::info!("container missing; recreating it from the spec");
        self.containers.create(id, &spec).await
    }

    async fn prepare_dirs(&self, id: ServerId, spec: &ServerSpec) -> Result<(), OpError> {
        for dir in [self.root.apps_dir(id), self.root.docker_dir(id)] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(OpError::io("creating", dir))?;
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

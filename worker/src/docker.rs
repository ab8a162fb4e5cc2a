//! The Docker side of a virtual server: one container per server, found by
//! name and recognised by its labels.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, ExecConfig, HostConfig, PortBinding,
    PortMap, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures::StreamExt;
use tracing::Instrument as _;
use vsfleet_contract::{ContainerState, SeenContainer, ServerId, ServerSpec, labels, settings::WorkerSettings, step};

use crate::error::{OpError, docker_status};
use crate::layout::DataRoot;

/// Connects with `DOCKER_HOST` or the default socket, and agrees on an API
/// version the engine speaks (hosts run engines of different ages).
pub async fn connect() -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_defaults()?.negotiate_version().await
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot reach Docker: {0}")]
    Unreachable(#[from] bollard::errors::Error),
    #[error(
        "runtime {wanted:?} (worker.runtime) is not registered with Docker; registered: {registered}. \
         Install and register it (sysbox-runc: see the Sysbox install guide) or configure one of those"
    )]
    RuntimeMissing { wanted: String, registered: String },
}

/// Refuses to run when the configured runtime is not in `docker info`.
pub async fn check_runtime(docker: &Docker, wanted: &str) -> Result<(), StartupError> {
    let info = docker.info().await?;
    let runtimes = info.runtimes.unwrap_or_default();
    if runtimes.contains_key(wanted) {
        return Ok(());
    }
    let mut names: Vec<_> = runtimes.into_keys().collect();
    names.sort();
    Err(StartupError::RuntimeMissing { wanted: wanted.to_owned(), registered: names.join(", ") })
}

/// A container found under a server's name.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: String,
    pub state: ContainerState,
    /// Carries our labels for this server and this host.
    pub ours: bool,
}

#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i64,
}

#[derive(Clone)]
pub struct Containers {
    docker: Docker,
    settings: WorkerSettings,
    deployment: String,
    root: DataRoot,
}

impl Containers {
    pub fn new(docker: Docker, settings: WorkerSettings, deployment: &str) -> Self {
        let root = DataRoot::new(settings.data_root.clone());
        Self { docker, settings, deployment: deployment.to_owned(), root }
    }

    /// The host ports this host may publish (`worker.port_range`).
    pub fn port_range(&self) -> vsfleet_contract::PortRange {
        self.settings.port_range
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn name(&self, id: ServerId) -> String {
        format!("{}{id}", self.settings.container_prefix)
    }

    fn labels(&self, id: ServerId) -> HashMap<String, String> {
        HashMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::SERVER_ID.to_owned(), id.to_string()),
            (labels::HOST.to_owned(), self.settings.host_id.clone()),
            (labels::DEPLOYMENT.to_owned(), self.deployment.clone()),
        ])
    }

    /// Made by this deployment, on this host, for this server: another
    /// deployment sharing the engine (another NATS prefix) may use the same
    /// host id and server ids, and its containers are never ours to touch.
    fn is_ours(&self, id: ServerId, found: Option<&HashMap<String, String>>) -> bool {
        let Some(found) = found else { return false };
        let expected = self.labels(id);
        [labels::MANAGED, labels::SERVER_ID, labels::HOST, labels::DEPLOYMENT]
            .iter()
            .all(|k| found.get(*k) == expected.get(*k))
    }

    /// Docker `label` filters for this deployment's containers on this host.
    pub fn ours_filter(&self) -> Vec<String> {
        vec![
            format!("{}=true", labels::MANAGED),
            format!("{}={}", labels::HOST, self.settings.host_id),
            format!("{}={}", labels::DEPLOYMENT, self.deployment),
        ]
    }

    /// The container under the server's name, if any.
    pub async fn find(&self, id: ServerId) -> Result<Option<Found>, OpError> {
        let inspect = match self.docker.inspect_container(&self.name(id), None).await {
            Ok(inspect) => inspect,
            Err(e) if docker_status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let status = inspect.state.as_ref().and_then(|s| s.status);
        let state = match status {
            Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING) => ContainerState::Running,
            _ => ContainerState::Stopped,
        };
        let labels = inspect.config.as_ref().and_then(|c| c.labels.as_ref());
        Ok(Some(Found { id: inspect.id.unwrap_or_default(), state, ours: self.is_ours(id, labels) }))
    }

    /// Our container for the server, or a refusal if the name is taken by
    /// a container that is not ours (we never touch those).
    pub async fn find_ours(&self, id: ServerId) -> Result<Option<Found>, OpError> {
        match self.find(id).await? {
            Some(found) if !found.ours => Err(OpError::Refused(format!(
                "a container named {} exists but is not managed by this host for server {id}; remove or rename it",
                self.name(id)
            ))),
            other => Ok(other),
        }
    }

    /// Creates the container from the spec. Sysbox allows one container per
    /// `/var/lib/docker` host directory, so any other container of ours for
    /// this server (renamed by hand, left by a crash) is removed first.
    pub async fn create(&self, id: ServerId, spec: &ServerSpec) -> Result<String, OpError> {
        self.remove_strays(id).instrument(step!("docker list")).await?;
        let options = CreateContainerOptions { name: Some(self.name(id)), ..Default::default() };
        let created = self.docker.create_container(Some(options), self.container_body(id, spec));
        match created.instrument(step!("docker create")).await {
            Ok(created) => Ok(created.id),
            // Another delivery of the same job created it first.
            Err(e) if docker_status(&e) == Some(409) => match self.find_ours(id).await? {
                Some(found) => Ok(found.id),
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The container's configuration. Sysbox refuses `--privileged` and host
    /// pid/net/userns modes: none of them is ever set. `worker.unconfined`
    /// (the runc stand-in in tests, refused with Sysbox at configuration
    /// time) lifts confinement so that an inner Docker can run.
    pub fn container_body(&self, id: ServerId, spec: &ServerSpec) -> ContainerCreateBody {
        let bind = |dir: std::path::PathBuf, target: &str| format!("{}:{target}", dir.display());
        ContainerCreateBody {
            image: Some(self.settings.image.clone()),
            hostname: Some(format!("server{id}")),
            labels: Some(self.labels(id)),
            exposed_ports: (!spec.ports.is_empty()).then(|| spec.ports.iter().map(|p| tcp(p.container)).collect()),
            host_config: Some(HostConfig {
                binds: Some(vec![
                    bind(self.root.apps_dir(id), "/apps"),
                    bind(self.root.docker_dir(id), "/var/lib/docker"),
                ]),
                runtime: Some(self.settings.runtime.clone()),
                network_mode: Some(self.settings.network.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                nano_cpus: spec.nano_cpus(),
                memory: spec.memory_bytes(),
                pids_limit: Some(self.settings.pids_limit),
                port_bindings: (!spec.ports.is_empty()).then(|| port_map(spec)),
                ..self.confinement()
            }),
            ..Default::default()
        }
    }

    /// What of an existing container differs from what `container_body`
    /// would build for `spec`: image, runtime, mounts and limits (none when
    /// it matches).
    pub async fn differences(&self, container: &str, id: ServerId, spec: &ServerSpec) -> Result<Vec<String>, OpError> {
        let inspect = self.docker.inspect_container(container, None).await?;
        let want = self.container_body(id, spec);
        let want_host = want.host_config.unwrap_or_default();
        let have_host = inspect.host_config.unwrap_or_default();
        let have_image = inspect.config.and_then(|c| c.image);
        // Docker shows "no limit" as 0 (or -1 for pids).
        let limit = |v: Option<i64>| v.filter(|v| *v > 0);
        let sorted = |v: Option<Vec<String>>| {
            let mut v = v.unwrap_or_default();
            v.sort();
            v
        };
        let mut differ = Vec::new();
        let mut check = |what: &str, same: bool, have: String, want: String| {
            if !same {
                differ.push(format!("{what}: {have} instead of {want}"));
            }
        };
        check("image", have_image == want.image, format!("{have_image:?}"), format!("{:?}", want.image));
        check(
            "runtime",
            have_host.runtime == want_host.runtime,
            format!("{:?}", have_host.runtime),
            format!("{:?}", want_host.runtime),
        );
        check(
            "mounts",
            sorted(have_host.binds.clone()) == sorted(want_host.binds.clone()),
            format!("{:?}", have_host.binds),
            format!("{:?}", want_host.binds),
        );
        let bindings = |map: Option<PortMap>| {
            let mut v: Vec<(String, Vec<Option<String>>)> = map
                .unwrap_or_default()
                .into_iter()
                .map(|(port, to)| (port, to.unwrap_or_default().into_iter().map(|b| b.host_port).collect()))
                .collect();
            v.sort();
            v
        };
        let (have_ports, want_ports) = (bindings(have_host.port_bindings), bindings(want_host.port_bindings));
        check("ports", have_ports == want_ports, format!("{have_ports:?}"), format!("{want_ports:?}"));
        for (what, have, want) in [
            ("nano_cpus", have_host.nano_cpus, want_host.nano_cpus),
            ("memory", have_host.memory, want_host.memory),
            ("pids_limit", have_host.pids_limit, want_host.pids_limit),
        ] {
            check(what, limit(have) == limit(want), format!("{have:?}"), format!("{want:?}"));
        }
        Ok(differ)
    }

    /// The TCP host ports that containers on this engine publish, any
    /// container's (seed 002's second layer).
    pub async fn published_ports(&self) -> Result<std::collections::HashSet<u16>, OpError> {
        let options = ListContainersOptions { all: true, ..Default::default() };
        let mut bound = std::collections::HashSet::new();
        for c in self.docker.list_containers(Some(options)).await? {
            bound.extend(c.ports.unwrap_or_default().into_iter().filter_map(|p| p.public_port));
            // A stopped container publishes nothing now but takes its
            // ports back when it starts.
            let Some(id) = c.id else { continue };
            if c.state != Some(ContainerSummaryStateEnum::RUNNING) {
                let inspect = match self.docker.inspect_container(&id, None).await {
                    Ok(inspect) => inspect,
                    Err(e) if docker_status(&e) == Some(404) => continue,
                    Err(e) => return Err(e.into()),
                };
                let map = inspect.host_config.and_then(|h| h.port_bindings).unwrap_or_default();
                bound.extend(
                    map.into_values()
                        .flatten()
                        .flatten()
                        .filter_map(|b| b.host_port.and_then(|p| p.parse::<u16>().ok())),
                );
            }
        }
        Ok(bound)
    }

    fn confinement(&self) -> HostConfig {
        if !self.settings.unconfined {
            return HostConfig::default();
        }
        let strings = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        HostConfig {
            cap_add: strings(&["ALL"]),
            cap_drop: strings(&["SYS_RESOURCE"]),
            security_opt: strings(&["seccomp=unconfined", "apparmor=unconfined"]),
            // What the CLI's `--security-opt systempaths=unconfined` means.
            masked_paths: Some(vec![]),
            readonly_paths: Some(vec![]),
            device_cgroup_rules: strings(&["a *:* rwm"]),
            ..Default::default()
        }
    }

    pub async fn start(&self, container: &str) -> Result<(), OpError> {
        // 304 (already running) is success for bollard.
        Ok(self.docker.start_container(container, None).await?)
    }

    pub async fn stop(&self, container: &str) -> Result<(), OpError> {
        let options = StopContainerOptions { t: Some(self.settings.stop_timeout_secs), signal: None };
        match self.docker.stop_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if docker_status(&e) == Some(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn restart(&self, container: &str) -> Result<(), OpError> {
        let options = bollard::query_parameters::RestartContainerOptions {
            t: Some(self.settings.stop_timeout_secs),
            signal: None,
        };
        Ok(self.docker.restart_container(container, Some(options)).await?)
    }

    /// Stops (gracefully) and removes; a container already gone is fine.
    pub async fn remove(&self, container: &str) -> Result<(), OpError> {
        self.stop(container).await?;
        let options = RemoveContainerOptions { force: true, v: false, link: false };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(docker_status(&e), Some(404)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every container labelled for this host (any server), with its state:
    /// what a sync reports. Containers of other hosts are never listed.
    pub async fn list_managed(&self) -> Result<Vec<SeenContainer>, OpError> {
        let filters = HashMap::from([("label".to_owned(), self.ours_filter())]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let mut seen = Vec::new();
        for c in self.docker.list_containers(Some(options)).await? {
            let labels = c.labels.unwrap_or_default();
            let Some(server_id) = labels.get(labels::SERVER_ID).and_then(|v| v.parse::<ServerId>().ok()) else {
                continue;
            };
            let state = match c.state {
                Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING) => {
                    ContainerState::Running
                }
                _ => ContainerState::Stopped,
            };
            seen.push(SeenContainer { server_id, container_id: c.id.unwrap_or_default(), state });
        }
        Ok(seen)
    }

    /// Runs `cmd` inside a container and collects its output; a non-zero
    /// exit is returned as such, not as an error.
    pub async fn exec(&self, container: &str, cmd: &[&str]) -> Result<ExecOutput, OpError> {
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
            ..Default::default()
        };
        let exec = self.docker.create_exec(container, config).await?;
        let mut out = ExecOutput::default();
        if let bollard::exec::StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, None).await?
        {
            while let Some(chunk) = output.next().await {
                match chunk? {
                    bollard::container::LogOutput::StdErr { message } => {
                        out.stderr.push_str(&String::from_utf8_lossy(&message))
                    }
                    other => out.stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
                }
            }
        }
        out.exit_code = self.docker.inspect_exec(&exec.id).await?.exit_code.unwrap_or(-1);
        Ok(out)
    }

    /// Our containers for this server on this host that are not under its
    /// canonical name.
    async fn remove_strays(&self, id: ServerId) -> Result<(), OpError> {
        let mut ours = self.ours_filter();
        ours.push(format!("{}={id}", labels::SERVER_ID));
        let filters = HashMap::from([("label".to_owned(), ours)]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let canonical = format!("/{}", self.name(id));
        for c in self.docker.list_containers(Some(options)).await? {
            let names = c.names.unwrap_or_default();
            if names.contains(&canonical) {
                continue;
            }
            if let Some(cid) = c.id {
                tracing::warn!(
                    container = cid,
                    ?names,
                    "removing a stray container of this server before recreating it"
                );
                self.remove(&cid).await?;
            }
        }
        Ok(())
    }
}

fn tcp(port: u16) -> String {
    format!("{port}/tcp")
}

/// Each published port on every address of the host.
fn port_map(spec: &ServerSpec) -> PortMap {
    spec.ports
        .iter()
        .map(|p| {
            let binding = PortBinding { host_ip: None, host_port: Some(p.host.to_string()) };
            (tcp(p.container), Some(vec![binding]))
        })
        .collect()
}

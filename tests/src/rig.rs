//! The multi-host rig: what a deployment across several Docker hosts looks
//! like, on one machine, for the failover tests (`tests/tests/rig/`), the
//! bench's host figures and `scripts/rig` (people).
//!
//! - a Docker network of its own, `vsrig-<id>` (a /24 of 10.231.0.0/16 with
//!   fixed addresses, so a container keeps its address across `docker start`
//!   and `docker network connect`);
//! - three nats-server nodes in one cluster, each in its own container
//!   (`vsfleet-busybox` with the static nats-server bind-mounted), JetStream
//!   on with a store directory of its own, the permission config of
//!   `contract::permissions` for the rig's prefix and hosts, and routes to
//!   the other nodes;
//! - three worker hosts, each a `vsfleet-dind-test` container running its
//!   own dockerd (the capability flags of images/dind-test/README.md) with
//!   `vsfleet-test-server` loaded and the servers' network created in its
//!   engine, and a `vsfleet-worker` (the cargo build, bind-mounted) kept
//!   running by the container's command ([`HOST_SCRIPT`]): `docker kill` and
//!   `docker start` take the whole host down and up again (dockerd, the
//!   worker), [`Rig::kill_worker`] kills only the worker (`kill -9`) and
//!   holds it down until [`Rig::start_worker`], `docker network disconnect`
//!   cuts the host off. Each engine also listens on a socket in a directory
//!   of the machine, so the rig reads each host's containers directly;
//! - `vsfleet-api` and `vsfleet-scheduler` as processes on the machine
//!   ([`Service`]), SQLite in the rig's directory, an admin token made with
//!   `vsfleet-api user create`.
//!
//! Every service is given the three nodes in `nats.url` (a comma-separated
//! list), so it connects to any that answers and fails over to the others.
//!
//! Everything the rig makes carries the label `vsfleet.rig=<id>` or the name
//! `vsrig-<id>…` (the directory is `/tmp/vsrig-<id>`), and is removed by
//! [`Rig::down`], by `Drop` when a test panics, and by [`remove_all`]
//! (`scripts/rig down`) for rigs whose process died. The logs' tails are
//! printed when a test fails, and at the end with `VSRIG_LOGS=1`;
//! `VSRIG_KEEP=1` keeps a failed test's rig for a look.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::SqlitePool;
use vsfleet_contract::connect::Role;
use vsfleet_contract::{Settings, Subjects, labels, permissions};

use crate::app::TEST_IMAGE;
use crate::process::{Service, bin_dir};

/// The label on every container and network of a rig; its value is the rig's id.
pub const LABEL: &str = "vsfleet.rig";
pub const NAME_PREFIX: &str = "vsrig-";
pub const HOST_IMAGE: &str = "vsfleet-dind-test:latest";
pub const NATS_IMAGE: &str = "vsfleet-busybox:latest";
/// The servers' network inside each host's engine (the worker does not create it).
pub const SERVER_NETWORK: &str = "filtered-users";
/// `worker.data_root` inside a host container, bind-mounted from the rig's directory.
pub const HOST_DATA_ROOT: &str = "/var/lib/vsfleet/SERVERS";
const CLIENT_PORT: u16 = 4222;
const MONITOR_PORT: u16 = 8222;

/// The command of a host container, under tini: the image's entrypoint
/// (dockerd, also listening on /rig/run/docker.sock for the rig), then
/// vsfleet-worker, started again whenever it exits unless /rig/ctl/hold
/// exists. Its pid is in /rig/ctl/worker.pid while it runs; its output goes
/// to /rig/worker.log. SIGTERM stops both.
pub const HOST_SCRIPT: &str = r#"#!/bin/bash
set -u
/usr/local/bin/dind-entrypoint -H unix:///var/run/docker.sock -H unix:///rig/run/docker.sock &
dind=$!
worker=
stopping=
stop() {
    stopping=1
    [ -z "$worker" ] || kill -TERM "$worker" 2>/dev/null
    kill -TERM "$dind" 2>/dev/null
}
trap stop TERM INT
rm -f /rig/ctl/worker.pid
until [ -e /run/dind-ready ]; do
    [ -z "$stopping" ] || exit 0
    kill -0 "$dind" 2>/dev/null || { echo "rig: dockerd did not start" >>/rig/worker.log; exit 1; }
    sleep 0.1
done
while [ -z "$stopping" ]; do
    if [ -e /rig/ctl/hold ]; then sleep 0.1; continue; fi
    /usr/local/bin/vsfleet-worker --config /rig/worker.toml >>/rig/worker.log 2>&1 &
    worker=$!
    echo "$worker" >/rig/ctl/worker.pid
    echo "rig: worker $worker started" >>/rig/worker.log
    status=0
    # `wait` returns early when a trapped signal arrives.
    while kill -0 "$worker" 2>/dev/null; do wait "$worker"; status=$?; done
    echo "rig: worker $worker exited (status $status)" >>/rig/worker.log
    rm -f /rig/ctl/worker.pid
    worker=
    [ -n "$stopping" ] || sleep 0.5
done
while kill -0 "$dind" 2>/dev/null; do wait "$dind"; done
"#;

/// A change to the rig's settings.
pub type Adjust = Box<dyn FnOnce(&mut Settings) + Send>;

/// What a rig is made of, and the settings its services run with.
pub struct RigConfig {
    pub hosts: usize,
    pub nats_nodes: usize,
    /// Settings that not every build of the contract has (`nats.replicas`,
    /// `worker.capacity`): written into the services' configuration only
    /// when this build's `Settings` accepts them; [`Rig::unsupported`]
    /// names the others.
    pub extra: Vec<(String, toml::Value)>,
    /// Changes to the rig's settings (all services share them).
    pub adjust: Option<Adjust>,
    /// Where `vsfleet-api`, `-worker` and `-scheduler` are (default
    /// [`bin_dir`]: the debug build); the bench gives its release build.
    pub bin_dir: Option<PathBuf>,
}

impl Default for RigConfig {
    fn default() -> Self {
        Self {
            hosts: 3,
            nats_nodes: 3,
            extra: vec![("nats.replicas".into(), toml::Value::Integer(3))],
            adjust: None,
            bin_dir: None,
        }
    }
}

impl RigConfig {
    pub fn with(mut self, adjust: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        self.adjust = Some(Box::new(adjust));
        self
    }

    pub fn hosts(mut self, hosts: usize) -> Self {
        self.hosts = hosts;
        self
    }

    pub fn extra(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.extra.retain(|(k, _)| k != key);
        self.extra.push((key.into(), value.into()));
        self
    }
}

/// One nats-server node of the cluster.
pub struct NatsNode {
    pub name: String,
    pub container: String,
    pub ip: Ipv4Addr,
}

impl NatsNode {
    pub fn url(&self) -> String {
        format!("nats://{}:{CLIENT_PORT}", self.ip)
    }

    fn monitor(&self, path: &str) -> String {
        format!("http://{}:{MONITOR_PORT}{path}", self.ip)
    }
}

/// One worker host: a container with its own dockerd and a worker.
pub struct Host {
    /// `worker.host_id`, also the container's hostname.
    pub id: String,
    pub container: String,
    pub ip: Ipv4Addr,
    /// Its files on the machine: `docker/` (its engine's /var/lib/docker),
    /// `rig/` (script, worker config and log, control files, the engine's
    /// socket), `SERVERS/` (the worker's data root).
    pub dir: PathBuf,
    /// Its engine, through the socket in `rig/run/`.
    pub docker: Docker,
}

impl Host {
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("SERVERS")
    }

    pub fn worker_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rig/worker.log")).unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("rig/run/docker.sock")
    }

    fn hold_file(&self) -> PathBuf {
        self.dir.join("rig/ctl/hold")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("rig/ctl/worker.pid")
    }
}

/// A container of ours (labels of `contract::labels`) in some engine.
#[derive(Debug, Clone)]
pub struct Managed {
    pub id: String,
    pub name: String,
    pub server_id: Option<i64>,
    /// Its `vsfleet.host` label.
    pub host_label: String,
    /// `running`, `exited`, `created` …
    pub state: String,
    /// (source, destination), sorted.
    pub mounts: Vec<(String, String)>,
}

/// The HTTP API as the rig's admin; cheap to clone into tasks.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub addr: SocketAddr,
    pub token: String,
}

impl Api {
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("http://{}{path}", self.addr)).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.try_call(method, path, body).await.unwrap_or_else(|e| panic!("{path}: the api does not answer: {e}"))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A lifecycle request (`delete` is `DELETE /v1/servers/{id}`).
    pub async fn act(&self, id: i64, action: &str) -> (StatusCode, Value) {
        self.try_act(id, action).await.unwrap_or_else(|e| panic!("{action} {id}: the api does not answer: {e}"))
    }

    pub async fn try_act(&self, id: i64, action: &str) -> reqwest::Result<(StatusCode, Value)> {
        if action == "delete" {
            self.try_call(Method::DELETE, &format!("/v1/servers/{id}"), None).await
        } else {
            self.try_call(Method::POST, &format!("/v1/servers/{id}/{action}"), Some(json!({}))).await
        }
    }

    pub async fn server(&self, id: i64) -> Value {
        let (status, body) = self.get(&format!("/v1/servers/{id}")).await;
        assert_eq!(status, StatusCode::OK, "GET /v1/servers/{id}: {body}");
        body["server"].clone()
    }

    pub async fn job(&self, job_id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/jobs/{job_id}")).await;
        assert_eq!(status, StatusCode::OK, "GET /v1/jobs/{job_id}: {body}");
        body["job"].clone()
    }

    /// Waits until the job is `succeeded` or `failed`; returns it.
    pub async fn wait_job(&self, job_id: &str, timeout: Duration) -> Value {
        wait_for(&format!("job {job_id} finishes"), timeout, || async move {
            let (_, body) = self.try_call(Method::GET, &format!("/v1/jobs/{job_id}"), None).await.ok()?;
            matches!(body["job"]["status"].as_str(), Some("succeeded" | "failed")).then(|| body["job"].clone())
        })
        .await
    }

    pub async fn wait_status(&self, id: i64, want: &str, timeout: Duration) -> Value {
        wait_for(&format!("server {id} becomes {want}"), timeout, || async move {
            let (_, body) = self.try_call(Method::GET, &format!("/v1/servers/{id}"), None).await.ok()?;
            (body["server"]["status"] == want).then(|| body["server"].clone())
        })
        .await
    }

    /// `GET /v1/hosts`, by host id.
    pub async fn hosts(&self) -> HashMap<String, Value> {
        let (status, body) = self.get("/v1/hosts").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| Some((h["host"].as_str()?.to_owned(), h.clone())))
            .collect()
    }
}

pub struct Rig {
    pub id: String,
    pub dir: PathBuf,
    pub network: String,
    /// The first three octets of the network's /24.
    net: [u8; 3],
    pub nats: Vec<NatsNode>,
    pub hosts: Vec<Host>,
    /// Hosts started whose engine has not answered yet.
    pending: Vec<Host>,
    /// The shared settings, as the api's user.
    pub settings: Settings,
    /// Settings of [`RigConfig::extra`] written into the services' configuration.
    pub extra: Vec<(String, toml::Value)>,
    /// Those this build's `Settings` does not know (left out).
    pub unsupported: Vec<String>,
    pub passwords: HashMap<String, String>,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    pub api: Api,
    /// A pool on the api's database, to read real rows.
    pub db: SqlitePool,
    /// The machine's own engine (where no server may appear).
    pub machine: Docker,
    api_service: Option<Service>,
    scheduler_service: Option<Service>,
    /// How many api / scheduler processes were started, for their log names.
    spawned: usize,
    removed: bool,
}

fn run_id() -> String {
    format!("{:06x}", uuid::Uuid::new_v4().as_u128() as u32 & 0xff_ffff)
}

impl Rig {
    /// Starts a whole rig; returns when the api answers, every node has
    /// joined the cluster and every host's worker is alive in `GET /v1/hosts`.
    pub async fn start(config: RigConfig) -> Rig {
        let started = Instant::now();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let id = run_id();
        let dir = std::env::temp_dir().join(format!("{NAME_PREFIX}{id}"));
        std::fs::create_dir_all(&dir).expect("creating the rig's directory");
        let prefix = format!("r{id}");
        let host_ids: Vec<String> = (1..=config.hosts).map(|i| format!("host{i}")).collect();
        let host_refs: Vec<&str> = host_ids.iter().map(String::as_str).collect();
        let users = permissions::users(&Subjects::new(&prefix).unwrap(), &host_refs).unwrap();
        let passwords: HashMap<String, String> =
            users.iter().map(|u| (u.name.clone(), format!("pw-{}-{}", u.name, run_id()))).collect();

        let mut settings = Settings::default();
        settings.database.url = format!("sqlite://{}", dir.join("vsfleet.db").display());
        settings.nats.prefix = prefix;
        settings.api.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        settings.api.outbox_interval_ms = 200;
        settings.worker.data_root = HOST_DATA_ROOT.into();
        settings.worker.image = TEST_IMAGE.into();
        settings.worker.runtime = "runc".into();
        settings.worker.unconfined = true;
        settings.worker.network = SERVER_NETWORK.into();
        settings.worker.stop_timeout_secs = 5;
        settings.worker.heartbeat_secs = 1;
        // The busybox stand-in has no inner Docker to list.
        settings.worker.monitor_interval_ms = 0;
        settings.scheduler.sync_interval_ms = 2000;
        settings.scheduler.cleanup_interval_ms = 5000;
        settings.scheduler.purge_interval_ms = 5000;
        if let Some(adjust) = config.adjust {
            adjust(&mut settings);
        }
        settings.validate().expect("the rig's settings are valid");
        let (extra, unsupported): (Vec<_>, Vec<_>) =
            config.extra.into_iter().partition(|(key, value)| supports(key, value.clone()));
        let unsupported: Vec<String> = unsupported.into_iter().map(|(k, _)| k).collect();
        for key in &unsupported {
            eprintln!("rig: this build's settings have no `{key}`; the services run without it");
        }

        let machine = Docker::connect_with_defaults().unwrap().negotiate_version().await.unwrap();
        let api = Api {
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
            addr: settings.api.listen,
            token: String::new(),
        };
        let mut rig = Rig {
            network: format!("{NAME_PREFIX}{id}"),
            id,
            dir,
            net: [10, 231, 0],
            nats: Vec::new(),
            hosts: Vec::new(),
            pending: Vec::new(),
            settings,
            extra,
            unsupported,
            passwords,
            bin_dir: config.bin_dir.unwrap_or_else(|| bin_dir().to_owned()),
            api,
            db: SqlitePool::connect_lazy("sqlite::memory:").unwrap(),
            machine,
            api_service: None,
            scheduler_service: None,
            spawned: 0,
            removed: false,
        };
        // From here on, a panic leaves `rig` to Drop, which removes what exists.
        rig.write_meta();
        rig.create_network().await;
        rig.copy_binaries();
        rig.start_nats(config.nats_nodes, &users).await;
        rig.start_hosts(&host_ids).await;
        rig.wait_cluster().await;
        rig.prepare_hosts().await;

        // The admin (the CLI applies the migrations), the api, the workers, the scheduler.
        let api_config = rig.write_config("api", &rig.nats_url());
        let out = tokio::process::Command::new(rig.bin_dir.join("vsfleet-api"))
            .args(["--config", path_str(&api_config), "user", "create", "--email", "admin@rig.test", "--admin"])
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("running vsfleet-api user create");
        assert!(out.status.success(), "vsfleet-api user create: {}", String::from_utf8_lossy(&out.stderr));
        rig.api.token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        rig.db = SqlitePool::connect(&rig.settings.database.url).await.unwrap();
        rig.start_api().await;
        for host in &rig.hosts {
            let _ = std::fs::remove_file(host.hold_file());
        }
        rig.start_scheduler().await;
        for i in 0..rig.hosts.len() {
            rig.wait_host_alive(i, Duration::from_secs(60)).await;
        }
        rig.write_meta();
        eprintln!("rig {} up in {:.1} s", rig.id, started.elapsed().as_secs_f64());
        rig
    }

    pub fn prefix(&self) -> &str {
        &self.settings.nats.prefix
    }

    pub fn host_index(&self, host: &str) -> usize {
        self.hosts.iter().position(|h| h.id == host).unwrap_or_else(|| panic!("no host {host} in the rig"))
    }

    /// Fails the test, naming the setting, when the build lacks it.
    pub fn require(&self, key: &str) {
        assert!(
            !self.unsupported.iter().any(|k| k == key),
            "this test needs the setting `{key}`, which this build of the contract does not have yet"
        );
    }

    /// The settings with `user`'s NATS credentials, connecting to `url`.
    pub fn settings_as(&self, user: &str, url: &str) -> Settings {
        let mut settings = self.settings.clone();
        settings.nats.url = url.to_owned();
        settings.nats.user = Some(user.to_owned());
        settings.nats.password = Some(self.passwords[user].clone());
        settings
    }

    /// `nats.url` of the services: every node of the cluster.
    pub fn nats_url(&self) -> String {
        self.nats.iter().map(NatsNode::url).collect::<Vec<_>>().join(",")
    }

    /// A NATS client as the api's user (which owns the streams), to any node.
    pub async fn nats_client(&self) -> async_nats::Client {
        vsfleet_contract::connect::connect(&self.settings_as("api", &self.nats_url()), Role::Api)
            .await
            .expect("connecting to the rig's NATS")
    }

    /// The service's configuration file: the settings as `user` through
    /// `url`, plus the supported extra settings.
    fn write_config(&self, user: &str, url: &str) -> PathBuf {
        let path = self.dir.join(format!("{user}.toml"));
        std::fs::write(&path, self.config_text(user, url)).unwrap();
        path
    }

    fn config_text(&self, user: &str, url: &str) -> String {
        let mut table = to_table(&self.settings_as(user, url));
        for (key, value) in &self.extra {
            set_key(&mut table, key, value.clone());
        }
        toml::to_string(&table).unwrap()
    }

    async fn create_network(&mut self) {
        for _ in 0..20 {
            let third = rand_u8();
            let subnet = format!("10.231.{third}.0/24");
            let created = docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--label",
                &format!("{LABEL}={}", self.id),
                "--subnet",
                &subnet,
                "--gateway",
                &format!("10.231.{third}.1"),
                &self.network,
            ])
            .await;
            match created {
                Ok(_) => {
                    self.net = [10, 231, third];
                    return;
                }
                Err(e) if e.contains("overlap") => continue,
                Err(e) => panic!("creating the rig's network: {e}"),
            }
        }
        panic!("no free /24 in 10.231.0.0/16 for the rig's network");
    }

    fn ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], last)
    }

    /// Hard links (else copies) of the binaries the containers run, so a
    /// rebuild during a run does not change them under a restarted worker.
    fn copy_binaries(&self) {
        let bin = self.dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let worker = self.bin_dir.join("vsfleet-worker");
        let nats = crate::nats_server::binary();
        for (from, name) in [(worker, "vsfleet-worker"), (nats, "nats-server")] {
            let from = if from.is_absolute() { from } else { which(&from) };
            let to = bin.join(name);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
            }
        }
    }

    async fn start_nats(&mut self, nodes: usize, users: &[permissions::User]) {
        let auth = permissions::render(users);
        let env: String = users.iter().map(|u| format!("{}={}\n", u.password_env, self.passwords[&u.name])).collect();
        let cluster = format!("{NAME_PREFIX}{}", self.id);
        self.nats = (1..=nodes)
            .map(|i| NatsNode {
                name: format!("n{i}"),
                container: format!("{NAME_PREFIX}{}-nats{i}", self.id),
                ip: self.ip(10 + i as u8),
            })
            .collect();
        for (i, node) in self.nats.iter().enumerate() {
            let dir = self.dir.join(format!("nats{}", i + 1));
            std::fs::create_dir_all(dir.join("etc")).unwrap();
            std::fs::create_dir_all(dir.join("data")).unwrap();
            let routes: Vec<String> = self
                .nats
                .iter()
                .filter(|other| other.name != node.name)
                .map(|other| format!("\"nats://{}:6222\"", other.ip))
                .collect();
            let conf = format!(
                "server_name: {name}\nlisten: \"0.0.0.0:{CLIENT_PORT}\"\nhttp: \"0.0.0.0:{MONITOR_PORT}\"\n\
                 jetstream {{ store_dir: \"/data\" }}\n\
                 cluster {{\n    name: {cluster}\n    listen: \"0.0.0.0:6222\"\n    routes: [{routes}]\n}}\n\
                 include \"auth.conf\"\n",
                name = node.name,
                routes = routes.join(", "),
            );
            std::fs::write(dir.join("etc/nats.conf"), conf).unwrap();
            std::fs::write(dir.join("etc/auth.conf"), &auth).unwrap();
            std::fs::write(dir.join("env"), &env).unwrap();
            let bin = self.dir.join("bin/nats-server");
            docker(&[
                "run",
                "-d",
                "--name",
                &node.container,
                "--hostname",
                &node.name,
                "--label",
                &format!("{LABEL}={}", self.id),
                "--network",
                &self.network,
                "--ip",
                &node.ip.to_string(),
                "--env-file",
                path_str(&dir.join("env")),
                "-v",
                &format!("{}:/nats-server:ro", bin.display()),
                "-v",
                &format!("{}:/etc/nats:ro", dir.join("etc").display()),
                "-v",
                &format!("{}:/data", dir.join("data").display()),
                NATS_IMAGE,
                "/nats-server",
                "-c",
                "/etc/nats/nats.conf",
            ])
            .await
            .unwrap_or_else(|e| panic!("starting {}: {e}", node.container));
        }
    }

    /// Waits until every node answers, sees the others and agrees on a
    /// JetStream meta leader.
    async fn wait_cluster(&self) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        for node in &self.nats {
            let n = self.nats.len();
            wait_for(&format!("nats node {} joins the cluster", node.name), Duration::from_secs(60), || {
                let http = http.clone();
                async move {
                    let get = |path: String| {
                        let http = http.clone();
                        async move { http.get(path).send().await.ok()?.json::<Value>().await.ok() }
                    };
                    let health = get(node.monitor("/healthz")).await?;
                    let varz = get(node.monitor("/varz")).await?;
                    let jsz = get(node.monitor("/jsz")).await?;
                    (health["status"] == "ok"
                        && varz["connect_urls"].as_array().map_or(0, Vec::len) >= n
                        && jsz["meta_cluster"]["leader"].as_str().is_some_and(|l| !l.is_empty()))
                    .then_some(())
                }
            })
            .await;
        }
    }

    async fn start_hosts(&mut self, ids: &[String]) {
        let worker_bin = self.dir.join("bin/vsfleet-worker");
        for (i, id) in ids.iter().enumerate() {
            let dir = self.dir.join(id);
            for sub in ["docker", "rig/run", "rig/ctl", "SERVERS"] {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
            }
            std::fs::write(dir.join("rig/host.sh"), HOST_SCRIPT).unwrap();
            // The worker waits until the engine has the image and network.
            std::fs::write(dir.join("rig/ctl/hold"), "").unwrap();
            let user = permissions::worker_user(id);
            let mut settings = self.settings_as(&user, &self.nats_url());
            settings.worker.host_id = id.clone();
            let mut table = to_table(&settings);
            for (key, value) in &self.extra {
                set_key(&mut table, key, value.clone());
            }
            std::fs::write(dir.join("rig/worker.toml"), toml::to_string(&table).unwrap()).unwrap();
            let container = format!("{NAME_PREFIX}{}-{id}", self.id);
            let ip = self.ip(20 + i as u8 + 1);
            docker(&[
                "run",
                "-d",
                "--name",
                &container,
                "--hostname",
                id,
                "--label",
                &format!("{LABEL}={}", self.id),
                "--network",
                &self.network,
                "--ip",
                &ip.to_string(),
                "--cap-add",
                "ALL",
                "--cap-drop",
                "SYS_RESOURCE",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                "--security-opt",
                "systempaths=unconfined",
                "--device-cgroup-rule",
                "a *:* rwm",
                "-e",
                "DIND_STOP_SECS=1",
                "-v",
                &format!("{}:/var/lib/docker", dir.join("docker").display()),
                "-v",
                &format!("{}:/rig", dir.join("rig").display()),
                "-v",
                &format!("{}:{HOST_DATA_ROOT}", dir.join("SERVERS").display()),
                "-v",
                &format!("{}:/usr/local/bin/vsfleet-worker:ro", worker_bin.display()),
                "--entrypoint",
                "/usr/bin/tini",
                HOST_IMAGE,
                "--",
                "/bin/bash",
                "/rig/host.sh",
            ])
            .await
            .unwrap_or_else(|e| panic!("starting host {id}: {e}"));
            self.pending.push(Host { id: id.clone(), container, ip, dir, docker: self.machine.clone() });
        }
    }

    /// Each host's engine: the server image loaded, the servers' network made.
    async fn prepare_hosts(&mut self) {
        for mut host in std::mem::take(&mut self.pending) {
            wait_socket(&host, Duration::from_secs(60)).await;
            let docker = Docker::connect_with_unix(path_str(&host.socket()), 30, bollard::API_DEFAULT_VERSION).unwrap();
            host.docker = docker.negotiate_version().await.expect("the host's engine answers");
            self.hosts.push(host);
            let host = self.hosts.last().expect("just pushed");
            let socket = format!("unix://{}", host.socket().display());
            let load = format!("docker save {TEST_IMAGE} | docker -H {socket} load -q");
            let out = tokio::process::Command::new("sh").args(["-c", &load]).output().await.unwrap();
            assert!(
                out.status.success(),
                "loading {TEST_IMAGE} into {}: {}",
                host.id,
                String::from_utf8_lossy(&out.stderr)
            );
            let out = tokio::process::Command::new("docker")
                .args(["-H", &socket, "network", "create", SERVER_NETWORK])
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "creating {SERVER_NETWORK} in {}: {}",
                host.id,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Waits until host `i`'s engine answers on its socket.
    pub async fn wait_engine(&self, i: usize, timeout: Duration) {
        wait_socket(&self.hosts[i], timeout).await;
    }

    // --- the services on the machine ---

    /// Starts the api process (on the rig's port); returns when it answers.
    pub async fn start_api(&mut self) {
        let config = self.write_config("api", &self.nats_url());
        self.spawned += 1;
        let name = format!("api-{}", self.spawned);
        let service = Service::spawn_at(
            &name,
            &self.bin_dir.join("vsfleet-api"),
            &["--config", path_str(&config)],
            &[],
            &self.dir.join(format!("{name}.log")),
        );
        write_pid(&self.dir, "api", service.pid());
        self.api_service = Some(service);
        let api = self.api.clone();
        wait_for("the api answers /healthz", Duration::from_secs(60), || async {
            let url = format!("http://{}/healthz", api.addr);
            api.http.get(url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
    }

    /// SIGTERM to the api; waits until it has exited.
    pub async fn stop_api(&mut self) {
        if let Some(mut service) = self.api_service.take() {
            service.terminate();
            if service.exited(Duration::from_secs(60)).await.is_none() {
                service.kill();
            }
        }
    }

    pub fn kill_api(&mut self) {
        if let Some(mut service) = self.api_service.take() {
            service.kill();
        }
    }

    pub async fn start_scheduler(&mut self) {
        let config = self.write_config("scheduler", &self.nats_url());
        self.spawned += 1;
        let name = format!("scheduler-{}", self.spawned);
        let service = Service::spawn_at(
            &name,
            &self.bin_dir.join("vsfleet-scheduler"),
            &["--config", path_str(&config)],
            &[],
            &self.dir.join(format!("{name}.log")),
        );
        write_pid(&self.dir, "scheduler", service.pid());
        self.scheduler_service = Some(service);
    }

    pub async fn stop_scheduler(&mut self) {
        if let Some(mut service) = self.scheduler_service.take() {
            service.terminate();
            if service.exited(Duration::from_secs(60)).await.is_none() {
                service.kill();
            }
        }
    }

    // --- hosts ---

    /// `docker kill` of host `i`: dockerd, the worker, the servers, all at once.
    pub async fn kill_host(&self, i: usize) {
        docker(&["kill", &self.hosts[i].container]).await.expect("docker kill");
    }

    /// `docker start` of host `i`; returns when its engine answers (the
    /// worker then starts by itself, unless held).
    pub async fn start_host(&self, i: usize) {
        docker(&["start", &self.hosts[i].container]).await.expect("docker start");
        self.wait_engine(i, Duration::from_secs(60)).await;
    }

    /// Cuts host `i` off the rig's network.
    pub async fn disconnect_host(&self, i: usize) {
        docker(&["network", "disconnect", &self.network, &self.hosts[i].container]).await.expect("disconnect");
    }

    /// Connects host `i` again, at its address.
    pub async fn connect_host(&self, i: usize) {
        let host = &self.hosts[i];
        docker(&["network", "connect", "--ip", &host.ip.to_string(), &self.network, &host.container])
            .await
            .expect("connect");
    }

    /// `kill -9` of host `i`'s worker only; it stays down until [`Rig::start_worker`].
    pub async fn kill_worker(&self, i: usize) {
        let host = &self.hosts[i];
        std::fs::write(host.hold_file(), "").unwrap();
        let pid = std::fs::read_to_string(host.pid_file()).expect("the worker runs").trim().to_owned();
        assert!(!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()), "worker pid {pid:?}");
        docker(&["exec", &host.container, "kill", "-9", &pid]).await.expect("kill -9 of the worker");
        wait_for(&format!("the worker of {} is gone", host.id), Duration::from_secs(10), || async {
            (!host.pid_file().exists()).then_some(())
        })
        .await;
    }

    /// Lets host `i`'s worker run again; returns when it consumes jobs.
    pub async fn start_worker(&self, i: usize) {
        let host = &self.hosts[i];
        let before = host.worker_log().matches("worker consuming jobs").count();
        let _ = std::fs::remove_file(host.hold_file());
        wait_for(&format!("the worker of {} consumes jobs", host.id), Duration::from_secs(60), || async {
            (host.worker_log().matches("worker consuming jobs").count() > before).then_some(())
        })
        .await;
    }

    /// SIGSTOP (`true`) or SIGCONT to host `i`'s containerd: Docker still
    /// answers, but starting a container hangs.
    pub async fn freeze_containerd(&self, i: usize, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let script = format!("kill {signal} $(pgrep -x containerd)");
        docker(&["exec", &self.hosts[i].container, "sh", "-c", &script]).await.expect("signalling containerd");
    }

    /// Waits until `GET /v1/hosts` shows host `i` alive and not degraded.
    pub async fn wait_host_alive(&self, i: usize, timeout: Duration) {
        let host = &self.hosts[i];
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Ok((StatusCode::OK, body)) = self.api.try_call(Method::GET, "/v1/hosts", None).await
                    && body["hosts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|h| h["host"] == host.id.as_str() && h["alive"] == true && h["degraded"].is_null())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "host {} is not alive after {timeout:?}; its worker's log:\n{}",
            host.id,
            tail(&host.worker_log(), 60)
        );
    }

    // --- nats nodes ---

    /// The node a client named `name` (`vsfleet-api`, `vsfleet-worker host1` …)
    /// is connected to, from the nodes' `/connz`.
    pub async fn nats_node_of(&self, name: &str) -> Option<usize> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
        for (i, node) in self.nats.iter().enumerate() {
            let Ok(resp) = http.get(node.monitor("/connz")).send().await else { continue };
            let Ok(connz) = resp.json::<Value>().await else { continue };
            if connz["connections"].as_array().into_iter().flatten().any(|c| c["name"] == name) {
                return Some(i);
            }
        }
        None
    }

    pub async fn kill_nats(&self, i: usize) {
        docker(&["kill", &self.nats[i].container]).await.expect("docker kill of a nats node");
    }

    pub async fn start_nats_node(&self, i: usize) {
        docker(&["start", &self.nats[i].container]).await.expect("docker start of a nats node");
        self.wait_cluster().await;
    }

    // --- what is where ---

    /// Our containers (this rig's deployment label) in host `i`'s engine.
    pub async fn containers(&self, i: usize) -> Vec<Managed> {
        list_managed(&self.hosts[i].docker, self.prefix())
            .await
            .unwrap_or_else(|e| panic!("listing the containers of {}: {e}", self.hosts[i].id))
    }

    /// Our containers in the machine's own engine: there should be none.
    pub async fn machine_containers(&self) -> Vec<Managed> {
        list_managed(&self.machine, self.prefix()).await.expect("listing the machine's containers")
    }

    /// Every server row: (id, host, status).
    pub async fn servers(&self) -> Vec<(i64, String, String)> {
        sqlx::query_as("SELECT id, host, status FROM servers ORDER BY id").fetch_all(&self.db).await.unwrap()
    }

    pub async fn jobs_in_flight(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Waits until no job is queued or running.
    pub async fn wait_jobs_done(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.jobs_in_flight().await;
            if left == 0 {
                return;
            }
            if Instant::now() > deadline {
                let rows: Vec<(String, i64, String, String, String, i64)> = sqlx::query_as(
                    "SELECT id, server_id, action, host, status, attempts FROM jobs WHERE status IN ('queued', 'running')",
                )
                .fetch_all(&self.db)
                .await
                .unwrap();
                panic!("{left} jobs still in flight after {timeout:?}: {rows:?}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until host `i`'s jobs consumer holds nothing: no job pending,
    /// none delivered and unacknowledged (so no redelivery is still to come).
    pub async fn wait_consumer_drained(&self, i: usize, timeout: Duration) {
        let js = async_nats::jetstream::new(self.nats_client().await);
        let stream = format!("{}_jobs", self.prefix());
        let name = format!("worker-{}", self.hosts[i].id);
        wait_for(&format!("the jobs consumer of {} drains", self.hosts[i].id), timeout, || async {
            let stream = js.get_stream(&stream).await.ok()?;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer(&name).await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await
    }

    /// The invariants, as the rows, every engine and every host's disk show
    /// them now: every job ended (a failure with its reason); each server's
    /// container exists once, in its own host's engine only, in the state
    /// its status says; no container of ours is an orphan or in the
    /// machine's engine; the data of a live server is on its host.
    pub async fn violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        let unfinished: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, action, status FROM jobs WHERE status NOT IN ('succeeded', 'failed') \
             OR (status = 'failed' AND COALESCE(error, '') = '')",
        )
        .fetch_all(&self.db)
        .await
        .unwrap();
        for (job, action, status) in unfinished {
            found.push(format!("job {job} ({action}) is {status} without a reason"));
        }
        let mut everywhere: Vec<(String, Managed)> = Vec::new();
        for (i, host) in self.hosts.iter().enumerate() {
            match list_managed(&host.docker, self.prefix()).await {
                Ok(list) => everywhere.extend(list.into_iter().map(|c| (host.id.clone(), c))),
                Err(e) => found.push(format!("cannot list the containers of host {} ({i}): {e}", host.id)),
            }
        }
        for c in self.machine_containers().await {
            found.push(format!("container {} ({}) is in the machine's engine", c.name, c.id));
        }
        let servers = self.servers().await;
        for (id, host, status) in &servers {
            let mine: Vec<&(String, Managed)> = everywhere.iter().filter(|(_, c)| c.server_id == Some(*id)).collect();
            for (engine, c) in &mine {
                if engine != host || c.host_label != *host {
                    found.push(format!("server {id} of {host} has container {} in {engine}'s engine", c.name));
                }
            }
            if mine.len() > 1 {
                let names: Vec<String> = mine.iter().map(|(e, c)| format!("{e}:{}:{}", c.name, c.state)).collect();
                found.push(format!("server {id} has {} containers: {names:?}", mine.len()));
            }
            let state = mine.first().map(|(_, c)| c.state.as_str());
            let problem = match (status.as_str(), state) {
                ("running", Some("running")) => None,
                ("running", _) => Some("its container is not running"),
                ("stopped", Some("running") | None) => Some("its container is not there and stopped"),
                ("missing" | "deleted", Some(_)) => Some("a container exists"),
                _ => None,
            };
            if let Some(problem) = problem {
                found.push(format!("server {id} on {host} is {status} but {problem} (container {state:?})"));
            }
            let root = self.hosts.iter().find(|h| &h.id == host).map(Host::data_root);
            let live = root.as_ref().is_some_and(|r| r.join(id.to_string()).join("apps").is_dir());
            if matches!(status.as_str(), "running" | "stopped" | "missing") && !live {
                found.push(format!("server {id} on {host} is {status} but its apps/ is not on its host"));
            }
        }
        for (engine, c) in &everywhere {
            let owned = servers
                .iter()
                .any(|(id, host, status)| Some(*id) == c.server_id && host == engine && status != "deleted");
            if !owned {
                found.push(format!("orphan container {} ({}) in {engine}'s engine, {}", c.name, c.id, c.state));
            }
        }
        found
    }

    /// Waits (up to `timeout`) for [`Rig::violations`] to be empty; panics with them otherwise.
    pub async fn assert_converged(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.violations().await;
            if found.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("the rig did not converge within {timeout:?}:\n  {}\n{}", found.join("\n  "), self.logs());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The tails of every log: services, workers, nats nodes.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "log"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.push_str(&format!("--- {} ---\n{}\n", path.display(), tail(&text, 80)));
        }
        for host in self.hosts.iter().chain(&self.pending) {
            out.push_str(&format!("--- worker of {} ---\n{}\n", host.id, tail(&host.worker_log(), 80)));
        }
        for node in &self.nats {
            let logs = std::process::Command::new("docker").args(["logs", "--tail", "40", &node.container]).output();
            if let Ok(o) = logs {
                out.push_str(&format!(
                    "--- {} ---\n{}{}\n",
                    node.container,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
        out
    }

    /// What `scripts/rig status` shows of a rig started by `scripts/rig up`.
    fn write_meta(&self) {
        let meta = json!({
            "id": self.id,
            "api": format!("http://{}", self.api.addr),
            "admin_token": self.api.token,
            "prefix": self.prefix(),
            "network": self.network,
            "nats": self.nats.iter().map(|n| json!({"name": n.name, "container": n.container, "url": n.url()})).collect::<Vec<_>>(),
            "hosts": self.hosts.iter().map(|h| json!({
                "id": h.id, "container": h.container, "ip": h.ip.to_string(),
                "docker_host": format!("unix://{}", h.socket().display()),
                "data_root": h.data_root(),
            })).collect::<Vec<_>>(),
            "unsupported_settings": self.unsupported,
        });
        let _ = std::fs::write(self.dir.join("rig.json"), serde_json::to_string_pretty(&meta).unwrap());
    }

    /// Stops everything and removes what the rig made; checks nothing is left.
    pub async fn down(mut self) {
        if std::env::var_os("VSRIG_LOGS").is_some() {
            eprintln!("{}", self.logs());
        }
        self.stop_scheduler().await;
        self.stop_api().await;
        self.db.close().await;
        remove(&self.id);
        self.removed = true;
        let left = docker(&["ps", "-aq", "--filter", &format!("label={LABEL}={}", self.id)]).await.unwrap_or_default();
        assert!(left.trim().is_empty(), "containers left behind: {left}");
        assert!(docker(&["network", "inspect", &self.network]).await.is_err(), "network left behind");
        assert!(!self.dir.exists(), "directory left behind");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if let Some(s) = self.api_service.as_mut() {
            s.kill();
        }
        if let Some(s) = self.scheduler_service.as_mut() {
            s.kill();
        }
        if std::env::var_os("VSRIG_KEEP").is_some() {
            eprintln!("rig {}: kept (VSRIG_KEEP); remove it with scripts/rig down {}", self.id, self.id);
            return;
        }
        remove(&self.id);
    }
}

// --- removal, also for `scripts/rig down` ---

/// Removes one rig: its processes (by the pids it recorded), containers
/// (with their anonymous volumes), network and directory.
pub fn remove(id: &str) {
    let dir = std::env::temp_dir().join(format!("{NAME_PREFIX}{id}"));
    for name in ["api", "scheduler"] {
        kill_recorded(&dir, name);
    }
    let filter = format!("label={LABEL}={id}");
    if let Ok(out) = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker").args(["rm", "-f", "-v"]).args(&ids).output();
        }
    }
    let _ = std::process::Command::new("docker").args(["network", "rm", &format!("{NAME_PREFIX}{id}")]).output();
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Every rig on this machine: by label and by directory name.
pub fn list() -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    for what in [["ps", "-a"], ["network", "ls"]] {
        let out = std::process::Command::new("docker")
            .args(what)
            .args(["--filter", &format!("label={LABEL}"), "--format", &format!("{{{{.Label \"{LABEL}\"}}}}")])
            .output();
        if let Ok(out) = out {
            ids.extend(String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned));
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in dir.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix(NAME_PREFIX)
                && entry.path().is_dir()
            {
                ids.insert(id.to_owned());
            }
        }
    }
    ids.into_iter().collect()
}

/// Removes every rig on this machine; returns their ids.
pub fn remove_all() -> Vec<String> {
    let ids = list();
    for id in &ids {
        remove(id);
    }
    ids
}

/// What `scripts/rig status` prints: each rig's containers and its `rig.json`.
pub fn status() -> String {
    let mut out = String::new();
    for id in list() {
        out.push_str(&format!("rig {id}\n"));
        let ps = std::process::Command::new("docker")
            .args(["ps", "-a", "--filter", &format!("label={LABEL}={id}"), "--format", "  {{.Names}}\t{{.Status}}"])
            .output();
        if let Ok(ps) = ps {
            out.push_str(&String::from_utf8_lossy(&ps.stdout));
        }
        let dir = std::env::temp_dir().join(format!("{NAME_PREFIX}{id}"));
        for name in ["api", "scheduler"] {
            let pid = std::fs::read_to_string(dir.join(format!("{name}.pid"))).unwrap_or_default();
            let running = pid.trim().parse::<u32>().ok().filter(|p| is_ours(*p, name));
            out.push_str(&format!("  {name}: {}\n", running.map_or("not running".into(), |p| format!("pid {p}"))));
        }
        if let Ok(meta) = std::fs::read_to_string(dir.join("rig.json"))
            && let Ok(meta) = serde_json::from_str::<Value>(&meta)
        {
            out.push_str(&format!("  api {}  admin token {}\n", meta["api"], meta["admin_token"]));
            for host in meta["hosts"].as_array().into_iter().flatten() {
                out.push_str(&format!("  {}: DOCKER_HOST={}\n", host["id"], host["docker_host"]));
            }
        }
    }
    if out.is_empty() {
        out.push_str("no rig\n");
    }
    out
}

fn write_pid(dir: &Path, name: &str, pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = std::fs::write(dir.join(format!("{name}.pid")), pid.to_string());
    }
}

/// Whether `pid` runs the rig's `vsfleet-{name}` (not a reused pid).
fn is_ours(pid: u32, name: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&format!("vsfleet-{name}"))))
}

fn kill_recorded(dir: &Path, name: &str) {
    let file = dir.join(format!("{name}.pid"));
    if let Some(pid) = std::fs::read_to_string(&file).ok().and_then(|p| p.trim().parse::<u32>().ok())
        && is_ours(pid, name)
    {
        crate::process::signal(pid, libc::SIGKILL);
    }
}

// --- helpers ---

/// Waits until a host's engine answers on its socket (a new connection
/// each time: the socket is made again when dockerd restarts).
async fn wait_socket(host: &Host, timeout: Duration) {
    wait_for(&format!("the engine of {} answers", host.id), timeout, || async {
        if !host.socket().exists() {
            return None;
        }
        let docker = Docker::connect_with_unix(path_str(&host.socket()), 5, bollard::API_DEFAULT_VERSION).ok()?;
        docker.ping().await.ok().map(|_| ())
    })
    .await
}

async fn list_managed(docker: &Docker, prefix: &str) -> Result<Vec<Managed>, bollard::errors::Error> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{}={prefix}", labels::DEPLOYMENT)])]);
    let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    let list = docker.list_containers(Some(options)).await?;
    Ok(list
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            let mut mounts: Vec<(String, String)> = c
                .mounts
                .unwrap_or_default()
                .into_iter()
                .map(|m| (m.source.unwrap_or_default(), m.destination.unwrap_or_default()))
                .collect();
            mounts.sort();
            Managed {
                id: c.id.unwrap_or_default(),
                name: c.names.and_then(|n| n.into_iter().next()).unwrap_or_default().trim_start_matches('/').to_owned(),
                server_id: labels.get(labels::SERVER_ID).and_then(|s| s.parse().ok()),
                host_label: labels.get(labels::HOST).cloned().unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                mounts,
            }
        })
        .collect())
}

/// Runs the docker CLI; its stdout, or stderr as the error.
pub async fn docker(args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether this build's `Settings` accepts `key` (dotted) with `value`.
pub fn supports(key: &str, value: toml::Value) -> bool {
    let mut table = to_table(&Settings::default());
    set_key(&mut table, key, value);
    toml::Value::Table(table).try_into::<Settings>().is_ok()
}

fn to_table(settings: &Settings) -> toml::Table {
    match toml::Value::try_from(settings).expect("settings serialise") {
        toml::Value::Table(table) => table,
        other => panic!("settings serialise to {other:?}"),
    }
}

fn set_key(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("a key");
    let mut at = table;
    for part in parts {
        at = at
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{key}: {part} is not a table"));
    }
    at.insert(last.to_owned(), value);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rand_u8() -> u8 {
    (uuid::Uuid::new_v4().as_u128() & 0xff) as u8
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn which(name: &Path) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{} is not on PATH (run scripts/ensure-nats-server)", name.display()))
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Seconds since `start`, for the tests' timing lines.
pub fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Containers by server id, over every host: for the tests' spread checks.
pub async fn by_host(rig: &Rig) -> BTreeMap<String, Vec<Managed>> {
    let mut out = BTreeMap::new();
    for (i, host) in rig.hosts.iter().enumerate() {
        out.insert(host.id.clone(), rig.containers(i).await);
    }
    out
}

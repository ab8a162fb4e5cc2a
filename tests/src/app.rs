//! `TestApp`: the real api and worker, in-process, against a real
//! nats-server, the real Docker engine and a real SQLite file, with names
//! unique to the test (prefix, host id, container prefix, network, data
//! root) so tests run in parallel. `teardown` removes everything and checks
//! that nothing is left; `Drop` does the removal when a test panics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use bollard::Docker;
use bollard::models::{ContainerInspectResponse, NetworkCreateRequest};
use bollard::query_parameters::ListContainersOptions;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::connect::Role;
use vsfleet_contract::{Settings, Subjects, labels, permissions};

use crate::nats_server::NatsServer;
use crate::process::Service;

pub const TEST_IMAGE: &str = "vsfleet-test-server:latest";
pub const WAIT: Duration = Duration::from_secs(30);

/// The one user of a test's nats-server that is not a vsfleet role: for
/// the benchmark's raw figures only.
pub const UNRESTRICTED: &str = "unrestricted";

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub admin_token: String,
    /// A second pool on the api's database, to read real rows; its
    /// statements are sent to SQLite or PostgreSQL as written (`$n` placeholders).
    pub db: sqlx::AnyPool,
    /// The api's store on the same database, for what the command line does (users).
    pub store: Option<vsfleet_api::store::Store>,
    /// The database itself (SQLite, or PostgreSQL with `TEST_POSTGRES_URL`).
    pub database: crate::database::TestDatabase,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub docker: Docker,
    pub settings: Settings,
    /// NATS password of each user of the permission config (`contract::permissions`).
    pub nats_passwords: std::collections::HashMap<String, String>,
    /// A second worker host the permission config knows, for tests across hosts.
    pub other_host: String,
    api: Option<(CancellationToken, JoinHandle<()>)>,
    /// More api replicas on the same database and NATS (`start_api_replica`).
    replicas: Vec<(CancellationToken, JoinHandle<()>)>,
    worker: Option<(CancellationToken, JoinHandle<()>)>,
    other_workers: Vec<(CancellationToken, JoinHandle<()>)>,
    schedulers: Vec<(CancellationToken, JoinHandle<()>)>,
    /// Services run as processes (crash and outage tests).
    pub services: Vec<Service>,
    network: String,
    // Dropped last: the nats-server, then the directory it lives in.
    pub nats_server: NatsServer,
    dir: tempfile::TempDir,
}

fn unique() -> String {
    format!("{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like `spawn_app`, with settings adjusted by `adjust` before anything starts.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    // The services' logs, shown for failing tests (RUST_LOG, default warn).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let dir = tempfile::Builder::new().prefix("vsfleet-test-").tempdir().unwrap();
    let id = unique();
    // The broker runs with the shipped permission config for this test's
    // prefix and hosts: every service connects as its own user, so a
    // missing permission fails the test that needs it.
    let (prefix, host, other_host) = (format!("t{id}"), format!("host-{id}"), format!("host-{id}-b"));
    let mut users = permissions::users(&Subjects::new(&prefix).unwrap(), &[&host, &other_host]).unwrap();
    // Not a role: the benchmark's raw figures (JetStream without vsfleet)
    // need streams and subjects of their own. No service connects as it.
    users.push(permissions::User {
        name: UNRESTRICTED.into(),
        password_env: permissions::password_env(UNRESTRICTED),
        permissions: permissions::Permissions {
            publish: vec![">".into()],
            subscribe: vec![">".into()],
            allow_responses: false,
        },
    });
    let nats_passwords: std::collections::HashMap<String, String> =
        users.iter().map(|u| (u.name.clone(), format!("pw-{}-{}", u.name, unique()))).collect();
    let auth_file = dir.path().join("nats-auth.conf");
    std::fs::write(&auth_file, permissions::render(&users)).unwrap();
    let env = users.iter().map(|u| (u.password_env.clone(), nats_passwords[&u.name].clone())).collect();
    let nats_server = NatsServer::start_with(&dir.path().join("nats"), Some((auth_file, env)));
    let docker = Docker::connect_with_defaults().unwrap().negotiate_version().await.unwrap();
    let network = format!("vsft-{id}");
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            ..Default::default()
        })
        .await
        .expect("creating the test network");

    let mut settings = Settings::default();
    let database = crate::database::TestDatabase::new(dir.path(), &id).await;
    settings.database.url = database.url.clone();
    settings.nats.url = nats_server.url().to_owned();
    settings.nats.prefix = prefix;
    settings.nats.user = Some("api".into());
    settings.nats.password = Some(nats_passwords["api"].clone());
    settings.nats.ack_wait_secs = 30;
    settings.api.listen = "127.0.0.1:0".parse().unwrap();
    settings.api.outbox_interval_ms = 200;
    settings.worker.host_id = host;
    settings.worker.data_root = dir.path().join("SERVERS");
    settings.worker.image = TEST_IMAGE.into();
    settings.worker.runtime = "runc".into();
    settings.worker.network = network.clone();
    settings.worker.container_prefix = format!("vsft-{id}-");
    settings.worker.stop_timeout_secs = 5;
    settings.worker.heartbeat_secs = 1;
    // The busybox stand-in has no inner Docker; monitor tests turn it on.
    settings.worker.monitor_interval_ms = 0;
    settings.scheduler.sync_interval_ms = 500;
    settings.scheduler.cleanup_interval_ms = 500;
    settings.scheduler.purge_interval_ms = 500;
    adjust(&mut settings);
    settings.validate().unwrap();

    // The test's own client is the api's user: it owns the streams.
    let nats = vsfleet_contract::connect::connect(&settings, Role::Api).await.unwrap();
    let js = jetstream::new(nats.clone());
    let mut app = TestApp {
        addr: "127.0.0.1:0".parse().unwrap(),
        http: reqwest::Client::new(),
        admin_token: String::new(),
        db: database.pool(),
        store: None,
        database,
        nats,
        js,
        docker,
        settings,
        nats_passwords,
        other_host,
        api: None,
        replicas: Vec::new(),
        worker: None,
        other_workers: Vec::new(),
        schedulers: Vec::new(),
        services: Vec::new(),
        network,
        nats_server,
        dir,
    };
    app.start_api().await;
    app.store = Some(vsfleet_api::store::Store::open(&app.settings.database.url).await.unwrap());
    let (_, token) = vsfleet_api::accounts::create(app.api_db(), "admin@example.test", true).await.unwrap();
    app.admin_token = token;
    app.start_worker().await;
    app
}

impl TestApp {
    /// The test's settings with the NATS credentials of `user`.
    pub fn settings_as(&self, user: &str) -> Settings {
        let mut settings = self.settings.clone();
        settings.nats.user = Some(user.to_owned());
        settings.nats.password = Some(self.nats_passwords.get(user).cloned().unwrap_or_else(|| "unknown".into()));
        settings
    }

    /// A NATS connection as `user` of the permission config, with its
    /// role's inbox prefix; permission violations are collected in `errors`.
    pub async fn connect_as(&self, user: &str) -> (async_nats::Client, PermissionErrors) {
        let errors = PermissionErrors::default();
        let seen = errors.clone();
        let settings = self.settings_as(user);
        let mut options = async_nats::ConnectOptions::with_user_and_password(
            user.to_owned(),
            settings.nats.password.clone().unwrap(),
        );
        if let Some(role) = Role::of_user(user) {
            options = options.custom_inbox_prefix(role.inbox_prefix(&settings.subjects()));
        }
        let client = options
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(error) = event {
                        seen.0.lock().unwrap().push(error.to_string());
                    }
                }
            })
            .connect(self.nats_server.url())
            .await
            .unwrap_or_else(|e| panic!("connecting as {user}: {e}"));
        (client, errors)
    }

    pub async fn start_api(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.settings.api.listen).await.unwrap();
        let api = vsfleet_api::Application::build(self.settings_as("api"), listener).await.expect("api builds");
        self.addr = api.local_addr();
        // Keep the port if the api is restarted.
        self.settings.api.listen = self.addr;
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { api.run_until_stopped(stop).await.expect("api runs") }
        });
        self.api = Some((stop, task));
    }

    pub async fn start_worker(&mut self) {
        let host = self.host().to_owned();
        self.worker = Some(self.run_worker(&host).await);
    }

    /// Starts a worker for the test's second host (`other_host`), on the
    /// same Docker engine, with that host's own NATS user.
    pub async fn start_other_worker(&mut self) {
        let host = self.other_host.clone();
        let worker = self.run_worker(&host).await;
        self.other_workers.push(worker);
    }

    async fn run_worker(&self, host: &str) -> (CancellationToken, JoinHandle<()>) {
        let mut settings = self.settings_as(&permissions::worker_user(host));
        settings.worker.host_id = host.to_owned();
        let worker = vsfleet_worker::Worker::build(settings).await.expect("worker builds");
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { worker.run_until_stopped(stop).await }
        });
        (stop, task)
    }

    /// Starts one more scheduler replica.
    pub async fn start_scheduler(&mut self) {
        let scheduler =
            vsfleet_scheduler::Scheduler::build(&self.settings_as("scheduler")).await.expect("scheduler builds");
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { scheduler.run_until_stopped(stop).await }
        });
        self.schedulers.push((stop, task));
    }

    pub async fn stop_schedulers(&mut self) {
        for (stop, task) in self.schedulers.drain(..) {
            stop.cancel();
            tokio::time::timeout(WAIT, task).await.expect("scheduler stops in time").unwrap();
        }
    }

    /// Stops the worker gracefully: it finishes what it runs, takes no more.
    pub async fn stop_worker(&mut self) {
        if let Some((stop, task)) = self.worker.take() {
            stop.cancel();
            tokio::time::timeout(WAIT, task).await.expect("worker stops in time").unwrap();
        }
        for (stop, task) in self.other_workers.drain(..) {
            stop.cancel();
            tokio::time::timeout(WAIT, task).await.expect("worker stops in time").unwrap();
        }
    }

    /// Stops the second host's workers gracefully (their presence entry
    /// goes with them: the host is at once not alive).
    pub async fn stop_other_workers(&mut self) {
        for (stop, task) in self.other_workers.drain(..) {
            stop.cancel();
            tokio::time::timeout(WAIT, task).await.expect("worker stops in time").unwrap();
        }
    }

    /// Stops the in-process api gracefully (its address stays reserved in
    /// `settings.api.listen` for a restart).
    /// Starts another api replica on the test's database and NATS, on a
    /// port of its own; returns its address. Stopped at teardown.
    pub async fn start_api_replica(&mut self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = vsfleet_api::Application::build(self.settings_as("api"), listener).await.expect("replica builds");
        let addr = api.local_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { api.run_until_stopped(stop).await.expect("replica runs") }
        });
        self.replicas.push((stop, task));
        addr
    }

    pub async fn stop_api(&mut self) {
        for (stop, task) in self.replicas.drain(..) {
            stop.cancel();
            tokio::time::timeout(WAIT, task).await.expect("replica stops in time").unwrap();
        }
        if let Some((stop, task)) = self.api.take() {
            stop.cancel();
            tokio::time::timeout(WAIT, task).await.expect("api stops in time").unwrap();
        }
    }

    /// The settings, with `user`'s NATS credentials, as the TOML file the
    /// service binaries read.
    pub fn write_config(&self, user: &str) -> PathBuf {
        let path = self.dir.path().join(format!("vsfleet-{user}.toml"));
        std::fs::write(&path, toml::to_string(&self.settings_as(user)).expect("settings serialise")).unwrap();
        path
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs `bin` (`vsfleet-api`, `vsfleet-worker`) as a process with the
    /// test's settings plus `env`; returns its index in `services`.
    pub fn spawn_service(&mut self, bin: &str, env: &[(&str, String)]) -> usize {
        let user = match bin {
            "vsfleet-api" => "api".to_owned(),
            "vsfleet-scheduler" => "scheduler".to_owned(),
            _ => permissions::worker_user(self.host()),
        };
        let config = self.write_config(&user);
        let name = format!("{bin}-{}", self.services.len());
        let log = self.dir.path().join(format!("{name}.log"));
        let config = config.to_str().expect("a UTF-8 temp path").to_owned();
        self.services.push(Service::spawn(&name, bin, &["--config", &config], env, &log));
        self.services.len() - 1
    }

    /// Replaces the in-process api by the `vsfleet-api` process, on the same
    /// address; returns when it answers.
    pub async fn start_api_process(&mut self) -> usize {
        self.stop_api().await;
        let index = self.spawn_service("vsfleet-api", &[]);
        self.wait_api_answers().await;
        index
    }

    pub async fn wait_api_answers(&self) {
        eventually("the api answers /healthz", || async {
            let url = format!("http://{}/healthz", self.addr);
            self.http.get(url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await
    }

    /// Starts a `vsfleet-worker` process; returns when it consumes jobs.
    pub async fn start_worker_process(&mut self, env: &[(&str, String)]) -> usize {
        let index = self.spawn_service("vsfleet-worker", env);
        self.services[index].wait_for_log("worker consuming jobs", WAIT).await;
        index
    }

    pub fn host(&self) -> &str {
        &self.settings.worker.host_id
    }

    pub fn prefix(&self) -> &str {
        &self.settings.nats.prefix
    }

    pub fn data_root(&self) -> PathBuf {
        self.settings.worker.data_root.clone()
    }

    pub fn container_name(&self, id: i64) -> String {
        format!("{}{id}", self.settings.worker.container_prefix)
    }

    /// The api's store, for the api's own functions.
    pub fn api_db(&self) -> &vsfleet_api::store::Store {
        self.store.as_ref().expect("opened once the api migrated the database")
    }

    pub async fn create_user(&self, email: &str) -> String {
        vsfleet_api::accounts::create(self.api_db(), email, false).await.unwrap().1
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("api answers");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&self.admin_token.clone()), Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.admin_token.clone()), None).await
    }

    /// POST /v1/servers and wait for the create job to succeed.
    pub async fn create_running(&self, name: &str, extra: Value) -> i64 {
        let mut body = json!({ "name": name });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (status, created) = self.post("/v1/servers", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{created}");
        let job = self.wait_job(created["job"]["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        created["server"]["id"].as_i64().unwrap()
    }

    /// Requests an action and waits for its job to finish; returns the job.
    pub async fn act(&self, id: i64, action: &str) -> Value {
        let (status, body) = if action == "delete" {
            self.call(Method::DELETE, &format!("/v1/servers/{id}"), Some(&self.admin_token.clone()), None).await
        } else {
            self.post(&format!("/v1/servers/{id}/{action}"), json!({})).await
        };
        assert_eq!(status, StatusCode::ACCEPTED, "{action}: {body}");
        self.wait_job(body["job"]["id"].as_str().unwrap()).await
    }

    pub async fn wait_job(&self, job_id: &str) -> Value {
        eventually(&format!("job {job_id} finishes"), || async move {
            let (_, body) = self.get(&format!("/v1/jobs/{job_id}")).await;
            matches!(body["job"]["status"].as_str(), Some("succeeded" | "failed")).then(|| body["job"].clone())
        })
        .await
    }

    pub async fn server(&self, id: i64) -> Value {
        let (status, body) = self.get(&format!("/v1/servers/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["server"].clone()
    }

    pub async fn wait_status(&self, id: i64, want: &str) -> Value {
        eventually(&format!("server {id} becomes {want}"), || async move {
            let server = self.server(id).await;
            (server["status"] == want).then_some(server)
        })
        .await
    }

    pub async fn inspect(&self, id: i64) -> Option<ContainerInspectResponse> {
        self.docker.inspect_container(&self.container_name(id), None).await.ok()
    }

    /// Every container that carries one of this test's host labels.
    pub async fn our_containers(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for host in [self.host(), &self.other_host] {
            let filters =
                std::collections::HashMap::from([("label".to_owned(), vec![format!("{}={host}", labels::HOST)])]);
            let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
            ids.extend(self.docker.list_containers(Some(options)).await.unwrap().into_iter().filter_map(|c| c.id));
        }
        ids
    }

    /// Waits until JetStream holds no job for this host: nothing pending,
    /// nothing delivered and unacknowledged.
    pub async fn wait_jobs_drained(&self) {
        let name = format!("worker-{}", self.host());
        eventually("the jobs consumer drains", || async {
            let stream = self.js.get_stream(format!("{}_jobs", self.prefix())).await.ok()?;
            let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(&name).await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await
    }

    /// Stops everything, removes what the test made, and checks that
    /// nothing is left: containers, network, streams, bucket, files.
    pub async fn teardown(mut self) {
        self.stop_schedulers().await;
        self.stop_worker().await;
        self.stop_api().await;
        for service in &mut self.services {
            service.stop(WAIT);
        }
        if !self.nats_server.is_running() {
            self.nats_server.restart();
        }
        for id in self.our_containers().await {
            let options = bollard::query_parameters::RemoveContainerOptions { force: true, ..Default::default() };
            self.docker.remove_container(&id, Some(options)).await.unwrap();
        }
        self.docker.remove_network(&self.network).await.unwrap();
        let prefix = self.prefix().to_owned();
        for stream in [
            format!("{prefix}_jobs"),
            format!("{prefix}_events"),
            format!("{prefix}_schedule"),
            format!("{prefix}_dead"),
        ] {
            self.js.delete_stream(&stream).await.unwrap();
        }
        self.js.delete_key_value(format!("{prefix}_hosts")).await.unwrap();

        assert!(self.our_containers().await.is_empty(), "containers left behind");
        assert!(self.docker.inspect_network(&self.network, None).await.is_err(), "network left behind");
        let names: Vec<String> = futures::TryStreamExt::try_collect(self.js.stream_names()).await.unwrap();
        assert!(
            !names.iter().any(|n| n.starts_with(&prefix) || n == &format!("KV_{prefix}_hosts")),
            "streams left: {names:?}"
        );
        self.db.close().await;
        if let Some(store) = self.store.take() {
            store.close().await;
        }
        self.database.drop_database().await;
        let path = self.dir.path().to_owned();
        drop(self);
        assert!(!path.exists(), "test directory left behind");
    }
}

impl Drop for TestApp {
    /// The fallback when a test panics before `teardown`: remove containers
    /// and the network with the CLI (no async in drop).
    fn drop(&mut self) {
        for (stop, _) in self.worker.iter().chain(&self.other_workers) {
            stop.cancel();
        }
        if let Some((stop, _)) = &self.api {
            stop.cancel();
        }
        for (stop, _) in &self.schedulers {
            stop.cancel();
        }
        for service in &mut self.services {
            service.kill();
        }
        // By this host's label, and by the test's name prefix (containers a
        // test labels for another host).
        let filters = [
            format!("label={}={}", labels::HOST, self.settings.worker.host_id),
            format!("label={}={}", labels::HOST, self.other_host),
            format!("name=^/{}", self.settings.worker.container_prefix),
        ];
        for filter in &filters {
            if let Ok(out) = std::process::Command::new("docker").args(["ps", "-aq", "--filter", filter]).output() {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = std::process::Command::new("docker").args(["rm", "-f", id]).output();
                }
            }
        }
        let _ = std::process::Command::new("docker").args(["network", "rm", &self.network]).output();
        if std::thread::panicking() {
            eprintln!("--- nats-server log ---\n{}", self.nats_server.log());
            for service in &self.services {
                eprintln!("--- {} log ---\n{}", service.name, service.log());
            }
        }
    }
}

/// The permission violations the server reported to a connection.
#[derive(Clone, Default)]
pub struct PermissionErrors(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl PermissionErrors {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until the server reported a violation mentioning `subject`.
    pub async fn wait_for(&self, subject: &str) -> String {
        eventually(&format!("a permissions violation for {subject}"), || async {
            self.all().into_iter().find(|e| e.to_lowercase().contains("permissions violation") && e.contains(subject))
        })
        .await
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `WAIT`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

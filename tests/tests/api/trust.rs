//! The broker as the trust boundary: the nats-server of every test runs
//! with the permission config of `contract::permissions` (`nats/auth.conf`).
//! Here: credentials are required and checked, each role reaches only what
//! it needs, and messages that get through but do not add up (a compromised
//! worker's) change nothing and are kept in the dead letters with a reason.

use std::time::Duration;

use async_nats::jetstream;
use reqwest::StatusCode;
use serde_json::{Value, json};
use vsfleet_contract::permissions::worker_user;
use vsfleet_contract::{JobId, Settings};

use crate::helpers::{TestApp, WAIT, eventually, spawn_app};

/// The dead letters the api stored for rejected messages, as (original subject, reason).
async fn rejections(app: &TestApp) -> Vec<(String, String)> {
    let stream = app.js.get_stream(format!("{}_dead", app.prefix())).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut found = Vec::new();
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else { continue };
        if !message.subject.ends_with(".rejected") {
            continue;
        }
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
        found.push((header("Vsfleet-Subject"), header("Vsfleet-Reason")));
    }
    found
}

async fn wait_rejection(app: &TestApp, subject: &str, reason_part: &str) -> String {
    eventually(&format!("a dead letter for {subject} saying {reason_part:?}"), || async {
        rejections(app).await.into_iter().find(|(s, r)| s == subject && r.contains(reason_part)).map(|(_, r)| r)
    })
    .await
}

async fn publish_json(client: &async_nats::Client, subject: String, body: Value) {
    client.publish(subject, serde_json::to_vec(&body).unwrap().into()).await.unwrap();
    client.flush().await.unwrap();
}

fn with_password(settings: &Settings, password: &str) -> Settings {
    let mut settings = settings.clone();
    settings.nats.password = Some(password.into());
    settings
}

#[tokio::test]
async fn nats_refuses_anonymous_wrong_and_foreign_credentials_and_the_services_say_so() {
    let mut app = spawn_app().await;
    let url = app.nats_server.url().to_owned();

    let anonymous = async_nats::connect(&url).await.expect_err("an anonymous connection is refused");
    assert_eq!(anonymous.kind(), async_nats::ConnectErrorKind::AuthorizationViolation);
    let wrong = async_nats::ConnectOptions::with_user_and_password("api".into(), "wrong".into()).connect(&url).await;
    assert_eq!(
        wrong.expect_err("a wrong password is refused").kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
    );

    // Each service stops at start and names the setting it used.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = vsfleet_api::Application::build(with_password(&app.settings_as("api"), "wrong"), listener).await;
    let error = format!("{:#}", api.err().expect("the api refuses to start"));
    assert!(error.contains("refused to authenticate") && error.contains("nats.user + nats.password"), "{error}");
    let mut token = app.settings_as("scheduler");
    (token.nats.user, token.nats.password, token.nats.token) = (None, None, Some("not-a-token".into()));
    let error = format!("{:#}", vsfleet_scheduler::Scheduler::build(&token).await.err().expect("scheduler refused"));
    assert!(error.contains("refused to authenticate") && error.contains("nats.token"), "{error}");

    // A foreign credential: host B's worker user cannot run host A's worker.
    let mut foreign = app.settings_as(&worker_user(&app.other_host));
    foreign.worker.host_id = app.host().to_owned();
    let built = tokio::time::timeout(WAIT * 2, vsfleet_worker::Worker::build(foreign)).await.expect("fails in time");
    let error = format!("{:#}", built.err().expect("a worker ran with another host's credentials"));
    assert!(error.contains("not this service's user"), "{error}");

    // The binary says so on stderr and exits non-zero.
    let index = app.spawn_service("vsfleet-worker", &[("VSFLEET_NATS__PASSWORD", "wrong".into())]);
    let status = app.services[index].exited(WAIT).await.expect("the worker exits");
    assert!(!status.success());
    let log = app.services[index].log();
    assert!(log.contains("refused to authenticate") && log.contains("nats.user + nats.password"), "{log}");
    app.teardown().await;
}

#[tokio::test]
async fn each_role_reaches_only_what_it_needs() {
    let app = spawn_app().await;
    let id = app.create_running("leidimai", json!({})).await;
    let (p, a, b) = (app.prefix().to_owned(), app.host().to_owned(), app.other_host.clone());

    let (worker_a, errors) = app.connect_as(&worker_user(&a)).await;
    let mut js = jetstream::new(worker_a.clone());
    // A refused request is never answered: fail fast.
    js.set_timeout(Duration::from_secs(2));
    let jobs = js.get_stream(format!("{p}_jobs")).await.expect("a worker reads its jobs stream's info");
    // Host B's jobs: neither its consumer nor a consumer of B's subjects.
    assert!(jobs.get_consumer::<jetstream::consumer::pull::Config>(&format!("worker-{b}")).await.is_err());
    let stolen = jetstream::consumer::pull::Config {
        durable_name: Some(format!("worker-{b}")),
        filter_subject: format!("{p}.jobs.{b}.*"),
        ..Default::default()
    };
    assert!(jobs.create_consumer(stolen).await.is_err(), "host A created a consumer of host B's jobs");
    let sneaky = jetstream::consumer::pull::Config {
        durable_name: Some(format!("worker-{a}")),
        filter_subject: format!("{p}.jobs.{b}.*"),
        ..Default::default()
    };
    assert!(jobs.create_consumer(sneaky).await.is_err(), "host A's consumer name with host B's filter");
    // Host B's events, key, and forced stops; any job.
    publish_json(&worker_a, format!("{p}.events.{b}.job"), json!({})).await;
    errors.wait_for(&format!("{p}.events.{b}.job")).await;
    let hosts = js.get_key_value(format!("{p}_hosts")).await.unwrap();
    assert!(hosts.put(&b, "{}".into()).await.is_err(), "host A wrote host B's key");
    publish_json(&worker_a, format!("{p}.jobs.{a}.stop"), json!({ "server_id": id })).await;
    errors.wait_for(&format!("{p}.jobs.{a}.stop")).await;
    let _ = worker_a.subscribe(format!("{p}.control.{b}.kill")).await.unwrap();
    errors.wait_for(&format!("{p}.control.{b}.kill")).await;
    // Nobody but the api may ask for a kill: the server keeps running.
    let (operator, operator_errors) = app.connect_as("operator").await;
    let kill = operator
        .request(format!("{p}.control.{a}.kill"), serde_json::to_vec(&json!({ "server_id": id })).unwrap().into());
    assert!(tokio::time::timeout(Duration::from_secs(3), kill).await.map_or(true, |r| r.is_err()));
    operator_errors.wait_for(&format!("{p}.control.{a}.kill")).await;
    // The scheduler publishes only schedules; readonly publishes nothing; the api no events.
    for (user, subject) in [
        ("scheduler", format!("{p}.jobs.{a}.delete")),
        ("readonly", format!("{p}.jobs.{a}.delete")),
        ("api", format!("{p}.events.{a}.job")),
    ] {
        let (client, errors) = app.connect_as(user).await;
        publish_json(&client, subject.clone(), json!({ "server_id": id })).await;
        errors.wait_for(&subject).await;
    }
    // Readers cannot snoop on others' inboxes, where pulled jobs arrive.
    let (readonly, readonly_errors) = app.connect_as("readonly").await;
    let _ = readonly.subscribe("_INBOX.>").await.unwrap();
    readonly_errors.wait_for("_INBOX.>").await;

    assert_eq!(app.server(id).await["status"], "running");
    assert_eq!(app.inspect(id).await.unwrap().state.unwrap().running, Some(true));
    // The operator may enqueue by hand and read the dead letters.
    let op_js = jetstream::new(operator.clone());
    op_js.get_stream(format!("{p}_dead")).await.expect("the operator reads the dead letters");
    let ack = op_js.publish(format!("{p}.jobs.{a}.stop"), json!({ "server_id": id }).to_string().into()).await;
    ack.unwrap().await.expect("the operator enqueues a job by hand");
    app.wait_status(id, "stopped").await;
    app.teardown().await;
}

#[tokio::test]
async fn forged_messages_change_nothing_and_are_kept_with_their_reason() {
    let mut app = spawn_app().await;
    let (p, a) = (app.prefix().to_owned(), app.host().to_owned());
    let mine = app.create_running("mano", json!({})).await;
    // A second host, with a server of its own (placed on the emptier host).
    app.start_other_worker().await;
    let b = app.other_host.clone();
    let theirs = eventually("a server placed on the second host", || async {
        let id = app.create_running("svetimas", json!({})).await;
        if app.server(id).await["host"] == b.as_str() { Some(id) } else { None }
    })
    .await;
    let (create_b,): (String,) = sqlx::query_as("SELECT id FROM jobs WHERE server_id = $1 AND action = 'create'")
        .bind(theirs)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let (create_a,): (String,) = sqlx::query_as("SELECT id FROM jobs WHERE server_id = $1 AND action = 'create'")
        .bind(mine)
        .fetch_one(&app.db)
        .await
        .unwrap();

    // Host A's worker credentials, used as a compromised worker would.
    let (forger, _) = app.connect_as(&worker_user(&a)).await;
    let js = jetstream::new(forger.clone());
    let gone = json!({"container": "absent", "container_id": null, "data_exists": false, "archived": false});
    let event = |job: &str, server: i64, action: &str, host: &str| {
        json!({"job_id": job, "server_id": server, "action": action, "host": host, "attempt": 1,
               "at": chrono::Utc::now(), "phase": "succeeded", "observed": gone})
    };
    let job_subject = format!("{p}.events.{a}.job");
    let forged = [
        (event(&JobId::new().to_string(), mine, "purge", &a), "unknown job"),
        (event(&JobId::new().to_string(), theirs, "purge", &b), "speaks for host"),
        (event(&create_b, theirs, "create", &a), "on host"),
        (event(&create_a, mine, "purge", &a), "is a create"),
    ];
    for (body, _) in &forged {
        js.publish(job_subject.clone(), serde_json::to_vec(body).unwrap().into()).await.unwrap().await.unwrap();
    }
    let observed = json!({"server_id": theirs, "host": a, "at": chrono::Utc::now(), "cause": "die",
                          "observed": {"container": "stopped", "container_id": "x", "data_exists": true, "archived": false}});
    let observed_subject = format!("{p}.events.{a}.observed");
    js.publish(observed_subject.clone(), serde_json::to_vec(&observed).unwrap().into()).await.unwrap().await.unwrap();
    let snapshot = json!({"server_id": theirs, "host": a, "at": chrono::Utc::now(), "containers": [
        {"id": "f0", "image": "evil", "names": "forged", "state": "running", "status": "Up", "ports": "", "labels": "", "created": ""}]});
    let monitor_subject = format!("{p}.monitor.{a}");
    publish_json(&forger, monitor_subject.clone(), snapshot).await;
    let hosts = js.get_key_value(format!("{p}_hosts")).await.unwrap();
    let ghost =
        json!({"host": "ghost", "started_at": chrono::Utc::now(), "seen_at": chrono::Utc::now(), "version": "0"});
    hosts.put(&a, serde_json::to_vec(&ghost).unwrap().into()).await.unwrap();
    let forever =
        json!({"host": a, "started_at": chrono::Utc::now(), "seen_at": "2999-01-01T00:00:00Z", "version": "0"});
    hosts.put(&a, serde_json::to_vec(&forever).unwrap().into()).await.unwrap();

    // Each one is in the dead letters with its reason.
    for (_, reason) in &forged {
        wait_rejection(&app, &job_subject, reason).await;
    }
    wait_rejection(&app, &observed_subject, &format!("lives on host {b}")).await;
    wait_rejection(&app, &monitor_subject, &format!("lives on host {b}")).await;
    let key_subject = format!("$KV.{p}_hosts.{a}");
    wait_rejection(&app, &key_subject, "speaks for host \"ghost\"").await;
    wait_rejection(&app, &key_subject, "in the future").await;

    // And nothing changed.
    for id in [mine, theirs] {
        let server = app.server(id).await;
        assert_eq!(server["status"], "running", "{server}");
        assert_eq!(app.inspect(id).await.unwrap().state.unwrap().running, Some(true));
    }
    let (_, containers) = app.get(&format!("/v1/servers/{theirs}/containers")).await;
    assert_eq!(containers["containers"], json!([]));
    let (status, job) = app.get(&format!("/v1/jobs/{create_a}")).await;
    assert_eq!((status, job["job"]["action"].as_str()), (StatusCode::OK, Some("create")));
    let (_, listed) = app.get("/v1/hosts").await;
    assert!(!listed.to_string().contains("ghost"), "{listed}");
    assert!(listed["rejected_messages"]["job_event"].as_u64() >= Some(forged.len() as u64), "{listed}");
    // The forged heartbeat from the future did not keep host A alive past its real one.
    assert!(listed["hosts"].as_array().unwrap().iter().all(|h| h["host"] != "ghost"));
    app.teardown().await;
}

#[tokio::test]
async fn a_job_with_an_overflowing_spec_fails_with_its_reason_and_touches_nothing() {
    let app = spawn_app().await;
    let (p, a) = (app.prefix().to_owned(), app.host().to_owned());
    let (operator, _) = app.connect_as("operator").await;
    let js = jetstream::new(operator);
    let unknown_server = 987_654;
    let body = json!({ "server_id": unknown_server, "spec": { "memory_mb": 17_592_186_044_416u64 } });
    let ack = js.publish(format!("{p}.jobs.{a}.create"), body.to_string().into()).await.unwrap().await.unwrap();
    let job_id = JobId::for_message(&format!("{p}_jobs"), ack.sequence);
    let job = app.wait_job(&job_id.to_string()).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("invalid spec") && error.contains("memory_mb"), "{error}");
    assert!(app.inspect(unknown_server).await.is_none(), "a container was created");
    assert!(!app.data_root().join(unknown_server.to_string()).exists(), "directories were created");
    app.teardown().await;
}

#[tokio::test]
async fn a_container_that_differs_from_its_spec_is_replaced_and_its_data_kept() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    // The stopped worker took its entry out of the hosts bucket; put one
    // back (as its own user) so the api places the server on this host.
    let (worker, _) = app.connect_as(&worker_user(app.host())).await;
    let hosts = jetstream::new(worker).get_key_value(format!("{}_hosts", app.prefix())).await.unwrap();
    let now = chrono::Utc::now();
    let presence = json!({ "host": app.host(), "started_at": now, "seen_at": now, "version": "test" });
    hosts.put(app.host(), serde_json::to_vec(&presence).unwrap().into()).await.unwrap();
    let (status, created) = app.post("/v1/servers", json!({ "name": "pakeistas", "memory_mb": 64 })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["server"]["id"].as_i64().unwrap();
    // Before the create job runs, a container of ours is there under the
    // server's name, with no memory limit (a crash, a hand-made one).
    let data = app.data_root().join(id.to_string()).join("apps");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("keep.txt"), "user data").unwrap();
    let labels = std::collections::HashMap::from([
        (vsfleet_contract::labels::MANAGED.to_owned(), "true".to_owned()),
        (vsfleet_contract::labels::SERVER_ID.to_owned(), id.to_string()),
        (vsfleet_contract::labels::HOST.to_owned(), app.host().to_owned()),
        (vsfleet_contract::labels::DEPLOYMENT.to_owned(), app.prefix().to_owned()),
    ]);
    let options =
        bollard::query_parameters::CreateContainerOptions { name: Some(app.container_name(id)), ..Default::default() };
    let body = bollard::models::ContainerCreateBody {
        image: Some(crate::helpers::TEST_IMAGE.into()),
        labels: Some(labels),
        ..Default::default()
    };
    let stale = app.docker.create_container(Some(options), body).await.unwrap().id;
    app.start_worker().await;
    let job = app.wait_job(created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let inspect = app.inspect(id).await.unwrap();
    assert_ne!(inspect.id.as_deref(), Some(stale.as_str()), "the differing container was kept");
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.pids_limit, Some(app.settings.worker.pids_limit));
    assert_eq!(std::fs::read_to_string(data.join("keep.txt")).unwrap(), "user data");
    app.teardown().await;
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=vsfleet test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test]
async fn services_connect_over_tls_and_refuse_a_server_they_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let prefix = format!("tls{}", std::process::id());
    let users =
        vsfleet_contract::permissions::users(&vsfleet_contract::Subjects::new(&prefix).unwrap(), &["h1"]).unwrap();
    let config = dir.path().join("nats-tls.conf");
    let tls = format!(
        "tls {{\n    cert_file: {:?}\n    key_file: {:?}\n}}\n",
        dir.path().join("server.pem"),
        dir.path().join("server.key")
    );
    std::fs::write(&config, tls + &vsfleet_contract::permissions::render(&users)).unwrap();
    let env = users.iter().map(|u| (u.password_env.clone(), "secret".to_owned())).collect();
    let server = vsfleet_tests::nats_server::NatsServer::start_with(&dir.path().join("nats"), Some((config, env)));

    let mut settings = Settings::default();
    settings.nats.url = server.url().to_owned();
    settings.nats.prefix = prefix;
    settings.nats.user = Some("api".into());
    settings.nats.password = Some("secret".into());
    settings.nats.tls.ca_file = Some(dir.path().join("ca.pem"));
    settings.validate().unwrap();
    let role = vsfleet_contract::connect::Role::Api;
    let client = vsfleet_contract::connect::connect(&settings, role).await.expect("connects over TLS");
    client.flush().await.unwrap();

    // Without the CA the server's certificate cannot be verified: a clear refusal, not a hang.
    settings.nats.tls.ca_file = None;
    settings.nats.url = settings.nats.url.replace("nats://", "tls://");
    let error = tokio::time::timeout(WAIT, vsfleet_contract::connect::connect(&settings, role))
        .await
        .expect("answers in time")
        .expect_err("an unverifiable server is refused");
    assert!(error.to_string().contains("TLS to NATS"), "{error}");
    // A missing CA file is named by its setting.
    settings.nats.tls.ca_file = Some(dir.path().join("missing.pem"));
    let error = vsfleet_contract::connect::connect(&settings, role).await.expect_err("refused");
    assert!(error.to_string().contains("nats.tls.ca_file"), "{error}");
}

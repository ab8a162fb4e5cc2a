//! Least privilege on the broker: what each role may publish and receive,
//! derived from the same names as everything else ([`Subjects`]), and the
//! nats-server `authorization` block that grants it. `nats/auth.conf` is
//! this block for the prefix `vs` and the hosts `host1` and `host2`
//! (a test keeps them equal); `vsfleet-api nats-config --host H …` writes it
//! for a real deployment, and the integration tests run against it.
//!
//! | role | may |
//! |---|---|
//! | `api` | publish jobs, dead letters and forced stops; consume events and schedules; manage streams and buckets |
//! | `scheduler` | publish the schedule subjects, nothing else |
//! | `worker-{host}` | pull its host's jobs and syncs from its own consumers; publish its host's events, monitor snapshots, dead letters and hosts-bucket key; answer its host's forced stops |
//! | `operator` | enqueue jobs by hand; read streams, consumers, dead letters and the hosts bucket; replay and remove dead letters; follow events |
//! | `readonly` | read streams, consumers and the hosts bucket |
//!
//! Every role receives replies on its own inbox prefix only
//! ([`crate::connect::Role::inbox_prefix`]; the NATS CLI takes
//! `--inbox-prefix`), so no one can read another's replies or pulled jobs.

use std::fmt::Write as _;

use crate::schedule::Periodic;
use crate::subjects::Subjects;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May reply to the requests it receives (a worker's forced stops).
    pub allow_responses: bool,
}

/// A user of the generated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// The environment variable nats-server reads the password from.
    pub password_env: String,
    pub permissions: Permissions,
}

pub fn api(s: &Subjects) -> Permissions {
    let p = s.prefix();
    Permissions {
        publish: vec![
            s.jobs_wildcard(),
            format!("{p}.dead.>"),
            format!("{p}.control.*.kill"),
            format!("{p}.control.*.ports"),
            // Streams, consumers, buckets: the api creates and owns them.
            "$JS.API.>".into(),
            format!("$JS.ACK.{}.{}.>", s.events_stream(), s.api_events_consumer()),
            format!("$JS.ACK.{}.{}.>", s.schedule_stream(), s.api_schedule_consumer()),
            // Flow control of the ordered consumer that watches the hosts bucket.
            "$JS.FC.>".into(),
        ],
        subscribe: vec![format!("_INBOX.{p}.api.>"), s.monitor_wildcard()],
        allow_responses: false,
    }
}

pub fn scheduler(s: &Subjects) -> Permissions {
    let p = s.prefix();
    Permissions {
        publish: Periodic::ALL.iter().map(|kind| s.schedule(*kind)).collect(),
        subscribe: vec![format!("_INBOX.{p}.scheduler.>")],
        allow_responses: false,
    }
}

pub fn worker(s: &Subjects, host: &str) -> Permissions {
    let p = s.prefix();
    let (jobs, schedule) = (s.jobs_stream(), s.schedule_stream());
    let (consumer, sync) = (s.worker_consumer(host), s.sync_consumer(host));
    Permissions {
        publish: vec![
            format!("{p}.events.{host}.>"),
            s.monitor(host),
            format!("{p}.dead.{host}.>"),
            format!("$KV.{}.{host}", s.hosts_bucket()),
            format!("$JS.API.STREAM.INFO.{jobs}"),
            format!("$JS.API.STREAM.INFO.{schedule}"),
            format!("$JS.API.STREAM.INFO.KV_{}", s.hosts_bucket()),
            // Its own consumers only, each bound to its own filter: the
            // server refuses a body whose filter differs from the subject's.
            format!("$JS.API.CONSUMER.INFO.{jobs}.{consumer}"),
            format!("$JS.API.CONSUMER.CREATE.{jobs}.{consumer}.{}", s.host_jobs_filter(host)),
            format!("$JS.API.CONSUMER.MSG.NEXT.{jobs}.{consumer}"),
            format!("$JS.ACK.{jobs}.{consumer}.>"),
            format!("$JS.API.CONSUMER.INFO.{schedule}.{sync}"),
            format!("$JS.API.CONSUMER.CREATE.{schedule}.{sync}.{}", s.schedule(Periodic::Sync)),
            format!("$JS.API.CONSUMER.MSG.NEXT.{schedule}.{sync}"),
            format!("$JS.ACK.{schedule}.{sync}.>"),
            // How far the api has read: a job published by hand is acknowledged
            // only once the api has recorded it (worker/src/report.rs).
            format!("$JS.API.CONSUMER.INFO.{}.{}", s.events_stream(), s.api_events_consumer()),
        ],
        subscribe: vec![format!("_INBOX.{p}.worker.{host}.>"), s.kill(host), s.ports(host)],
        allow_responses: true,
    }
}

/// What reading costs in JetStream's API: infos, names, lists and single
/// messages. No consumers: a consumer's body can name any delivery subject.
fn read_api() -> Vec<String> {
    [
        "$JS.API.INFO",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.LIST",
        "$JS.API.STREAM.INFO.>",
        "$JS.API.STREAM.MSG.GET.>",
        "$JS.API.DIRECT.GET.>",
        "$JS.API.CONSUMER.NAMES.>",
        "$JS.API.CONSUMER.LIST.>",
        "$JS.API.CONSUMER.INFO.>",
    ]
    .map(String::from)
    .into()
}

pub fn operator(s: &Subjects) -> Permissions {
    let p = s.prefix();
    let mut publish = vec![s.jobs_wildcard(), format!("$JS.API.STREAM.MSG.DELETE.{}", s.dead_stream())];
    publish.extend(read_api());
    // Short-lived consumers to page through events, dead letters and the
    // hosts bucket (`nats stream view`, `nats kv ls`).
    for stream in [s.events_stream(), s.dead_stream(), format!("KV_{}", s.hosts_bucket())] {
        publish.push(format!("$JS.API.CONSUMER.CREATE.{stream}"));
        publish.push(format!("$JS.API.CONSUMER.CREATE.{stream}.>"));
        publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"));
        publish.push(format!("$JS.API.CONSUMER.DELETE.{stream}.>"));
    }
    publish.push("$JS.FC.>".into());
    Permissions {
        publish,
        subscribe: vec![format!("_INBOX.{p}.operator.>"), s.events_wildcard()],
        allow_responses: false,
    }
}

pub fn readonly(s: &Subjects) -> Permissions {
    let p = s.prefix();
    Permissions { publish: read_api(), subscribe: vec![format!("_INBOX.{p}.readonly.>")], allow_responses: false }
}

/// The environment variable holding a user's password: `VSFLEET_NATS_PASSWORD_`
/// and the user name in capitals, `-` as `_`.
pub fn password_env(user: &str) -> String {
    let name: String = user.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }).collect();
    format!("VSFLEET_NATS_PASSWORD_{name}")
}

/// The worker user of a host.
pub fn worker_user(host: &str) -> String {
    format!("worker-{host}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("hosts {0:?} and {1:?} would share the password variable {2}")]
pub struct Clash(pub String, pub String, pub String);

/// Every user of a deployment with these worker hosts.
pub fn users(s: &Subjects, hosts: &[&str]) -> Result<Vec<User>, Clash> {
    let mut users: Vec<User> =
        [("api", api(s)), ("scheduler", scheduler(s)), ("operator", operator(s)), ("readonly", readonly(s))]
            .into_iter()
            .map(|(name, permissions)| User { name: name.into(), password_env: password_env(name), permissions })
            .collect();
    for host in hosts {
        let name = worker_user(host);
        let env = password_env(&name);
        if let Some(other) = users.iter().find(|u| u.password_env == env) {
            return Err(Clash(other.name.clone(), name, env));
        }
        users.push(User { name, password_env: env, permissions: worker(s, host) });
    }
    Ok(users)
}

/// The nats-server `authorization` block for `users`. Passwords are read
/// from the environment (`password: $VAR`), so the file holds no secret.
pub fn render(users: &[User]) -> String {
    let list = |items: &[String]| items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
    let mut out = String::from(
        "# Generated by `vsfleet-api nats-config`: one user per role, each allowed\n\
         # only what it needs (contract/src/permissions.rs). Passwords come from\n\
         # the environment variables named below.\n\
         authorization {\n    users = [\n",
    );
    for user in users {
        let p = &user.permissions;
        let _ = write!(
            out,
            "        {{\n            user: {:?}\n            password: ${}\n            permissions: {{\n                publish: {{ allow: [{}] }}\n                subscribe: {{ allow: [{}] }}\n",
            user.name,
            user.password_env,
            list(&p.publish),
            list(&p.subscribe),
        );
        if p.allow_responses {
            out.push_str("                allow_responses: true\n");
        }
        out.push_str("            }\n        }\n");
    }
    out.push_str("    ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_auth_config_is_the_generated_one() {
        let s = Subjects::new("vs").unwrap();
        let generated = render(&users(&s, &["host1", "host2"]).unwrap());
        assert_eq!(
            include_str!("../../nats/auth.conf"),
            generated,
            "nats/auth.conf is stale: regenerate it with `vsfleet-api nats-config --host host1 --host host2`"
        );
    }

    #[test]
    fn a_worker_may_publish_only_for_its_own_host() {
        let s = Subjects::new("vs").unwrap();
        let w = worker(&s, "h1");
        assert!(w.publish.iter().all(|subject| !subject.contains("h2")));
        assert!(w.publish.contains(&"vs.events.h1.>".to_owned()));
        assert!(!w.publish.iter().any(|subject| subject.starts_with("vs.jobs") || subject == "$JS.API.>"));
    }

    #[test]
    fn hosts_that_would_share_a_password_variable_are_refused() {
        let s = Subjects::new("vs").unwrap();
        assert!(users(&s, &["a-b", "a_b"]).is_err());
    }
}

//! Every NATS name vsfleet uses, derived from one prefix so that two
//! deployments (or two tests) can share a nats-server without touching each
//! other. The same names are written out for operators in `nats/README.md`.
//!
//! | what | name |
//! |---|---|
//! | jobs stream (work queue) | `{prefix}_jobs`, subjects `{prefix}.jobs.>` |
//! | one job | `{prefix}.jobs.{host}.{action}` |
//! | a host's worker consumer | `worker-{host}`, filter `{prefix}.jobs.{host}.*` |
//! | events stream | `{prefix}_events`, subjects `{prefix}.events.>` |
//! | a job's events | `{prefix}.events.{host}.job` |
//! | drift seen in Docker's event stream | `{prefix}.events.{host}.observed` |
//! | a host's inventory (sync) | `{prefix}.events.{host}.inventory` |
//! | the api's event consumer | `api`, filter `{prefix}.events.>` |
//! | schedule stream | `{prefix}_schedule`, subjects `{prefix}.schedule.>` |
//! | one periodic job | `{prefix}.schedule.{sync,cleanup,purge}` |
//! | a host's sync consumer | `sync-{host}`, filter `{prefix}.schedule.sync` |
//! | the api's schedule consumer | `api-schedule`, filter `{prefix}.schedule.>` |
//! | inner containers (core NATS, not stored) | `{prefix}.monitor.{host}` |
//! | kill a server now (core NATS request) | `{prefix}.control.{host}.kill` |
//! | host ports a host can offer (core NATS request) | `{prefix}.control.{host}.ports` |
//! | dead letters | `{prefix}_dead`, subjects `{prefix}.dead.{host}.{action}` |
//! | live hosts (KV bucket) | `{prefix}_hosts`, one key per host |

use crate::state::Action;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {value:?} must be 1 to {max} characters of letters, digits, '_' or '-'")]
pub struct InvalidToken {
    pub what: &'static str,
    pub value: String,
    pub max: usize,
}

/// A NATS subject token that is also valid in stream, consumer and bucket
/// names: no dots, wildcards, spaces or path separators.
pub fn check_token(what: &'static str, value: &str, max: usize) -> Result<(), InvalidToken> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(InvalidToken { what, value: value.to_owned(), max }) }
}

pub fn check_host_id(host: &str) -> Result<(), InvalidToken> {
    check_token("host id", host, 64)
}

impl Subjects {
    pub fn new(prefix: &str) -> Result<Self, InvalidToken> {
        check_token("nats prefix", prefix, 32)?;
        Ok(Self { prefix: prefix.to_owned() })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn jobs_stream(&self) -> String {
        format!("{}_jobs", self.prefix)
    }

    pub fn jobs_wildcard(&self) -> String {
        format!("{}.jobs.>", self.prefix)
    }

    pub fn job(&self, host: &str, action: Action) -> String {
        format!("{}.jobs.{host}.{action}", self.prefix)
    }

    pub fn host_jobs_filter(&self, host: &str) -> String {
        format!("{}.jobs.{host}.*", self.prefix)
    }

    pub fn worker_consumer(&self, host: &str) -> String {
        format!("worker-{host}")
    }

    /// The host and action of a job subject, or `None` for a subject that is
    /// not one (the worker terminates such a message as poison).
    pub fn parse_job<'a>(&self, subject: &'a str) -> Option<(&'a str, Result<Action, String>)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".jobs.")?;
        let (host, action) = rest.split_once('.')?;
        Some((host, action.parse::<Action>().map_err(|_| action.to_owned())))
    }

    pub fn events_stream(&self) -> String {
        format!("{}_events", self.prefix)
    }

    pub fn events_wildcard(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    pub fn job_events(&self, host: &str) -> String {
        format!("{}.events.{host}.job", self.prefix)
    }

    pub fn observed_events(&self, host: &str) -> String {
        format!("{}.events.{host}.observed", self.prefix)
    }

    pub fn inventory_events(&self, host: &str) -> String {
        format!("{}.events.{host}.inventory", self.prefix)
    }

    /// Every host's events, of every kind.
    pub fn api_events_filter(&self) -> String {
        self.events_wildcard()
    }

    /// The kind of an event subject: `job`, `observed` or `inventory`.
    pub fn event_kind<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".events.")?;
        rest.split_once('.').map(|(_, kind)| kind)
    }

    pub fn schedule_stream(&self) -> String {
        format!("{}_schedule", self.prefix)
    }

    pub fn schedule_wildcard(&self) -> String {
        format!("{}.schedule.>", self.prefix)
    }

    pub fn schedule(&self, kind: crate::schedule::Periodic) -> String {
        format!("{}.schedule.{}", self.prefix, kind.as_str())
    }

    pub fn sync_consumer(&self, host: &str) -> String {
        format!("sync-{host}")
    }

    pub fn api_schedule_consumer(&self) -> String {
        "api-schedule".to_owned()
    }

    /// Request/reply to a host's workers, outside the job queue: a forced
    /// stop must not wait behind the job in flight.
    pub fn kill(&self, host: &str) -> String {
        format!("{}.control.{host}.kill", self.prefix)
    }

    /// Request/reply: which host ports of its range a host can offer a new
    /// server (free in Docker and in a bind test), for the api to allocate.
    pub fn ports(&self, host: &str) -> String {
        format!("{}.control.{host}.ports", self.prefix)
    }

    pub fn dead_stream(&self) -> String {
        format!("{}_dead", self.prefix)
    }

    /// Where a job that will never run goes; `what` is its action, or
    /// `unknown` when it has none that can be read.
    pub fn dead(&self, host: &str, what: &str) -> String {
        format!("{}.dead.{host}.{what}", self.prefix)
    }

    pub fn monitor(&self, host: &str) -> String {
        format!("{}.monitor.{host}", self.prefix)
    }

    pub fn monitor_wildcard(&self) -> String {
        format!("{}.monitor.*", self.prefix)
    }

    pub fn api_events_consumer(&self) -> String {
        "api".to_owned()
    }

    pub fn hosts_bucket(&self) -> String {
        format!("{}_hosts", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_prefix() {
        let s = Subjects::new("t1").unwrap();
        assert_eq!(s.job("h-1", Action::Stop), "t1.jobs.h-1.stop");
        assert_eq!(s.jobs_stream(), "t1_jobs");
        let (host, action) = s.parse_job("t1.jobs.h-1.stop").unwrap();
        assert_eq!((host, action), ("h-1", Ok(Action::Stop)));
        assert_eq!(s.parse_job("t1.jobs.h-1.fly").unwrap().1, Err("fly".to_owned()));
        assert!(s.parse_job("t2.jobs.h-1.stop").is_none());
    }

    #[test]
    fn prefixes_and_hosts_are_single_tokens() {
        for bad in ["", "a.b", "a*", "a b", "a>", "a/b"] {
            assert!(Subjects::new(bad).is_err(), "{bad:?}");
            assert!(check_host_id(bad).is_err(), "{bad:?}");
        }
    }
}

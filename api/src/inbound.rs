//! Everything the api hears from NATS is checked here before anything acts
//! on it: workers' job events, drift and inventories, monitor snapshots and
//! the hosts bucket's entries. NATS permissions (`nats/auth.conf`) already
//! let a worker speak only on its own host's subjects; these checks make the
//! payload agree with the subject, and (with [`crate::job_events`], which
//! holds the rows) with the job and the server it names. What fails a check
//! is not applied: it goes to the dead-letter stream with the reason
//! (`{prefix}.dead.{host}.rejected`), is counted, and is logged in one
//! bounded line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::{self, stream::Stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use vsfleet_contract::dead::{self, DeadLetter, DeadLetterError};
use vsfleet_contract::subjects::check_host_id;
use vsfleet_contract::{HostPresence, InnerContainers, Inventory, JobEvent, JobId, JobRequest, Observed, Subjects};

/// Which kind of message a rejection was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    JobEvent,
    Observed,
    Inventory,
    Monitor,
    HostEntry,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::JobEvent, Kind::Observed, Kind::Inventory, Kind::Monitor, Kind::HostEntry];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::JobEvent => "job_event",
            Kind::Observed => "observed",
            Kind::Inventory => "inventory",
            Kind::Monitor => "monitor",
            Kind::HostEntry => "host_entry",
        }
    }
}

/// Bounds of what a worker may send: larger is not a worker's doing.
pub const MAX_INVENTORY_PARTS: u32 = 10_000;
pub const MAX_LIST: usize = 100_000;
pub const MAX_INNER_CONTAINERS: usize = 1_000;
pub const MAX_FIELD: usize = 4_096;
/// How far ahead of the api's clock a worker's timestamp may be.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(30);

#[derive(Clone)]
pub struct Inbound {
    js: jetstream::Context,
    subjects: Subjects,
    jobs: Stream,
    counts: Arc<[AtomicU64; 5]>,
}

impl Inbound {
    pub fn new(js: jetstream::Context, subjects: Subjects, jobs: Stream) -> Self {
        Self { js, subjects, jobs, counts: Arc::new(Default::default()) }
    }

    /// The host token of `{prefix}.events.{host}.{kind}` or `{prefix}.monitor.{host}`.
    pub fn subject_host<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(self.subjects.prefix())?.strip_prefix('.')?;
        let host = if let Some(events) = rest.strip_prefix("events.") {
            events.split_once('.')?.0
        } else {
            rest.strip_prefix("monitor.")?
        };
        check_host_id(host).ok().map(|()| host)
    }

    /// Rejections so far, by kind.
    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        Kind::ALL.iter().map(|k| (k.as_str().to_owned(), self.counts[*k as usize].load(Ordering::Relaxed))).collect()
    }

    /// Records a rejected message: counted, logged (bounded), and stored in
    /// the dead letters with the reason. `msg_id` makes a redelivered
    /// message's second burial a no-op.
    pub async fn reject(
        &self,
        kind: Kind,
        subject: &str,
        payload: &Bytes,
        reason: &str,
        msg_id: Option<String>,
    ) -> Result<(), DeadLetterError> {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        crate::metrics::get().rejected.with_label_values(&[kind.as_str()]).inc();
        tracing::warn!(
            kind = kind.as_str(),
            subject = dead::one_line(subject),
            reason = dead::one_line(reason),
            bytes = payload.len(),
            "message rejected by the api's checks; not applied, kept in the dead letters"
        );
        let host = self.subject_host(subject).unwrap_or("unknown");
        let letter = DeadLetter {
            subject: self.subjects.dead(host, dead::REJECTED),
            original_subject: subject,
            reason,
            deliveries: None,
            msg_id,
            payload: payload.clone(),
        };
        dead::bury(&self.js, letter).await
    }

    /// A job the api did not issue (published by hand) is real only if its
    /// message is in the jobs stream, on this host's subject for this
    /// action, for this server, under this job id.
    pub async fn verify_hand_job(&self, ev: &JobEvent) -> Result<(), String> {
        let seq = ev.job_seq.ok_or("unknown job, and the event names no job message")?;
        let message = self
            .jobs
            .get_raw_message(seq)
            .await
            .map_err(|e| format!("unknown job, and its message {seq} cannot be read from the jobs stream: {e}"))?;
        let expected = self.subjects.job(&ev.host, ev.action);
        if message.subject.as_str() != expected {
            return Err(format!("unknown job: message {seq} is on {}, not {expected}", message.subject));
        }
        let request: JobRequest = serde_json::from_slice(&message.payload)
            .map_err(|e| format!("unknown job: message {seq} is not a job: {e}"))?;
        if request.server_id != ev.server_id {
            return Err(format!(
                "unknown job: message {seq} is for server {}, not {}",
                request.server_id, ev.server_id
            ));
        }
        let header_id =
            message.headers.get(async_nats::header::NATS_MESSAGE_ID).and_then(|v| v.as_str().parse::<JobId>().ok());
        let id = request.job_id.or(header_id).unwrap_or_else(|| JobId::for_message(&self.subjects.jobs_stream(), seq));
        if id != ev.job_id {
            return Err(format!("unknown job: message {seq} is job {id}, not {}", ev.job_id));
        }
        Ok(())
    }
}

fn same_host(subject_host: &str, payload_host: &str) -> Result<(), String> {
    if subject_host == payload_host {
        Ok(())
    } else {
        Err(format!("sent on host {subject_host}'s subject but speaks for host {payload_host:?}"))
    }
}

fn not_ahead(at: DateTime<Utc>, now: DateTime<Utc>, what: &str) -> Result<(), String> {
    if at <= now + CLOCK_SKEW { Ok(()) } else { Err(format!("{what} {at} is in the future")) }
}

pub fn check_job_event(subject_host: &str, ev: &JobEvent, now: DateTime<Utc>) -> Result<(), String> {
    same_host(subject_host, &ev.host)?;
    if ev.attempt == 0 {
        return Err("attempt 0: deliveries count from 1".into());
    }
    not_ahead(ev.at, now, "time")
}

pub fn check_observed(subject_host: &str, seen: &Observed, now: DateTime<Utc>) -> Result<(), String> {
    same_host(subject_host, &seen.host)?;
    if seen.cause.len() > MAX_FIELD {
        return Err("cause too long".into());
    }
    not_ahead(seen.at, now, "time")
}

pub fn check_inventory(subject_host: &str, part: &Inventory, now: DateTime<Utc>) -> Result<(), String> {
    same_host(subject_host, &part.host)?;
    if part.parts == 0 || part.parts > MAX_INVENTORY_PARTS || part.part >= part.parts {
        return Err(format!("part {} of {} is not a part (at most {MAX_INVENTORY_PARTS})", part.part, part.parts));
    }
    if [part.containers.len(), part.data_dirs.len(), part.archives.len()].into_iter().any(|n| n > MAX_LIST) {
        return Err(format!("a list longer than {MAX_LIST}"));
    }
    not_ahead(part.at, now, "time")
}

pub fn check_monitor(subject_host: &str, report: &InnerContainers, now: DateTime<Utc>) -> Result<(), String> {
    same_host(subject_host, &report.host)?;
    if report.containers.len() > MAX_INNER_CONTAINERS {
        return Err(format!("{} inner containers (at most {MAX_INNER_CONTAINERS})", report.containers.len()));
    }
    let long = report.containers.iter().any(|c| {
        [&c.id, &c.image, &c.names, &c.state, &c.status, &c.ports, &c.labels, &c.created]
            .into_iter()
            .any(|f| f.len() > MAX_FIELD)
    });
    if long {
        return Err(format!("a field longer than {MAX_FIELD} bytes"));
    }
    not_ahead(report.at, now, "time")
}

/// A hosts-bucket entry speaks for the host of its key, and only for a
/// heartbeat that has happened.
pub fn check_presence(key: &str, presence: &HostPresence, now: DateTime<Utc>) -> Result<(), String> {
    check_host_id(key).map_err(|e| e.to_string())?;
    if presence.host != key {
        return Err(format!("the entry under key {key:?} speaks for host {:?}", presence.host));
    }
    not_ahead(presence.seen_at, now, "heartbeat")?;
    if presence.started_at > presence.seen_at + CLOCK_SKEW {
        return Err("started after its heartbeat".into());
    }
    if presence.version.len() > 64 || presence.degraded.as_ref().is_some_and(|d| d.len() > MAX_FIELD) {
        return Err("version or degraded reason too long".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vsfleet_contract::{Action, JobPhase, ServerId};

    use super::*;

    fn event(host: &str) -> JobEvent {
        JobEvent {
            job_id: JobId::new(),
            server_id: ServerId::new(1).unwrap(),
            action: Action::Stop,
            host: host.into(),
            attempt: 1,
            at: Utc::now(),
            job_seq: None,
            phase: JobPhase::Started,
        }
    }

    #[test]
    fn a_payload_must_speak_for_the_host_of_its_subject() {
        let now = Utc::now();
        assert!(check_job_event("h1", &event("h1"), now).is_ok());
        assert!(check_job_event("h1", &event("h2"), now).unwrap_err().contains("h2"));
        let mut late = event("h1");
        late.at = now + chrono::Duration::days(1);
        assert!(check_job_event("h1", &late, now).is_err());
        let mut zero = event("h1");
        zero.attempt = 0;
        assert!(check_job_event("h1", &zero, now).is_err());
    }

    #[test]
    fn host_entries_speak_for_their_key_and_not_from_the_future() {
        let now = Utc::now();
        let entry = |host: &str, seen_at| HostPresence {
            host: host.into(),
            started_at: now,
            seen_at,
            version: "0.1.0".into(),
            degraded: None,
            capacity: None,
        };
        assert!(check_presence("h1", &entry("h1", now), now).is_ok());
        assert!(check_presence("h1", &entry("ghost", now), now).is_err());
        assert!(check_presence("h1", &entry("h1", now + chrono::Duration::days(365)), now).is_err());
        assert!(check_presence("a.b", &entry("a.b", now), now).is_err());
    }

    #[test]
    fn inventory_parts_are_bounded() {
        let now = Utc::now();
        let part = |part, parts| Inventory {
            host: "h1".into(),
            sync_id: uuid::Uuid::new_v4(),
            part,
            parts,
            at: now,
            containers: vec![],
            data_dirs: vec![],
            archives: vec![],
        };
        assert!(check_inventory("h1", &part(0, 1), now).is_ok());
        assert!(check_inventory("h1", &part(1, 1), now).is_err());
        assert!(check_inventory("h1", &part(0, u32::MAX), now).is_err());
        assert!(check_inventory("h2", &part(0, 1), now).is_err());
    }
}

//! The periodic jobs. Each period of each kind has one message id,
//! `{kind}-{period}`, where `period` counts intervals since the Unix epoch:
//! scheduler replicas publishing the same period collide in JetStream's
//! duplicate window, so each job is emitted once per period however many
//! replicas run. The scheduler holds no state that can be lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Periodic {
    /// Every host reports its containers and data; the api reconciles.
    Sync,
    /// Stale inner-container rows are dropped.
    Cleanup,
    /// Deleted servers past `purge_after` are purged.
    Purge,
}

impl Periodic {
    pub const ALL: [Periodic; 3] = [Periodic::Sync, Periodic::Cleanup, Periodic::Purge];

    pub fn as_str(self) -> &'static str {
        match self {
            Periodic::Sync => "sync",
            Periodic::Cleanup => "cleanup",
            Periodic::Purge => "purge",
        }
    }

    pub fn from_subject_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == kind)
    }
}

/// The body of a periodic job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub kind: Periodic,
    /// Intervals since the epoch; with `kind`, the message id.
    pub period: u64,
    pub at: DateTime<Utc>,
}

impl Tick {
    pub fn at(kind: Periodic, interval: Duration, now: DateTime<Utc>) -> Self {
        let ms = now.timestamp_millis().max(0) as u64;
        Self { kind, period: ms / interval.as_millis().max(1) as u64, at: now }
    }

    pub fn message_id(&self) -> String {
        format!("{}-{}", self.kind.as_str(), self.period)
    }
}

/// How long until the next period of `interval` starts.
pub fn until_next_period(interval: Duration, now: DateTime<Utc>) -> Duration {
    let interval_ms = interval.as_millis().max(1) as u64;
    let ms = now.timestamp_millis().max(0) as u64;
    Duration::from_millis(interval_ms - ms % interval_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_in_the_same_period_share_a_message_id() {
        let every = Duration::from_secs(30);
        let t0 = DateTime::from_timestamp(1_800_000_010, 0).unwrap();
        let t1 = DateTime::from_timestamp(1_800_000_025, 0).unwrap();
        let t2 = DateTime::from_timestamp(1_800_000_031, 0).unwrap();
        assert_eq!(Tick::at(Periodic::Sync, every, t0).message_id(), Tick::at(Periodic::Sync, every, t1).message_id());
        assert_ne!(Tick::at(Periodic::Sync, every, t1).message_id(), Tick::at(Periodic::Sync, every, t2).message_id());
        assert_ne!(Tick::at(Periodic::Sync, every, t0).message_id(), Tick::at(Periodic::Purge, every, t0).message_id());
        assert_eq!(until_next_period(every, t0), Duration::from_secs(20));
    }
}

//! The per-server fence. JetStream may deliver a job again after its
//! outcome was recorded (its worker was cut off between the work and the
//! acknowledgement), by which time the api may have accepted and run a
//! newer job for the server. Every api job carries a fence that grows per
//! server; a host remembers the newest it has started for each server (in
//! the server's lock file, [`ServerLock::fence`]) and drops any delivery
//! older than that, so a stale job never undoes a newer one. Checked and
//! written while the lock is held.

use crate::lock::ServerLock;

#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Run,
    /// This job already succeeded here; only its report may not have
    /// arrived. Running it again would change nothing in the end but could
    /// be seen meanwhile (a restart stops the server once more).
    Done,
    /// A newer job for the server has started here.
    Superseded {
        newest: i64,
    },
}

/// A fence is its job's creation time in microseconds: positive, and not
/// ahead of this host's clock by more than a minute of skew.
pub fn plausible(fence: i64, now: chrono::DateTime<chrono::Utc>) -> bool {
    fence > 0 && fence <= (now + chrono::Duration::minutes(1)).timestamp_micros()
}

/// Admits a job with `fence`, recording it as the newest when it is. The
/// same job delivered again runs again (it converges) unless it succeeded.
pub fn admit(lock: &ServerLock, fence: i64) -> std::io::Result<Admission> {
    match lock.fence()? {
        Some((newest, _)) if fence < newest => Ok(Admission::Superseded { newest }),
        Some((newest, true)) if fence == newest => Ok(Admission::Done),
        Some((newest, false)) if fence == newest => Ok(Admission::Run),
        _ => lock.set_fence(fence, false).map(|()| Admission::Run),
    }
}

/// Marks the job with `fence` as succeeded, before its report is sent.
pub fn complete(lock: &ServerLock, fence: i64) -> std::io::Result<()> {
    match lock.fence()? {
        Some((newest, _)) if newest != fence => Ok(()),
        _ => lock.set_fence(fence, true),
    }
}

#[cfg(test)]
mod tests {
    use vsfleet_contract::ServerId;

    use super::*;
    use crate::layout::DataRoot;
    use crate::lock::try_lock;

    #[test]
    fn only_a_past_creation_time_is_a_fence() {
        let now = chrono::Utc::now();
        assert!(plausible(now.timestamp_micros(), now));
        assert!(!plausible(0, now) && !plausible(-5, now));
        assert!(!plausible((now + chrono::Duration::hours(1)).timestamp_micros(), now));
    }

    #[test]
    fn an_older_job_is_dropped_once_a_newer_one_started_and_a_done_one_is_not_redone() {
        let dir = std::env::temp_dir().join(format!("vsfleet-fence-{}", std::process::id()));
        let root = DataRoot::new(&dir);
        let (a, b) = (ServerId::new(1).unwrap(), ServerId::new(2).unwrap());
        let lock_a = try_lock(&root, a).unwrap().unwrap();
        assert_eq!(admit(&lock_a, 100).unwrap(), Admission::Run);
        assert_eq!(admit(&lock_a, 100).unwrap(), Admission::Run);
        assert_eq!(admit(&lock_a, 200).unwrap(), Admission::Run);
        assert_eq!(admit(&lock_a, 100).unwrap(), Admission::Superseded { newest: 200 });
        complete(&lock_a, 200).unwrap();
        drop(lock_a);
        // Kept across locks (another process, a restart).
        let lock_a = try_lock(&root, a).unwrap().unwrap();
        assert_eq!(admit(&lock_a, 200).unwrap(), Admission::Done);
        assert_eq!(admit(&lock_a, 300).unwrap(), Admission::Run);
        // A stale completion does not mark a newer job.
        complete(&lock_a, 200).unwrap();
        assert_eq!(admit(&lock_a, 300).unwrap(), Admission::Run);
        // Another server's fence is its own.
        let lock_b = try_lock(&root, b).unwrap().unwrap();
        assert_eq!(admit(&lock_b, 50).unwrap(), Admission::Run);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

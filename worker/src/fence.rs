//! The per-server fence. JetStream may deliver a job again after its
//! outcome was recorded (its worker was cut off between the work and the
//! acknowledgement), by which time the api may have accepted and run a
//! newer job for the server. Every api job carries a fence that grows per
//! server; a host remembers the newest it has started for each server and
//! drops any delivery older than that, so a stale job never undoes a newer
//! one. Checked and written under the server's lock.

use vsfleet_contract::ServerId;

use crate::layout::DataRoot;

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

/// What the fence file says: the newest job started, and whether it succeeded.
fn read(root: &DataRoot, id: ServerId) -> std::io::Result<Option<(i64, bool)>> {
    match std::fs::read_to_string(root.fence_file(id)) {
        // Unreadable content is treated as absent: the file is ours alone,
        // and refusing every job of the server would be worse.
        Ok(text) => {
            let mut words = text.split_whitespace();
            let fence = words.next().and_then(|w| w.parse::<i64>().ok());
            Ok(fence.map(|f| (f, words.next() == Some("done"))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write(root: &DataRoot, id: ServerId, content: &str) -> std::io::Result<()> {
    let path = root.fence_file(id);
    std::fs::create_dir_all(root.locks_dir())?;
    // Written whole or not at all (rename). Not synced: two fsyncs per job
    // cut the dispatch rate by four, and a host crash can lose only the
    // newest mark, which reopens the window for the jobs in flight then.
    let tmp = path.with_extension("fence.new");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, &path)
}

/// Marks the job with `fence` as succeeded, before its report is sent.
pub fn complete(root: &DataRoot, id: ServerId, fence: i64) -> std::io::Result<()> {
    match read(root, id)? {
        Some((newest, _)) if newest != fence => Ok(()),
        _ => write(root, id, &format!("{fence} done")),
    }
}

/// Admits a job with `fence`, recording it as the newest when it is. The
/// same job delivered again runs again (it converges) unless it succeeded.
pub fn admit(root: &DataRoot, id: ServerId, fence: i64) -> std::io::Result<Admission> {
    match read(root, id)? {
        Some((newest, _)) if fence < newest => Ok(Admission::Superseded { newest }),
        Some((newest, true)) if fence == newest => Ok(Admission::Done),
        Some((newest, false)) if fence == newest => Ok(Admission::Run),
        _ => write(root, id, &fence.to_string()).map(|()| Admission::Run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_job_is_dropped_once_a_newer_one_started_and_the_same_one_runs_again() {
        let dir = std::env::temp_dir().join(format!("vsfleet-fence-{}", std::process::id()));
        let root = DataRoot::new(&dir);
        let (a, b) = (ServerId::new(1).unwrap(), ServerId::new(2).unwrap());
        assert_eq!(admit(&root, a, 100).unwrap(), Admission::Run);
        assert_eq!(admit(&root, a, 100).unwrap(), Admission::Run);
        assert_eq!(admit(&root, a, 200).unwrap(), Admission::Run);
        assert_eq!(admit(&root, a, 100).unwrap(), Admission::Superseded { newest: 200 });
        // Another server's fence is its own.
        assert_eq!(admit(&root, b, 50).unwrap(), Admission::Run);
        assert_eq!(std::fs::read_to_string(root.fence_file(a)).unwrap(), "200");
        complete(&root, a, 200).unwrap();
        assert_eq!(admit(&root, a, 200).unwrap(), Admission::Done);
        // A stale completion does not mark a newer job.
        assert_eq!(admit(&root, a, 300).unwrap(), Admission::Run);
        complete(&root, a, 200).unwrap();
        assert_eq!(admit(&root, a, 300).unwrap(), Admission::Run);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

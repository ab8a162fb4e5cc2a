//! The per-server fence. JetStream may deliver a job again after its
//! outcome was recorded (its worker was cut off between the work and the
//! acknowledgement), by which time the api may have accepted and run a
//! newer job for the server. Every api job carries a fence that grows per
//! server; a host remembers the newest it has started for each server and
//! drops any delivery older than that, so a stale job never undoes a newer
//! one. Checked and written under the server's lock.

use std::io::Write as _;

use vsfleet_contract::ServerId;

use crate::layout::DataRoot;

#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Run,
    /// A newer job for the server has started here.
    Superseded {
        newest: i64,
    },
}

/// Admits a job with `fence`, recording it as the newest when it is. The
/// same job delivered again is admitted: it converges.
pub fn admit(root: &DataRoot, id: ServerId, fence: i64) -> std::io::Result<Admission> {
    let path = root.fence_file(id);
    let newest = match std::fs::read_to_string(&path) {
        // Unreadable content is treated as absent: the file is ours alone,
        // and refusing every job of the server would be worse.
        Ok(text) => text.trim().parse::<i64>().ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    match newest {
        Some(newest) if fence < newest => return Ok(Admission::Superseded { newest }),
        Some(newest) if fence == newest => return Ok(Admission::Run),
        _ => {}
    }
    std::fs::create_dir_all(root.locks_dir())?;
    // Written whole or not at all, and kept across a host crash.
    let tmp = path.with_extension("fence.new");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(fence.to_string().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(Admission::Run)
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
        std::fs::remove_dir_all(dir).unwrap();
    }
}

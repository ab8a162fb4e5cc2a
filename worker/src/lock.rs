//! One job per server at a time, across every worker process on the host.
//! An advisory exclusive lock on `{data_root}/.locks/{id}.lock`, std's
//! [`File::try_lock`] (on Linux an `flock`, held per open file, so two opens
//! in one process exclude each other as two processes do): the kernel drops
//! it when the file is closed or the process dies, even by `kill -9`, so a
//! crash never leaves a server locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::time::Duration;

use vsfleet_contract::ServerId;

use crate::layout::DataRoot;

/// Held while a job runs; unlocks on drop (closing the file). The file
/// also holds the server's fence ([`crate::fence`]): written in place, in
/// one fixed-width write, so a job creates no inode.
#[derive(Debug)]
pub struct ServerLock {
    file: File,
}

const RECORD: usize = 26;

impl ServerLock {
    /// The fence recorded, and whether its job succeeded.
    pub fn fence(&self) -> io::Result<Option<(i64, bool)>> {
        use std::os::unix::fs::FileExt as _;
        let mut buf = [0u8; RECORD];
        let n = self.file.read_at(&mut buf, 0)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        let mut words = text.split_whitespace();
        // Unreadable content counts as none: the file is ours alone, and
        // refusing every job of the server would be worse.
        Ok(words.next().and_then(|w| w.parse::<i64>().ok()).map(|f| (f, words.next() == Some("done"))))
    }

    pub fn set_fence(&self, fence: i64, done: bool) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let record = format!("{fence:020} {}\n", if done { "done" } else { "    " });
        debug_assert_eq!(record.len(), RECORD);
        self.file.write_all_at(record.as_bytes(), 0)
    }
}

/// Tries once; `Ok(None)` when another job holds the server.
pub fn try_lock(root: &DataRoot, id: ServerId) -> io::Result<Option<ServerLock>> {
    std::fs::create_dir_all(root.locks_dir())?;
    let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(root.lock_file(id))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(ServerLock { file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(err)) => Err(err),
    }
}

/// Waits for the lock, calling `still_waiting` about once a second (the
/// caller tells JetStream the job is in progress meanwhile).
pub async fn lock<F, Fut>(root: &DataRoot, id: ServerId, mut still_waiting: F) -> io::Result<ServerLock>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut polls = 0u32;
    loop {
        if let Some(lock) = try_lock(root, id)? {
            return Ok(lock);
        }
        polls += 1;
        if polls.is_multiple_of(20) {
            still_waiting().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("vsfleet-lock-{}", std::process::id()));
        let root = DataRoot::new(&dir);
        let id = ServerId::new(7).unwrap();
        let first = try_lock(&root, id).unwrap().expect("free at first");
        assert!(try_lock(&root, id).unwrap().is_none(), "a second lock was granted");
        assert!(try_lock(&root, ServerId::new(8).unwrap()).unwrap().is_some(), "another server was blocked");
        drop(first);
        assert!(try_lock(&root, id).unwrap().is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_waiting_job_signals_progress_about_once_a_second_and_gets_the_lock_when_freed() {
        let dir = std::env::temp_dir().join(format!("vsfleet-lock-wait-{}", std::process::id()));
        let root = DataRoot::new(&dir);
        let id = ServerId::new(7).unwrap();
        let first = try_lock(&root, id).unwrap().expect("free at first");
        let signals = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let waiter = tokio::spawn({
            let (root, signals) = (root.clone(), signals.clone());
            async move {
                lock(&root, id, || {
                    signals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {}
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!waiter.is_finished(), "the lock was granted while held");
        let seen = signals.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=2).contains(&seen), "{seen} progress signals in 2.5 s");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("granted once freed");
        drop(second.unwrap().unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! One job per server at a time, across every worker process on the host.
//! An advisory exclusive lock on `{data_root}/.locks/{id}.lock`, std's
//! [`File::try_lock`] (on Linux an `flock`, held per open file, so two opens
//! in one process exclude each other as two processes do): the kernel drops
//! it when the file is closed or the process dies, even by `kill -9`, so a
//! crash never leaves a server locked.
//!
//! A job waiting behind another job of the same worker process is woken
//! the moment that one lets go (a stop, then a start at once, must not wait
//! out a poll); a lock held by another process is polled for.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

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

/// How often a waiting job looks again for a lock another process holds.
const POLL: Duration = Duration::from_millis(50);

/// Rung whenever a lock of this process is released.
static RELEASED: Notify = Notify::const_new();

impl Drop for ServerLock {
    fn drop(&mut self) {
        // Unlocked before the waiters wake: the file itself closes only
        // after this body, and a waiter that looked before then would find
        // it still locked and sleep a whole poll.
        let _ = self.file.unlock();
        RELEASED.notify_waiters();
    }
}

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
    // The common case, a free server, takes no part in the waiting.
    if let Some(lock) = try_lock(root, id)? {
        return Ok(lock);
    }
    let mut signalled = Instant::now();
    loop {
        // Registered before looking again, so a release between the look
        // and the wait is not missed.
        let released = RELEASED.notified();
        let mut released = std::pin::pin!(released);
        released.as_mut().enable();
        if let Some(lock) = try_lock(root, id)? {
            return Ok(lock);
        }
        if signalled.elapsed() >= Duration::from_secs(1) {
            still_waiting().await;
            signalled = Instant::now();
        }
        tokio::select! {
            () = released => {}
            () = tokio::time::sleep(POLL) => {}
        }
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

    /// On a paused clock time moves only when every task waits on a timer,
    /// so a waiter that needed its poll to see the release would still be
    /// waiting when the 1 ms timeout fires.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_in_the_same_process_is_woken_by_the_release_not_by_its_poll() {
        let dir = std::env::temp_dir().join(format!("vsfleet-lock-wake-{}", std::process::id()));
        let root = DataRoot::new(&dir);
        let id = ServerId::new(7).unwrap();
        let first = try_lock(&root, id).unwrap().expect("free at first");
        let waiter = tokio::spawn({
            let root = root.clone();
            async move { lock(&root, id, || async {}).await }
        });
        // Let it look, find the lock held, and wait.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "the lock was granted while held");
        drop(first);
        let granted = tokio::time::timeout(Duration::from_millis(1), waiter).await;
        assert!(granted.is_ok(), "the waiter waited for its poll after the release");
        drop(granted.unwrap().unwrap().unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

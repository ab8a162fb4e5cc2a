//! The services as real processes, for the crash and outage tests and the
//! chaos command: the binaries are built once per run with cargo, configured
//! by a TOML file written from the test's `Settings`, and stopped with
//! SIGTERM or killed with `kill -9`. Each one logs to its own file, shown
//! when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned; a pid that has exited is an
    // error we ignore.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The directory holding `vsfleet-api`, `vsfleet-worker` and `vsfleet-scheduler`:
/// `$VSFLEET_BIN_DIR`, else the workspace's debug build, rebuilt when it is
/// missing or older than this test binary (which is rebuilt whenever the
/// services' code changes). `scripts/test` builds them beforehand.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("VSFLEET_BIN_DIR") {
            return dir.into();
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
        let dir = target.join("debug");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let ours = std::env::current_exe().ok().and_then(|p| modified(&p));
        let stale = ["vsfleet-api", "vsfleet-worker", "vsfleet-scheduler"].iter().any(|b| {
            match (modified(&dir.join(b)), ours) {
                (Some(bin), Some(ours)) => bin < ours,
                _ => true,
            }
        });
        if stale {
            build(&workspace);
        }
        dir
    })
}

/// `cargo build` of the service binaries, in the environment a shell would
/// give it: the variables cargo and nextest set for this test would make the
/// nested build see changed inputs and rebuild dependencies each time.
fn build(workspace: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let keep = |k: &str| {
        matches!(k, "PATH" | "HOME" | "USER" | "RUSTFLAGS" | "CARGO_HOME" | "CARGO_TARGET_DIR")
            || k.starts_with("RUSTUP_")
            || k.starts_with("CARGO_BUILD_")
            || k.starts_with("CARGO_PROFILE_")
    };
    let status = Command::new(cargo)
        .current_dir(workspace)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| keep(k)))
        .args(["build", "--quiet", "-p", "vsfleet-api", "-p", "vsfleet-worker", "-p", "vsfleet-scheduler", "--bins"])
        .status()
        .expect("running cargo build for the service binaries");
    assert!(status.success(), "cargo build of the service binaries failed");
}

pub struct Service {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `bin` from [`bin_dir`] with `args`, logging to `log`.
    pub fn spawn(name: &str, bin: &str, args: &[&str], env: &[(&str, String)], log: &Path) -> Self {
        Self::spawn_at(name, &bin_dir().join(bin), args, env, log)
    }

    /// Starts the binary at `path` with `args`, logging to `log`.
    pub fn spawn_at(name: &str, path: &Path, args: &[&str], env: &[(&str, String)], log: &Path) -> Self {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(path)
            .args(args)
            // The services read every VSFLEET_* variable as a setting and
            // refuse unknown ones: this one is the harness's, not theirs.
            .env_remove("VSFLEET_BIN_DIR")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", std::env::var("VSFLEET_SERVICE_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        Self { name: name.to_owned(), child: Some(child), log: log.to_owned() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the graceful stop.
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Service::wait`] for async callers.
    pub async fn exited(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.wait(Duration::ZERO) {
                return Some(status);
            }
            if Instant::now() >= deadline || self.child.is_none() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `text`.
    pub async fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "{} did not log {text:?} in time; its log:\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then `kill -9` if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.terminate();
        let status = self.wait(grace);
        if status.is_none() {
            self.kill();
        }
        status
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

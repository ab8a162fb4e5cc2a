//! A real nats-server with JetStream for one test: dynamic port on loopback,
//! its own store directory, killed on drop (as async-nats' own tests do).
//! It can be stopped, frozen and restarted on the same port with the same
//! store, for the broker-outage tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::signal;

pub struct NatsServer {
    child: Option<Child>,
    url: String,
    port: u16,
    dir: PathBuf,
    /// The configuration file and the environment it reads passwords from.
    config: Option<(PathBuf, Vec<(String, String)>)>,
}

impl NatsServer {
    /// Starts nats-server with its files under `dir`: `$NATS_SERVER_BIN`,
    /// else the one `scripts/ensure-nats-server` installs, else `PATH`'s.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, None)
    }

    /// Starts it with a configuration file (the permission config of
    /// `contract::permissions`) and the environment that file reads.
    pub fn start_with(dir: &Path, config: Option<(PathBuf, Vec<(String, String)>)>) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let child = spawn(dir, None, config.as_ref());
        let ports = dir.join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = loop {
            if let Ok(raw) = std::fs::read_to_string(&ports)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&raw)
                && let Some(url) = json["nats"][0].as_str()
            {
                break url.to_owned();
            }
            assert!(Instant::now() < deadline, "nats-server did not start; see {}", dir.join("nats.log").display());
            std::thread::sleep(Duration::from_millis(20));
        };
        let port = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the url");
        Self { child: Some(child), url, port, dir: dir.to_owned(), config }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }

    /// `kill -9`: no goodbye to clients, JetStream recovers its files on restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store, and waits
    /// until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(&self.dir, Some(self.port), self.config.as_ref()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not restart; see {}",
                self.dir.join("nats.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP: connections stay open, nothing is answered.
    pub fn freeze(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("nats-server is running").id()
    }
}

fn spawn(dir: &Path, port: Option<u16>, config: Option<&(PathBuf, Vec<(String, String)>)>) -> Child {
    let bin = binary();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nats.log")).unwrap();
    let port = port.map_or("-1".to_owned(), |p| p.to_string());
    let mut command = Command::new(&bin);
    if let Some((file, env)) = config {
        command.arg("-c").arg(file).envs(env.iter().map(|(k, v)| (k, v)));
    }
    command
        .args(["-a", "127.0.0.1", "-p", &port, "-js", "--store_dir"])
        .arg(dir.join("js"))
        .arg("--ports_file_dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/ensure-nats-server): {e}", bin.display()))
}

/// `$NATS_SERVER_BIN`, else the one `scripts/ensure-nats-server` installs,
/// else the name alone (found on `PATH`).
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return bin.into();
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/nats-server/bin/nats-server");
    if installed.exists() { installed } else { "nats-server".into() }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

//! A real nats-server with JetStream for one test: dynamic port on loopback,
//! its own store directory, killed on drop (as async-nats' own tests do).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl NatsServer {
    /// Starts nats-server with its files under `dir`: `$NATS_SERVER_BIN`,
    /// else the one `scripts/ensure-nats-server` installs, else `PATH`'s.
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let bin = binary();
        let log = std::fs::File::create(dir.join("nats.log")).unwrap();
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "--store_dir"])
            .arg(dir.join("js"))
            .arg("--ports_file_dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} (run scripts/ensure-nats-server): {e}", bin.display()));
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
        Self { child, url, dir: dir.to_owned() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }
}

fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return bin.into();
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/nats-server/bin/nats-server");
    if installed.exists() { installed } else { "nats-server".into() }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

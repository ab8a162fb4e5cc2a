//! A Unix socket in front of Docker's, for the crash and Docker-outage
//! tests: a worker pointed at it (`DOCKER_HOST=unix://…`) reaches Docker
//! while it is up.
//! - Taken down, it cuts every open connection (a streaming `docker events`
//!   included) and closes new ones at once, as a daemon that went away would.
//! - Told to hold requests containing some text, it stops forwarding such a
//!   request and everything after it on that connection until released, so
//!   the worker hangs exactly there: half way through a job, at a known step.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct DockerProxy {
    path: PathBuf,
    up: watch::Sender<bool>,
    rules: Arc<Rules>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Rules {
    hold: Mutex<Option<String>>,
    /// Requests held since the last `hold`.
    held: watch::Sender<usize>,
    /// Bumped by `release`: held requests go on.
    released: watch::Sender<usize>,
}

impl DockerProxy {
    pub fn start(path: &Path) -> Self {
        let listener = UnixListener::bind(path).expect("binding the proxy socket");
        let (up, _) = watch::channel(true);
        let rules = Arc::new(Rules::default());
        let task = tokio::spawn(serve(listener, up.subscribe(), rules.clone()));
        Self { path: path.to_owned(), up, rules, task }
    }

    /// For `DOCKER_HOST`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// Holds every request whose first bytes contain `text` (for example
    /// `"/start HTTP"`, `"DELETE /"`), from now on.
    pub fn hold(&self, text: &str) {
        *self.rules.hold.lock().expect("not poisoned") = Some(text.to_owned());
        self.rules.held.send_replace(0);
    }

    /// Lets held requests through, and holds no more.
    pub fn release(&self) {
        *self.rules.hold.lock().expect("not poisoned") = None;
        self.rules.released.send_modify(|n| *n += 1);
    }

    /// Waits (30 s at most) until a request has been held.
    pub async fn wait_held(&self) {
        let mut held = self.rules.held.subscribe();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(30), held.wait_for(|n| *n > 0)).await;
        assert!(waited.is_ok(), "no request was held within 30 s");
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| "/var/run/docker.sock".into())
}

async fn serve(listener: UnixListener, up: watch::Receiver<bool>, rules: Arc<Rules>) {
    while let Ok((client, _)) = listener.accept().await {
        if !*up.borrow() {
            continue; // dropped: the client sees its connection closed
        }
        let mut up = up.clone();
        let rules = rules.clone();
        tokio::spawn(async move {
            let Ok(docker) = UnixStream::connect(docker_socket()).await else { return };
            tokio::select! {
                _ = relay(client, docker, &rules) => {}
                _ = up.wait_for(|up| !up) => {}
            }
        });
    }
}

async fn relay(client: UnixStream, docker: UnixStream, rules: &Rules) {
    let (mut client_in, mut client_out) = client.into_split();
    let (mut docker_in, mut docker_out) = docker.into_split();
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_in.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let hold = rules.hold.lock().expect("not poisoned").clone();
            if let Some(text) = hold
                && String::from_utf8_lossy(&buf[..n]).contains(&text)
            {
                let mut released = rules.released.subscribe();
                let before = *released.borrow_and_update();
                rules.held.send_modify(|n| *n += 1);
                let _ = released.wait_for(|n| *n > before).await;
            }
            if docker_out.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let answers = tokio::io::copy(&mut docker_in, &mut client_out);
    tokio::select! {
        _ = requests => {}
        _ = answers => {}
    }
}

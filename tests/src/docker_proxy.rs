//! A Unix socket in front of Docker's, for the Docker-outage tests: a worker
//! pointed at it (`DOCKER_HOST=unix://…`) reaches Docker while it is up.
//! Taken down, it cuts every open connection (a streaming `docker events`
//! included) and closes new ones at once, as a daemon that went away would.

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct DockerProxy {
    path: PathBuf,
    up: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl DockerProxy {
    pub fn start(path: &Path) -> Self {
        let listener = UnixListener::bind(path).expect("binding the proxy socket");
        let (up, _) = watch::channel(true);
        let task = tokio::spawn(serve(listener, up.subscribe()));
        Self { path: path.to_owned(), up, task }
    }

    /// For `DOCKER_HOST`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
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

async fn serve(listener: UnixListener, up: watch::Receiver<bool>) {
    while let Ok((mut client, _)) = listener.accept().await {
        if !*up.borrow() {
            continue; // dropped: the client sees its connection closed
        }
        let mut up = up.clone();
        tokio::spawn(async move {
            let Ok(mut docker) = UnixStream::connect(docker_socket()).await else { return };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut docker) => {}
                _ = up.wait_for(|up| !up) => {}
            }
        });
    }
}

//! Whether this host can do its work: Docker answers a ping. While it does
//! not, the worker is degraded: it says so in its presence entry (the api
//! shows it and places no new server here), fetches no jobs (they wait in
//! the queue instead of spending their deliveries), and resumes by itself
//! when Docker answers again.

use std::time::Duration;

use bollard::Docker;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a ping may take before Docker counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// This host's state as the last check saw it: `None` when healthy, else why not.
#[derive(Clone)]
pub struct Health {
    state: watch::Receiver<Option<String>>,
}

impl Health {
    /// A host that starts healthy (`Worker::build` has just reached Docker)
    /// and the handle that reports changes.
    pub fn new() -> (watch::Sender<Option<String>>, Health) {
        let (tx, rx) = watch::channel(None);
        (tx, Health { state: rx })
    }

    pub fn degraded(&self) -> Option<String> {
        self.state.borrow().clone()
    }

    pub async fn wait_until_healthy(&self) {
        // An error means the checker stopped (shutdown): do not block on it.
        let _ = self.state.clone().wait_for(Option::is_none).await;
    }

    pub async fn changed(&mut self) {
        if self.state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Pings Docker every `every` until shut down, publishing each change.
pub async fn run(docker: Docker, state: watch::Sender<Option<String>>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(format!("Docker is unreachable: {error}")),
            Err(_) => Some(format!("Docker did not answer a ping within {PING_TIMEOUT:?}")),
        };
        state.send_if_modified(|was| {
            if *was == now {
                return false;
            }
            match &now {
                Some(why) => tracing::error!(why, "host degraded: fetching no jobs until Docker answers"),
                None => tracing::warn!("Docker answers again: fetching jobs"),
            }
            *was = now;
            true
        });
    }
}

//! The container monitor (seed 000 §8): every few seconds, the containers
//! inside each running server are listed with `docker ps` in that server
//! and sent to the api. Each server is polled on its own with a timeout, so
//! one slow server delays nobody else; a server still answering the last
//! poll is skipped rather than piled up. Snapshots go over core NATS: one
//! lost is replaced by the next.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{ContainerState, InnerContainer, InnerContainers, ServerId, Settings};

use crate::docker::Containers;

/// An unchanged list is still sent this often, to keep its rows fresh.
const REFRESH: Duration = Duration::from_secs(60);

pub struct Monitor {
    containers: Containers,
    nats: async_nats::Client,
    subject: String,
    host: String,
    every: Duration,
    timeout: Duration,
    busy: Mutex<HashSet<ServerId>>,
    /// What was last sent per server, and when.
    sent: Mutex<HashMap<ServerId, (Vec<InnerContainer>, Instant)>>,
}

impl Monitor {
    pub fn new(containers: Containers, nats: async_nats::Client, settings: &Settings) -> Arc<Self> {
        let host = settings.worker.host_id.clone();
        Arc::new(Self {
            containers,
            nats,
            subject: settings.subjects().monitor(&host),
            host,
            every: Duration::from_millis(settings.worker.monitor_interval_ms),
            timeout: Duration::from_millis(settings.worker.monitor_timeout_ms),
            busy: Mutex::new(HashSet::new()),
            sent: Mutex::new(HashMap::new()),
        })
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let running: Vec<_> = match self.containers.list_managed().await {
                Ok(list) => list.into_iter().filter(|c| c.state == ContainerState::Running).collect(),
                Err(error) => {
                    tracing::debug!(error = format!("{error:#}"), "monitor: cannot list servers");
                    continue;
                }
            };
            // A server that stops is forgotten, so its first list after a
            // restart is sent at once even if nothing inside changed.
            self.sent.lock().expect("not poisoned").retain(|id, _| running.iter().any(|c| c.server_id == *id));
            for server in running {
                if !self.busy.lock().expect("not poisoned").insert(server.server_id) {
                    continue; // still answering the previous poll
                }
                let me = self.clone();
                tokio::spawn(async move {
                    let id = server.server_id;
                    match tokio::time::timeout(me.timeout, me.poll(id, &server.container_id)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::debug!(server_id = %id, error = format!("{error:#}"), "monitor: poll failed")
                        }
                        Err(_) => tracing::debug!(server_id = %id, "monitor: server too slow to answer; skipped"),
                    }
                    me.busy.lock().expect("not poisoned").remove(&id);
                });
            }
        }
    }

    async fn poll(&self, id: ServerId, container: &str) -> anyhow::Result<()> {
        let out =
            self.containers.exec(container, &["docker", "ps", "-a", "--no-trunc", "--format", "{{json .}}"]).await?;
        anyhow::ensure!(out.exit_code == 0, "docker ps exited {}: {}", out.exit_code, out.stderr.trim());
        let list = parse_ps(&out.stdout);
        {
            let sent = self.sent.lock().expect("not poisoned");
            if let Some((last, when)) = sent.get(&id)
                && *last == list
                && when.elapsed() < REFRESH
            {
                return Ok(());
            }
        }
        let report =
            InnerContainers { server_id: id, host: self.host.clone(), at: Utc::now(), containers: list.clone() };
        self.nats.publish(self.subject.clone(), serde_json::to_vec(&report)?.into()).await?;
        self.sent.lock().expect("not poisoned").insert(id, (list, Instant::now()));
        Ok(())
    }
}

/// `docker ps --format '{{json .}}'` prints one JSON object per line.
pub fn parse_ps(stdout: &str) -> Vec<InnerContainer> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| {
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            InnerContainer {
                id: field("ID"),
                image: field("Image"),
                names: field("Names"),
                state: field("State"),
                status: field("Status"),
                ports: field("Ports"),
                labels: field("Labels"),
                created: field("CreatedAt"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_ps_json_lines_are_read() {
        let out = r#"{"ID":"abc","Image":"nginx","Names":"web","State":"running","Status":"Up 2 minutes","Ports":"80/tcp","Labels":"a=b","CreatedAt":"2026-11-22 10:00:00 +0000 UTC"}
not json
"#;
        let list = parse_ps(out);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].names.as_str(), list[0].state.as_str()), ("web", "running"));
    }
}

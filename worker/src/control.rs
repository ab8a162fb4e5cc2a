//! Requests a host answers at once, outside the job queue. A forced stop
//! kills the server's container without taking the server's lock: it is
//! what an operator reaches for when the job in flight is stuck.

use bollard::query_parameters::KillContainerOptions;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{KillReply, ServerId};

use crate::error::{OpError, docker_status};
use crate::ops::Operations;

#[derive(serde::Deserialize)]
struct KillRequest {
    server_id: ServerId,
}

/// Answers kill requests until shut down. The queue group means one worker
/// process per host answers each request.
pub async fn run(nats: async_nats::Client, subject: String, ops: Operations, shutdown: CancellationToken) {
    let mut requests = match nats.queue_subscribe(subject.clone(), "worker".into()).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, subject, "cannot listen for forced stops");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = requests.next() => match next {
                Some(m) => m,
                None => return,
            },
        };
        let Some(reply) = message.reply.clone() else { continue };
        let result = match serde_json::from_slice::<KillRequest>(&message.payload) {
            Ok(request) => kill(&ops, request.server_id).await.map_err(|e| e.to_string()),
            Err(error) => Err(format!("not a kill request: {error}")),
        };
        let body = serde_json::to_vec(&KillReply { result }).expect("replies serialise");
        if let Err(error) = nats.publish(reply, body.into()).await {
            tracing::warn!(%error, "cannot answer a forced stop");
        }
    }
}

async fn kill(ops: &Operations, id: ServerId) -> Result<vsfleet_contract::Observation, OpError> {
    if let Some(found) = ops.containers.find_ours(id).await? {
        let options = KillContainerOptions { signal: "SIGKILL".into() };
        match ops.containers.docker().kill_container(&found.id, Some(options)).await {
            // 409: not running; 404: gone meanwhile. Either way it is stopped.
            Ok(()) => tracing::warn!(server_id = %id, "server killed on request (forced stop)"),
            Err(e) if matches!(docker_status(&e), Some(404 | 409)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ops.observe(id).await
}

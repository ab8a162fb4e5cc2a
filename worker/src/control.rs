//! Requests a host answers at once, outside the job queue:
//! - a forced stop kills the server's container without taking the server's
//!   lock: it is what an operator reaches for when the job in flight is stuck;
//! - a port offer lists host ports the api may allocate to a new server.

use bollard::query_parameters::KillContainerOptions;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{KillReply, PortRange, PortsReply, PortsRequest, ServerId, Subjects};

use crate::error::{OpError, docker_status};
use crate::ops::Operations;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KillRequest {
    server_id: ServerId,
}

/// Answers until shut down. The queue group means one worker process per
/// host answers each request.
pub async fn run(
    nats: async_nats::Client,
    subjects: Subjects,
    host: String,
    ops: Operations,
    range: PortRange,
    shutdown: CancellationToken,
) {
    let (kill_subject, ports_subject) = (subjects.kill(&host), subjects.ports(&host));
    let subscribe = async |subject: &String| nats.queue_subscribe(subject.clone(), "worker".into()).await;
    let (kills, offers) = match (subscribe(&kill_subject).await, subscribe(&ports_subject).await) {
        (Ok(kills), Ok(offers)) => (kills, offers),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, host, "cannot listen for forced stops and port requests");
            return;
        }
    };
    let mut requests = futures::stream::select(kills, offers);
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = requests.next() => match next {
                Some(m) => m,
                None => return,
            },
        };
        let Some(reply) = message.reply.clone() else { continue };
        // Each on its own: a forced stop never waits behind port offers.
        let (nats, ops, is_offer) = (nats.clone(), ops.clone(), message.subject.as_str() == ports_subject);
        tokio::spawn(async move {
            let body = if is_offer {
                let result = match serde_json::from_slice::<PortsRequest>(&message.payload) {
                    Ok(request) => crate::ports::offer(&ops, range, &request).await.map_err(|e| e.to_string()),
                    Err(error) => Err(format!("not a port request: {error}")),
                };
                serde_json::to_vec(&PortsReply { result })
            } else {
                let result = match serde_json::from_slice::<KillRequest>(&message.payload) {
                    Ok(request) => kill(&ops, request.server_id).await.map_err(|e| e.to_string()),
                    Err(error) => Err(format!("not a kill request: {error}")),
                };
                serde_json::to_vec(&KillReply { result })
            };
            let body = body.expect("replies serialise");
            if let Err(error) = nats.publish(reply, body.into()).await {
                tracing::warn!(%error, subject = %message.subject, "cannot answer a control request");
            }
        });
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

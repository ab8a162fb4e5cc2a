//! Which host ports this host can offer a new server (seed 002's port
//! allocation). The api knows which ports it has allocated on the host (the
//! first layer) and sends them as `exclude`; here the second and third
//! layers drop the ports any container on this engine publishes (a running
//! one, or a stopped one that takes them back when it starts) and those a
//! bind test finds taken by a process outside Docker. The bind test speaks
//! for the host only when the worker shares the host's network namespace (a
//! systemd service, or `network_mode: host`); in its own namespace the first
//! two layers still hold.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};

use vsfleet_contract::{MAX_PORTS, PortRange, PortsRequest};

use crate::error::OpError;
use crate::ops::Operations;

/// The most ports one offer holds: a create's own plus room for the creates
/// racing it on the same host.
pub const MAX_OFFER: u16 = 256;

/// Up to `count` ports of `range`, lowest first.
pub async fn offer(ops: &Operations, range: PortRange, request: &PortsRequest) -> Result<Vec<u16>, OpError> {
    if request.count == 0 || request.count > MAX_OFFER {
        return Err(OpError::Refused(format!("a port offer holds 1 to {MAX_OFFER} ports")));
    }
    let mut taken: HashSet<u16> = request.exclude.iter().copied().collect();
    taken.extend(ops.containers.published_ports().await?);
    let count = usize::from(request.count);
    let offered = tokio::task::spawn_blocking(move || {
        range.iter().filter(|p| !taken.contains(p)).filter(|p| bind_test(*p)).take(count).collect::<Vec<_>>()
    })
    .await
    .map_err(|e| OpError::Refused(format!("port bind test: {e}")))?;
    tracing::debug!(offered = offered.len(), wanted = count, max_per_server = MAX_PORTS, "ports offered");
    Ok(offered)
}

/// Whether a TCP listener can take the port on every IPv4 address now.
fn bind_test(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_held_by_a_process_fails_the_bind_test() {
        let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(!bind_test(port));
        drop(held);
        assert!(bind_test(port));
    }
}

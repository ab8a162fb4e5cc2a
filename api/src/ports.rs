//! Host ports for a new server's published ports (seed 002's three
//! layers). The database is the authority: a host port is allocated when its
//! `server_ports` row commits with the server's. The host proposes: it
//! offers the lowest ports of its `worker.port_range` that the api has not
//! allocated (sent as `exclude`), that no container publishes, and that a
//! bind test found free. The create's transaction then takes the first
//! offered ports still free in the database, so creates racing on one host
//! take different ones (the unique key is the last word).

use vsfleet_contract::{MAX_PORTS, PortsReply, PortsRequest, PublishedPort, Subjects};

use crate::control;
use crate::error::ApiError;
use crate::store::{Store, Tx};

/// How many more ports than it needs a create asks for: the room for the
/// creates racing it on the same host.
const SLACK: usize = 32;

/// The host's offer for `wanted` ports, checked.
pub async fn offer(
    nats: &async_nats::Client,
    subjects: &Subjects,
    db: &Store,
    host: &str,
    wanted: usize,
) -> Result<Vec<u16>, ApiError> {
    debug_assert!(wanted <= MAX_PORTS);
    let exclude: Vec<u16> = db.ports_on(host).await?.into_iter().filter_map(|p| u16::try_from(p).ok()).collect();
    let count = (wanted + SLACK) as u16;
    let request = PortsRequest { count, exclude: exclude.clone() };
    let reply: PortsReply = control::ask(nats, subjects.ports(host), &request, host, "a port request").await?;
    let unavailable = control::unavailable;
    let offered = reply.result.map_err(|why| unavailable(format!("host {host} cannot offer ports: {why}")))?;
    check(&offered, &exclude, count)
        .map_err(|why| unavailable(format!("host {host}'s port offer is refused: {why}")))?;
    Ok(offered)
}

/// A worker's answer is outside input: no more than asked, none twice,
/// none allocated already, none among the system's ports.
fn check(offered: &[u16], exclude: &[u16], count: u16) -> Result<(), String> {
    if offered.len() > usize::from(count) {
        return Err(format!("{} ports where {count} were asked for", offered.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for p in offered {
        if *p < 1024 || exclude.contains(p) || !seen.insert(*p) {
            return Err(format!("port {p} cannot be offered"));
        }
    }
    Ok(())
}

/// In the create's transaction: the first offered ports that no server
/// holds now, paired with the container ports in order; `None` when the
/// offer ran out (creates raced for the host's last free ports).
pub async fn allocate(
    tx: &mut Tx<'_>,
    host: &str,
    container: &[u16],
    offered: &[u16],
) -> Result<Option<Vec<PublishedPort>>, crate::store::StoreError> {
    if container.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let taken: std::collections::HashSet<u16> = tx.taken_ports(host).await?.into_iter().collect();
    let free = offered.iter().filter(|p| !taken.contains(p));
    let ports: Vec<PublishedPort> =
        container.iter().zip(free).map(|(c, h)| PublishedPort { container: *c, host: *h }).collect();
    Ok((ports.len() == container.len()).then_some(ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_checked_like_any_message() {
        assert!(check(&[20000, 20001], &[], 2).is_ok());
        assert!(check(&[20000, 20001, 20002], &[], 2).is_err());
        assert!(check(&[20000, 20000], &[], 4).is_err());
        assert!(check(&[22], &[], 4).is_err());
        assert!(check(&[20000], &[20000], 4).is_err());
    }
}

//! Three hosts, nine creates: three servers in each host's own engine, with
//! the right mounts, and none in the machine's engine; then every host is
//! at its capacity.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use vsfleet_tests::rig::{HOST_DATA_ROOT, Rig, RigConfig};

use crate::{create_running, timing};

#[tokio::test]
async fn nine_creates_spread_three_to_each_host_engine() {
    let started = Instant::now();
    let rig = Rig::start(RigConfig::default().extra("worker.capacity", 3)).await;

    let servers = create_running(&rig, 9, "sklaida").await;
    for (i, host) in rig.hosts.iter().enumerate() {
        let placed: Vec<i64> = servers.iter().filter(|(_, h)| *h == host.id).map(|(id, _)| *id).collect();
        assert_eq!(placed.len(), 3, "the api placed {placed:?} on {}: {servers:?}", host.id);
        let mut containers = rig.containers(i).await;
        containers.sort_by_key(|c| c.server_id);
        let in_engine: Vec<Option<i64>> = containers.iter().map(|c| c.server_id).collect();
        assert_eq!(in_engine, placed.iter().map(|id| Some(*id)).collect::<Vec<_>>(), "{}'s engine", host.id);
        for c in &containers {
            let id = c.server_id.unwrap();
            assert_eq!(c.state, "running", "{c:?}");
            assert_eq!(c.host_label, host.id, "{c:?}");
            assert_eq!(
                c.mounts,
                vec![
                    (format!("{HOST_DATA_ROOT}/{id}/apps"), "/apps".to_owned()),
                    (format!("{HOST_DATA_ROOT}/{id}/docker"), "/var/lib/docker".to_owned()),
                ],
                "{c:?}"
            );
            // The host's data root is the rig's directory for it.
            assert!(host.data_root().join(id.to_string()).join("apps").is_dir(), "apps/ of {id} on {}", host.id);
            assert!(host.data_root().join(id.to_string()).join("docker").is_dir(), "docker/ of {id} on {}", host.id);
            // The API's container id is the one in this host's engine, which
            // the machine's engine does not know.
            let server = rig.api.server(id).await;
            assert_eq!(server["host"], host.id.as_str(), "{server}");
            assert_eq!(server["container_id"], c.id.as_str(), "{server}");
            assert!(rig.machine.inspect_container(&c.id, None).await.is_err(), "{} is in the machine's engine", c.id);
        }
    }
    assert!(rig.machine_containers().await.is_empty(), "servers were created in the machine's engine");

    // Every host is at its capacity: a tenth create is refused, a pin too.
    let (status, body) = rig.api.post("/v1/servers", json!({ "name": "dešimtas" })).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_host_available")),
        "{body}"
    );
    let (status, body) = rig.api.post("/v1/servers", json!({ "name": "dešimtas", "host": rig.hosts[0].id })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("host_full")), "{body}");
    rig.assert_converged(Duration::from_secs(10)).await;
    rig.down().await;
    timing("nine_creates_spread_three_to_each_host_engine", started);
}

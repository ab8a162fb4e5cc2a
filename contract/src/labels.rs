//! Docker labels on every managed container. They re-link a container to its
//! server when the recorded container id is stale (seed 001), and keep a
//! worker away from containers that belong to another host or deployment.

pub const MANAGED: &str = "vsfleet.managed";
pub const SERVER_ID: &str = "vsfleet.server_id";
pub const HOST: &str = "vsfleet.host";
/// The NATS prefix of the deployment that made the container.
pub const DEPLOYMENT: &str = "vsfleet.deployment";

//! The harness behind the integration tests, the benchmark and the chaos
//! command: a real nats-server per run ([`nats_server`]), the real api and
//! worker in-process or as processes ([`process`]) against it, the Docker
//! engine (directly, or through a [`docker_proxy`] that can go down) and a
//! SQLite file ([`app`]); and a rig of several Docker hosts and a NATS
//! cluster in containers ([`rig`]).

pub mod app;
pub mod chaos;
pub mod database;
pub mod docker_proxy;
pub mod nats_server;
pub mod process;
pub mod rig;

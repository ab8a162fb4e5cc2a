//! The harness behind the integration tests and the benchmark: a real
//! nats-server per run ([`nats_server`]) and the real api and worker
//! in-process against it, the Docker engine and a SQLite file ([`app`]).

pub mod app;
pub mod nats_server;

//! The vsfleet api: the HTTP API, the only service that opens the database.
//!
//! Layered bottom to top ([`LAYERS`], checked by a test): [`store`]; what the
//! api makes of rows; the flows; [`http`]; [`app`].
//!
//! - [`app`]: builds and runs everything below from [`Settings`](vsfleet_contract::Settings).
//! - [`http`]: routes, extractors and handlers (thin), and the connection loop with its timeouts.
//! - [`lifecycle`]: the rules: ownership, state checks, job row plus state change in one transaction.
//! - [`dispatch`]: publishing jobs to JetStream and the outbox that republishes unacknowledged ones.
//! - [`inbound`]: the checks of every message heard from NATS; what fails them goes to the dead letters.
//! - [`events`]: recording the workers' events: job phases, drift, inventories.
//! - [`job_events`]: applying a batch of job phases to the rows in a fixed number of statements.
//! - [`reconcile`]: a host's inventory against the database (the periodic sync), and drift seen by Docker's events.
//! - [`watchdog`]: fails the jobs past their deadline.
//! - [`schedule`]: the api's periodic jobs: stale-row cleanup and auto-purge.
//! - [`monitor`]: the containers inside each running server.
//! - [`hosts`]: which worker hosts are alive.
//! - [`accounts`]: the rules of users and tokens (who may create, revoke, disable what).
//! - [`domains`]: a server's domain names: who may add and remove them.
//! - [`ports`]: host ports for a new server's published ports.
//! - [`control`]: requests a host's workers answer at once (forced stop, port offer).
//! - [`bulk`]: one action over many servers, for admins.
//! - [`activity`]: the activity log: who did what to what, when, and how it ended.
//! - [`redact`]: host paths out of what tenants read.
//! - [`store`]: the database (SQLite or PostgreSQL), the only place that holds SQL, and its typed rows.
//! - [`servers`], [`jobs`], [`users`]: what the api does with those rows (views, payloads, tokens).
//! - [`error`]: the one HTTP error type.
//! - [`metrics`]: the api's Prometheus metrics.

pub mod accounts;
pub mod activity;
pub mod app;
pub mod bulk;
pub mod control;
pub mod dispatch;
pub mod domains;
pub mod error;
pub mod events;
pub mod hosts;
pub mod http;
pub mod inbound;
pub mod job_events;
pub mod jobs;
pub mod lifecycle;
pub mod metrics;
pub mod monitor;
pub mod ports;
pub mod reconcile;
pub mod redact;
pub mod schedule;
pub mod servers;
pub mod store;
pub mod users;
pub mod watchdog;

pub use app::Application;
pub use http::AppState;

/// The layers, bottom first: a module may use its own layer and those below.
/// `store` holds the SQL and its rows; the next layer what the api makes
/// of rows (views, payloads, tokens, errors); then the flows (requests,
/// events, reconciliation, the background loops); then HTTP; then the
/// wiring. Checked by the test below.
pub const LAYERS: &[&[&str]] = &[
    &["store"],
    &["redact", "users", "jobs", "servers", "activity", "error", "metrics"],
    &[
        "inbound",
        "hosts",
        "dispatch",
        "control",
        "domains",
        "ports",
        "job_events",
        "reconcile",
        "monitor",
        "accounts",
        "lifecycle",
        "bulk",
        "watchdog",
        "schedule",
        "events",
    ],
    &["http"],
    &["app"],
];

#[cfg(test)]
mod layers {
    use std::path::Path;

    fn layer(module: &str) -> usize {
        super::LAYERS
            .iter()
            .position(|layer| layer.contains(&module))
            .unwrap_or_else(|| panic!("{module} has no layer"))
    }

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn no_module_uses_one_above_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut wrong = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let module = relative.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs");
            if matches!(module, "lib" | "main") {
                continue;
            }
            let own = layer(module);
            for line in std::fs::read_to_string(&file).unwrap().lines().filter(|l| !l.trim_start().starts_with("//")) {
                for used in line.split("crate::").skip(1) {
                    let used: String = used.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if !used.is_empty() && used != module && layer(&used) > own {
                        wrong.push(format!("{}: {module} uses {used}", relative.display()));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "modules using a layer above their own:\n{}", wrong.join("\n"));
    }
}

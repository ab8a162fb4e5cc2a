//! `vsfleet-rig`: the multi-host rig of [`vsfleet_tests::rig`] for people
//! (`scripts/rig`).
//! - `up` starts one and keeps it until Ctrl-C or SIGTERM, then removes it;
//!   it prints the API address, an admin token and each host's Docker socket
//!   (also in `/tmp/vsrig-<id>/rig.json`);
//! - `status` lists the rigs on this machine;
//! - `down [ID…]` removes them (all by default), also those whose `up` died.

use std::time::Duration;

use clap::{Parser, Subcommand};
use vsfleet_tests::rig::{self, Rig, RigConfig};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a rig and keep it until Ctrl-C or SIGTERM.
    Up {
        /// Worker hosts.
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// nats-server nodes in the cluster.
        #[arg(long, default_value_t = 3)]
        nats: usize,
        /// `worker.heartbeat_secs`.
        #[arg(long, default_value_t = 1)]
        heartbeat_secs: u64,
    },
    /// List the rigs on this machine.
    Status,
    /// Remove rigs (all when no id is given).
    Down { ids: Vec<String> },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Up { hosts, nats, heartbeat_secs } => {
            let mut config = RigConfig::default().hosts(hosts).with(move |s| s.worker.heartbeat_secs = heartbeat_secs);
            config.nats_nodes = nats;
            let rig = Rig::start(config).await;
            println!("rig {} is up (scripts/rig down {} removes it if this process dies)", rig.id, rig.id);
            println!("  api          http://{}", rig.api.addr);
            println!("  admin token  {}", rig.api.token);
            for node in &rig.nats {
                println!("  nats {}      {} ({})", node.name, node.url(), node.container);
            }
            for host in &rig.hosts {
                println!(
                    "  {}        {}  DOCKER_HOST=unix://{}/rig/run/docker.sock  data {}",
                    host.id,
                    host.container,
                    host.dir.display(),
                    host.data_root().display()
                );
            }
            println!("  files        {}", rig.dir.display());
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            println!("removing rig {}", rig.id);
            tokio::time::timeout(Duration::from_secs(120), rig.down()).await.expect("the rig goes down in time");
        }
        Command::Status => print!("{}", rig::status()),
        Command::Down { ids } => {
            let removed = if ids.is_empty() {
                rig::remove_all()
            } else {
                ids.iter().for_each(|id| rig::remove(id));
                ids
            };
            if removed.is_empty() {
                println!("no rig");
            }
            for id in removed {
                println!("removed rig {id}");
            }
        }
    }
    std::process::ExitCode::SUCCESS
}

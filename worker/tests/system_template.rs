//! The shipped system template (`templates/sistema`), rendered as a worker
//! renders it, is a compose project that compose accepts. Its images are
//! never pulled (no registry here): `config` only reads the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use vsfleet_contract::ServerId;
use vsfleet_worker::stack::{COMPOSE_FILE, Variables, render};

fn shipped_template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/sistema")
}

/// `docker compose` where the plugin is installed, else `docker-compose`.
fn compose() -> Command {
    let plugin = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    if plugin {
        let mut command = Command::new("docker");
        command.arg("compose");
        command
    } else {
        Command::new("docker-compose")
    }
}

#[test]
fn the_shipped_system_template_renders_to_a_valid_compose_project() {
    let scratch = std::env::temp_dir().join(format!("vsfleet-system-template-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let dest = scratch.join("apps/sistema");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let vars = Variables {
        server_id: ServerId::new(42).unwrap(),
        server_name: "hosting-users-dind-42".into(),
        host_id: "host7".into(),
        ports: vec![(22, 20001)],
    };
    assert!(render(&shipped_template(), &dest, &vars).unwrap());

    let compose_file = std::fs::read_to_string(dest.join(COMPOSE_FILE)).unwrap();
    assert!(compose_file.contains("server 42 (hosting-users-dind-42, host host7)"), "{compose_file}");
    let caddyfile = std::fs::read_to_string(dest.join("endpoint/Caddyfile")).unwrap();
    assert!(caddyfile.contains("X-Virtual-Server-Id \"42\""), "{caddyfile}");
    for placeholder in ["${SERVER_ID}", "${SERVER_NAME}", "${HOST_ID}"] {
        assert!(!compose_file.contains(placeholder) && !caddyfile.contains(placeholder), "{placeholder} left");
    }

    let out = compose()
        .arg("-f")
        .arg(dest.join(COMPOSE_FILE))
        .args(["config", "-q"])
        .env_remove("SYSTEM_CLIENTS")
        .output()
        .expect("docker compose or docker-compose is installed (scripts/test installs docker-compose)");
    assert!(out.status.success(), "compose config: {}", String::from_utf8_lossy(&out.stderr));
    let out = compose().arg("-f").arg(dest.join(COMPOSE_FILE)).arg("config").output().unwrap();
    let config = String::from_utf8_lossy(&out.stdout);
    for service in ["sistema-endpoint", "sistema-dockge", "sistema-filebrowser", "sistema-webssh2"] {
        assert!(config.contains(&format!("container_name: {service}")), "{service} missing:\n{config}");
    }
    assert!(config.contains("10080"), "the endpoint's port:\n{config}");
    std::fs::remove_dir_all(scratch).unwrap();
}

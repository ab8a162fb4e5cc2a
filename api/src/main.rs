use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vsfleet_api::{Application, db, users};
use vsfleet_contract::Settings;

/// vsfleet api: the HTTP API of the virtual server control plane.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (also VSFLEET_CONFIG); environment variables
    /// VSFLEET_<SECTION>__<KEY> override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print nats-server's `authorization` block: one user per role with
    /// least privilege, for the configured nats.prefix and these worker
    /// hosts (passwords from environment variables; see nats/README.md).
    NatsConfig {
        /// A worker host id (repeat for each host).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print a new API token alone on stdout.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        admin: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    vsfleet_contract::telemetry::init();
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(settings.api.listen)
                .await
                .with_context(|| format!("binding api.listen {}", settings.api.listen))?;
            let app = Application::build(settings, listener).await?;
            let shutdown = vsfleet_contract::process::shutdown_on_signal();
            app.run_until_stopped(shutdown).await
        }
        Command::NatsConfig { hosts } => {
            for host in &hosts {
                vsfleet_contract::subjects::check_host_id(host)?;
            }
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let users = vsfleet_contract::permissions::users(&settings.subjects(), &hosts)?;
            print!("{}", vsfleet_contract::permissions::render(&users));
            Ok(())
        }
        Command::Migrate => {
            let db = db::open(&settings.database.url).await?;
            db::migrate(&db).await?;
            eprintln!("migrations applied to {}", settings.database.url);
            Ok(())
        }
        Command::User { command: UserCommand::Create { email, admin } } => {
            let db = db::open(&settings.database.url).await?;
            db::migrate(&db).await?;
            let (user, token) = users::create(&db, &email, admin).await?;
            eprintln!("created user {} ({}){}", user.id, user.email, if admin { " as admin" } else { "" });
            println!("{token}");
            Ok(())
        }
    }
}

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vsfleet_api::Application;
use vsfleet_api::accounts::{self, By};
use vsfleet_api::store::Store;
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
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
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
    /// Disable a user: every token of theirs is refused (401) within a second.
    Disable {
        #[arg(long)]
        email: String,
    },
    /// Enable a disabled user again.
    Enable {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for a user and print it alone on stdout (shown once).
    Create {
        #[arg(long)]
        email: String,
    },
    /// Revoke a token by id: refused (401) within a second.
    Revoke { id: i64 },
    /// List a user's tokens: id, created, revoked (never the secrets).
    List {
        #[arg(long)]
        email: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    vsfleet_contract::telemetry::init(settings.log.format);
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
            open_migrated(&settings).await?;
            eprintln!("migrations applied to {}", settings.database.url);
            Ok(())
        }
        Command::User { command } => {
            let db = open_migrated(&settings).await?;
            let (email, disabled) = match command {
                UserCommand::Create { email, admin } => {
                    let (user, token) = accounts::create_user(&db, By::Operator, &email, admin).await?;
                    eprintln!("created user {} ({}){}", user.id, user.email, if admin { " as admin" } else { "" });
                    println!("{}", token.secret);
                    return Ok(());
                }
                UserCommand::Disable { email } => (email, true),
                UserCommand::Enable { email } => (email, false),
            };
            let user = accounts::by_email(&db, &email).await?;
            let user = accounts::set_disabled(&db, None, By::Operator, user.id, disabled).await?;
            eprintln!("user {} ({}) {}", user.id, user.email, if disabled { "disabled" } else { "enabled" });
            Ok(())
        }
        Command::Token { command } => {
            let db = open_migrated(&settings).await?;
            match command {
                TokenCommand::Create { email } => {
                    let user = accounts::by_email(&db, &email).await?;
                    let token = accounts::create_token(&db, By::Operator, user.id).await?;
                    eprintln!("created token {} for user {} ({})", token.token.id, user.id, user.email);
                    println!("{}", token.secret);
                }
                TokenCommand::Revoke { id } => {
                    let token = accounts::revoke_token(&db, None, By::Operator, id).await?;
                    eprintln!("token {} of user {} revoked", token.id, token.user_id);
                }
                TokenCommand::List { email } => {
                    let user = accounts::by_email(&db, &email).await?;
                    println!("{:<8} {:<32} revoked", "id", "created");
                    for token in accounts::list_tokens(&db, By::Operator, user.id).await? {
                        let revoked = token.revoked_at.map_or_else(|| "-".to_owned(), |at| at.to_rfc3339());
                        println!("{:<8} {:<32} {revoked}", token.id, token.created_at.to_rfc3339());
                    }
                }
            }
            Ok(())
        }
    }
}

async fn open_migrated(settings: &Settings) -> anyhow::Result<Store> {
    let db = Store::open(&settings.database.url).await?;
    db.migrate().await?;
    Ok(db)
}

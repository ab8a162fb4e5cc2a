use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vsfleet_api::Application;
use vsfleet_api::accounts::{self, By};
use vsfleet_api::store::Store;

/// vsfleet api: the HTTP API of the virtual server control plane.
#[derive(Parser)]
#[command(version = vsfleet_contract::cli::VERSION)]
struct Cli {
    #[command(flatten)]
    config: vsfleet_contract::cli::ConfigArgs,
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
    /// Print the API's OpenAPI 3.1 document (what `GET /openapi.json` serves).
    Openapi,
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
        /// The user's email address: how they are named everywhere.
        #[arg(long)]
        email: String,
        /// An admin: sees and acts on every server, manages users and hosts.
        #[arg(long)]
        admin: bool,
    },
    /// Disable a user: every token of theirs is refused (401) within a second.
    Disable {
        /// The user's email address.
        #[arg(long)]
        email: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The user's email address.
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for a user and print it alone on stdout (shown once).
    Create {
        /// The user's email address.
        #[arg(long)]
        email: String,
    },
    /// Revoke a token by id: refused (401) within a second.
    Revoke {
        /// The token's id (`token list` shows it).
        id: i64,
    },
    /// List a user's tokens: id, created, revoked (never the secrets).
    List {
        /// The user's email address.
        #[arg(long)]
        email: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = cli.config.load_or_exit("vsfleet-api");
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
        Command::Openapi => {
            println!("{}", vsfleet_api::http::openapi().to_pretty_json()?);
            Ok(())
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
                    let mut after = 0;
                    loop {
                        let page = accounts::list_tokens(&db, By::Operator, user.id, after, 500).await?;
                        for token in &page {
                            let revoked = token.revoked_at.map_or_else(|| "-".to_owned(), |at| at.to_rfc3339());
                            println!("{:<8} {:<32} {revoked}", token.id, token.created_at.to_rfc3339());
                        }
                        match page.last() {
                            Some(last) => after = last.id,
                            None => break,
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

async fn open_migrated(settings: &vsfleet_contract::Settings) -> anyhow::Result<Store> {
    let db = Store::open(&settings.database.url).await?;
    db.migrate().await?;
    Ok(db)
}

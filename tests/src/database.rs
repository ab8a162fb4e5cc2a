//! The database a test's api uses: a SQLite file in the test's directory,
//! or, when `TEST_POSTGRES_URL` names a PostgreSQL server (the URL of a
//! database there that the test may connect to, as `scripts/postgres start`
//! prints), a database of the test's own on it, dropped at teardown.

use std::path::Path;
use std::sync::Once;

use sqlx::Connection as _;

pub const POSTGRES_ENV: &str = "TEST_POSTGRES_URL";

/// A test's database.
pub struct TestDatabase {
    pub url: String,
    /// The PostgreSQL server's URL and the database's name, to drop it.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn new(dir: &Path, unique: &str) -> Self {
        let Ok(server) = std::env::var(POSTGRES_ENV) else {
            return Self { url: format!("sqlite://{}", dir.join("vsfleet.db").display()), postgres: None };
        };
        let name = format!("vsfleet_test_{unique}");
        let mut conn = sqlx::PgConnection::connect(&server).await.expect("the test PostgreSQL server answers");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("{POSTGRES_ENV} must name a database: postgres://user@host:port/db"),
        };
        Self { url, postgres: Some((server, name)) }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// A pool on the database for the test's own reads, through sqlx's
    /// `Any` driver so one query serves both backends (placeholders `$n`).
    /// It connects at its first use, once the api made the database.
    pub fn pool(&self) -> sqlx::AnyPool {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        sqlx::pool::PoolOptions::new().max_connections(4).connect_lazy(&self.url).expect("a valid database URL")
    }

    /// Drops a PostgreSQL database (a SQLite file goes with the test's directory).
    pub async fn drop_database(&self) {
        if let Some((server, name)) = &self.postgres {
            let mut conn = sqlx::PgConnection::connect(server).await.expect("the test PostgreSQL server answers");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.ok();
        }
    }
}

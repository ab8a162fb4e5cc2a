//! Users and their API tokens, as rows. A token is shown once, at creation;
//! only its SHA-256 is stored. A revoked token, or any token of a disabled
//! user, authenticates nobody. The rules (who may change what) are in
//! [`crate::accounts`].

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{Sqlite, SqliteConnection};

use crate::db::Db;

/// The authenticated caller.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub is_admin: bool,
}

/// A user as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Account {
    pub id: i64,
    pub email: String,
    #[sqlx(rename = "is_admin")]
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A token as stored and as the API lists it: never its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Token {
    pub id: i64,
    pub user_id: i64,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just created, with the secret shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    #[serde(flatten)]
    pub token: Token,
    pub secret: String,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_secret() -> String {
    format!("vsf_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// An email as stored: trimmed; `None` when it does not look like one.
pub fn parse_email(email: &str) -> Option<&str> {
    let email = email.trim();
    let (local, domain) = email.split_once('@')?;
    (!local.is_empty() && !domain.is_empty() && email.len() <= 254 && !email.contains(char::is_whitespace))
        .then_some(email)
}

/// Inserts a user; a taken email is a unique violation.
pub async fn insert(conn: &mut SqliteConnection, email: &str, is_admin: bool) -> Result<Account, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO users (email, is_admin, created_at) VALUES (?, ?, ?)
         RETURNING id, email, is_admin, created_at, disabled_at",
    )
    .bind(email)
    .bind(is_admin)
    .bind(Utc::now())
    .fetch_one(conn)
    .await
}

/// Creates a token for `user_id`; returns it with its secret.
pub async fn insert_token(conn: &mut SqliteConnection, user_id: i64) -> Result<NewToken, sqlx::Error> {
    let secret = new_secret();
    let token = sqlx::query_as(
        "INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES (?, ?, ?)
         RETURNING id, user_id, created_at, revoked_at",
    )
    .bind(user_id)
    .bind(hash_token(&secret))
    .bind(Utc::now())
    .fetch_one(conn)
    .await?;
    Ok(NewToken { token, secret })
}

/// Creates a user with a first token and returns both (the command line's
/// and the tests' shortcut; the API goes through [`crate::accounts`]).
pub async fn create(db: &Db, email: &str, is_admin: bool) -> anyhow::Result<(User, String)> {
    let (account, token) = crate::accounts::create_user(db, crate::accounts::By::Operator, email, is_admin)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("creating user {email}"))?;
    Ok((User { id: account.id, email: account.email, is_admin: account.admin }, token.secret))
}

/// The user holding `token`, unless the token is revoked or the user disabled.
pub async fn by_token(db: &Db, token: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = ? AND t.revoked_at IS NULL AND u.disabled_at IS NULL",
    )
    .bind(hash_token(token))
    .fetch_optional(&db.read)
    .await
}

pub async fn get<'e, E>(db: E, id: i64) -> Result<Option<Account>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT id, email, is_admin, created_at, disabled_at FROM users WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn by_email<'e, E>(db: E, email: &str) -> Result<Option<Account>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT id, email, is_admin, created_at, disabled_at FROM users WHERE email = ?")
        .bind(email.trim())
        .fetch_optional(db)
        .await
}

pub async fn list<'e, E>(db: E) -> Result<Vec<Account>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT id, email, is_admin, created_at, disabled_at FROM users ORDER BY id").fetch_all(db).await
}

/// Sets or clears `disabled_at`; returns the row as it now is.
pub async fn set_disabled(conn: &mut SqliteConnection, id: i64, disabled: bool) -> Result<Account, sqlx::Error> {
    // Disabling twice keeps the first time.
    sqlx::query_as(
        "UPDATE users SET disabled_at = CASE WHEN ?2 THEN COALESCE(disabled_at, ?3) END WHERE id = ?1
         RETURNING id, email, is_admin, created_at, disabled_at",
    )
    .bind(id)
    .bind(disabled)
    .bind(Utc::now())
    .fetch_one(conn)
    .await
}

pub async fn token<'e, E>(db: E, id: i64) -> Result<Option<Token>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT id, user_id, created_at, revoked_at FROM api_tokens WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn tokens_of<'e, E>(db: E, user_id: i64) -> Result<Vec<Token>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query_as("SELECT id, user_id, created_at, revoked_at FROM api_tokens WHERE user_id = ? ORDER BY id")
        .bind(user_id)
        .fetch_all(db)
        .await
}

/// Revokes a token (revoking twice keeps the first time); returns it as it now is.
pub async fn revoke(conn: &mut SqliteConnection, id: i64) -> Result<Token, sqlx::Error> {
    sqlx::query_as(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1
         RETURNING id, user_id, created_at, revoked_at",
    )
    .bind(id)
    .bind(Utc::now())
    .fetch_one(conn)
    .await
}

/// Recently seen tokens, so a busy client does not cost a database read per
/// request. Only valid tokens are cached (by hash), for `TTL`: the most a
/// revoked token or a disabled user's token keeps working on a replica that
/// did not make the change itself (one that did forgets everything at once).
#[derive(Clone, Default)]
pub struct TokenCache {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (User, std::time::Instant)>>>,
}

impl TokenCache {
    /// Short enough that a revocation holds on every replica within a
    /// second; long enough that a client sending hundreds of requests a
    /// second costs a couple of reads a second.
    pub const TTL: std::time::Duration = std::time::Duration::from_millis(500);

    pub async fn user(&self, db: &Db, token: &str) -> Result<Option<User>, sqlx::Error> {
        let hash = hash_token(token);
        if let Some((user, at)) = self.seen.lock().expect("not poisoned").get(&hash)
            && at.elapsed() < Self::TTL
        {
            return Ok(Some(user.clone()));
        }
        let user = by_token(db, token).await?;
        let mut seen = self.seen.lock().expect("not poisoned");
        match &user {
            Some(user) => {
                // Bounded: forget everything rather than grow without limit.
                if seen.len() > 10_000 {
                    seen.clear();
                }
                seen.insert(hash, (user.clone(), std::time::Instant::now()));
            }
            None => {
                seen.remove(&hash);
            }
        }
        Ok(user)
    }

    /// Forgets every token: after a revocation or a user disabled here.
    pub fn clear(&self) {
        self.seen.lock().expect("not poisoned").clear();
    }
}

//! Users and their API tokens. A token is shown once, at creation; only its
//! SHA-256 is stored.

use anyhow::Context as _;
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::db::Db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub is_admin: bool,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    format!("vsf_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Creates a user with a first token and returns both.
pub async fn create(db: &Db, email: &str, is_admin: bool) -> anyhow::Result<(User, String)> {
    let email = email.trim();
    anyhow::ensure!(email.contains('@') && email.len() <= 254, "{email:?} is not an email address");
    let mut tx = db.write.begin().await?;
    let user: User = sqlx::query_as(
        "INSERT INTO users (email, is_admin, created_at) VALUES (?, ?, ?) RETURNING id, email, is_admin",
    )
    .bind(email)
    .bind(is_admin)
    .bind(Utc::now())
    .fetch_one(&mut *tx)
    .await
    .with_context(|| format!("creating user {email} (does it exist already?)"))?;
    let token = new_token();
    sqlx::query("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES (?, ?, ?)")
        .bind(user.id)
        .bind(hash_token(&token))
        .bind(Utc::now())
        .execute(&mut *tx)
        .await
        .context("storing token")?;
    tx.commit().await?;
    Ok((user, token))
}

pub async fn by_token(db: &Db, token: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
    )
    .bind(hash_token(token))
    .fetch_optional(&db.read)
    .await
}

/// Recently seen tokens, so a busy client does not cost a database read per
/// request. Only known tokens are cached (by hash), for `TTL`: the delay
/// before a removed token or a changed admin flag takes effect.
#[derive(Clone, Default)]
pub struct TokenCache {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (User, std::time::Instant)>>>,
}

impl TokenCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(30);

    pub async fn user(&self, db: &Db, token: &str) -> Result<Option<User>, sqlx::Error> {
        let hash = hash_token(token);
        if let Some((user, at)) = self.seen.lock().expect("not poisoned").get(&hash)
            && at.elapsed() < Self::TTL
        {
            return Ok(Some(user.clone()));
        }
        let user = by_token(db, token).await?;
        if let Some(user) = &user {
            let mut seen = self.seen.lock().expect("not poisoned");
            // Bounded: forget everything rather than grow without limit.
            if seen.len() > 10_000 {
                seen.clear();
            }
            seen.insert(hash, (user.clone(), std::time::Instant::now()));
        }
        Ok(user)
    }
}

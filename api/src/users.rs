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

//! Users and their API tokens, as rows. A token is shown once, at creation;
//! only its SHA-256 is stored. A revoked token, or any token of a disabled
//! user, authenticates nobody. The rules (who may change what) are in
//! [`crate::accounts`].

use crate::store::{Store, StoreError};
use sha2::{Digest, Sha256};

pub use crate::store::{Account, Token, User};

/// A token just created, with the secret shown this once.
#[derive(Debug, Clone)]
pub struct NewToken {
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

/// A new token's secret and the hash that is stored.
pub fn new_token() -> (String, String) {
    let secret = new_secret();
    let hash = hash_token(&secret);
    (secret, hash)
}

/// The user holding `token`, unless the token is revoked or the user disabled.
pub async fn by_token(db: &Store, token: &str) -> Result<Option<User>, StoreError> {
    db.user_by_token_hash(&hash_token(token)).await
}

/// Recently seen tokens, so a busy client does not cost a database read per
/// request. Only valid tokens are cached (by hash), for `TTL`: the most a
/// revoked token or a disabled user's token keeps working on a replica that
/// did not make the change itself (one that did forgets everything at once).
/// At most `CAPACITY` tokens; past it the least used go first.
#[derive(Clone)]
pub struct TokenCache {
    seen: moka::sync::Cache<String, User>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self { seen: moka::sync::Cache::builder().max_capacity(Self::CAPACITY).time_to_live(Self::TTL).build() }
    }
}

impl TokenCache {
    /// Short enough that a revocation holds on every replica within a
    /// second; long enough that a client sending hundreds of requests a
    /// second costs a couple of reads a second.
    pub const TTL: std::time::Duration = std::time::Duration::from_millis(500);
    pub const CAPACITY: u64 = 10_000;

    pub async fn user(&self, db: &Store, token: &str) -> Result<Option<User>, StoreError> {
        let hash = hash_token(token);
        if let Some(user) = self.seen.get(&hash) {
            return Ok(Some(user));
        }
        let user = by_token(db, token).await?;
        match &user {
            Some(user) => self.seen.insert(hash, user.clone()),
            None => self.seen.invalidate(&hash),
        }
        Ok(user)
    }

    /// Forgets every token: after a revocation or a user disabled here.
    pub fn clear(&self) {
        self.seen.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored hashes must not change with the sha2/hex versions: the
    /// lower-case hex of SHA-256, as `sha256sum` prints it.
    #[test]
    fn token_hash_is_lowercase_hex_sha256() {
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            hash_token("vsf_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            "72a4465c0bbc7ab780f3b6c270d7b59ab7908231edc9e90ad08da54d7e3b4941"
        );
    }

    #[test]
    fn new_token_is_vsf_and_64_hex_and_hashed() {
        let (secret, hash) = new_token();
        let hex = secret.strip_prefix("vsf_").expect("vsf_ prefix");
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(hash, hash_token(&secret));
        assert_ne!(new_token().0, secret);
    }
}

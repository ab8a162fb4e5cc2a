//! The rules of users and tokens: who may create, list, revoke, disable
//! what. Each change is written with its activity entry in one
//! transaction. Used by the HTTP API (a user) and the command line (the
//! operator, who may do everything).
//!
//! Someone else's account or token answers 404, as someone else's server
//! does; an admin-only call made by a user too.

use crate::activity::{self, Entry};
use crate::db::{Db, begin_write};
use crate::error::ApiError;
use crate::users::{self, Account, NewToken, Token, TokenCache, User};

/// Who makes a change.
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    /// Through the API: may act on their own tokens; an admin on everything.
    User(&'a User),
    /// The command line on the database's host: may do everything.
    Operator,
}

impl By<'_> {
    fn actor(self) -> String {
        match self {
            By::User(user) => user.email.clone(),
            By::Operator => "operator".to_owned(),
        }
    }

    fn is_admin(self) -> bool {
        match self {
            By::User(user) => user.is_admin,
            By::Operator => true,
        }
    }

    /// May act on what belongs to `user_id`.
    fn may_touch(self, user_id: i64) -> bool {
        match self {
            By::User(user) => user.is_admin || user.id == user_id,
            By::Operator => true,
        }
    }

    fn require_admin(self) -> Result<(), ApiError> {
        if self.is_admin() { Ok(()) } else { Err(ApiError::NotFound("route")) }
    }
}

/// Creates a user with a first token.
pub async fn create_user(db: &Db, by: By<'_>, email: &str, admin: bool) -> Result<(Account, NewToken), ApiError> {
    by.require_admin()?;
    let email = users::parse_email(email).ok_or_else(|| {
        ApiError::invalid_field("invalid_body", "email", format!("{email:?} is not an email address"))
    })?;
    let mut tx = begin_write(db).await?;
    let account = match users::insert(&mut tx, email, admin).await {
        Ok(account) => account,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::Conflict { code: "email_taken", message: format!("a user {email} exists already") });
        }
        Err(e) => return Err(e.into()),
    };
    let token = users::insert_token(&mut tx, account.id).await?;
    let target = format!("user:{}", account.id);
    let detail = format!("{email}{}, first token {}", if admin { " (admin)" } else { "" }, token.token.id);
    activity::record_sqlx(
        &mut *tx,
        &Entry::new(Some(account.id), by.actor(), "user.create", target, "succeeded").with_detail(detail),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user_id = account.id, email, admin, "user created");
    Ok((account, token))
}

pub async fn list_users(db: &Db, by: By<'_>) -> Result<Vec<Account>, ApiError> {
    by.require_admin()?;
    Ok(users::list(&db.read).await?)
}

/// The user `id`, if `by` may act on them.
async fn visible_user(db: &Db, by: By<'_>, id: i64) -> Result<Account, ApiError> {
    match users::get(&db.read, id).await? {
        Some(account) if by.may_touch(account.id) => Ok(account),
        _ => Err(ApiError::NotFound("user")),
    }
}

/// A user by email, for the command line.
pub async fn by_email(db: &Db, email: &str) -> Result<Account, ApiError> {
    users::by_email(&db.read, email).await?.ok_or(ApiError::NotFound("user"))
}

pub async fn create_token(db: &Db, by: By<'_>, user_id: i64) -> Result<NewToken, ApiError> {
    let account = visible_user(db, by, user_id).await?;
    let mut tx = begin_write(db).await?;
    let token = users::insert_token(&mut tx, account.id).await?;
    let target = format!("token:{}", token.token.id);
    activity::record_sqlx(
        &mut *tx,
        &Entry::new(Some(account.id), by.actor(), "token.create", target, "succeeded").with_detail(account.email),
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

pub async fn list_tokens(db: &Db, by: By<'_>, user_id: i64) -> Result<Vec<Token>, ApiError> {
    let account = visible_user(db, by, user_id).await?;
    Ok(users::tokens_of(&db.read, account.id).await?)
}

/// Revokes a token: it answers 401 at once on this replica (`cache`), and
/// within [`TokenCache::TTL`] on the others.
pub async fn revoke_token(db: &Db, cache: Option<&TokenCache>, by: By<'_>, id: i64) -> Result<Token, ApiError> {
    let mut tx = begin_write(db).await?;
    let token = match users::token(&mut *tx, id).await? {
        Some(token) if by.may_touch(token.user_id) => token,
        _ => return Err(ApiError::NotFound("token")),
    };
    let token = users::revoke(&mut tx, token.id).await?;
    let entry = Entry::new(Some(token.user_id), by.actor(), "token.revoke", format!("token:{id}"), "succeeded");
    activity::record_sqlx(&mut *tx, &entry).await?;
    tx.commit().await?;
    if let Some(cache) = cache {
        cache.clear();
    }
    tracing::info!(token_id = id, user_id = token.user_id, "token revoked");
    Ok(token)
}

/// Disables (or enables again) a user: every token of theirs answers 401
/// while disabled. An admin cannot disable themself (nobody might be left
/// to enable them); the operator can disable anyone.
pub async fn set_disabled(
    db: &Db,
    cache: Option<&TokenCache>,
    by: By<'_>,
    user_id: i64,
    disabled: bool,
) -> Result<Account, ApiError> {
    by.require_admin()?;
    if let By::User(me) = by
        && me.id == user_id
        && disabled
    {
        return Err(ApiError::Conflict {
            code: "cannot_disable_self",
            message: "an admin cannot disable themself".into(),
        });
    }
    let mut tx = begin_write(db).await?;
    if users::get(&mut *tx, user_id).await?.is_none() {
        return Err(ApiError::NotFound("user"));
    }
    let account = users::set_disabled(&mut tx, user_id, disabled).await?;
    let action = if disabled { "user.disable" } else { "user.enable" };
    let entry = Entry::new(Some(user_id), by.actor(), action, format!("user:{user_id}"), "succeeded")
        .with_detail(&account.email);
    activity::record_sqlx(&mut *tx, &entry).await?;
    tx.commit().await?;
    if let Some(cache) = cache {
        cache.clear();
    }
    tracing::info!(user_id, disabled, "user {}", if disabled { "disabled" } else { "enabled" });
    Ok(account)
}

/// A page of the activity log: every entry for an admin, a user's own otherwise.
pub async fn activity(db: &Db, user: &User, before: Option<i64>, limit: u32) -> Result<activity::Page, ApiError> {
    let owner = (!user.is_admin).then_some(user.id);
    let mut page = activity::page(&db.read, owner, before, limit).await?;
    if !user.is_admin {
        for entry in &mut page.entries {
            crate::redact::optional(&mut entry.detail);
            if let std::borrow::Cow::Owned(clean) = crate::redact::paths(&entry.result) {
                entry.result = clean;
            }
        }
    }
    Ok(page)
}

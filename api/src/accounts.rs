//! The rules of users and tokens: who may create, list, revoke, disable
//! what. Each change is written with its activity entry in one
//! transaction. Used by the HTTP API (a user) and the command line (the
//! operator, who may do everything).
//!
//! Someone else's account or token answers 404, as someone else's server
//! does; an admin-only call made by a user too.

use anyhow::Context as _;

use crate::activity::{self, Entry};
use crate::error::ApiError;
use crate::store::{Store, transaction};
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

/// Creates a user with a first token and returns both: the tests' shortcut
/// (the API and the command line call [`create_user`]).
pub async fn create(db: &Store, email: &str, is_admin: bool) -> anyhow::Result<(User, String)> {
    let (account, token) = create_user(db, By::Operator, email, is_admin)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("creating user {email}"))?;
    Ok((User { id: account.id, email: account.email, is_admin: account.admin }, token.secret))
}

/// Creates a user with a first token.
pub async fn create_user(db: &Store, by: By<'_>, email: &str, admin: bool) -> Result<(Account, NewToken), ApiError> {
    by.require_admin()?;
    let email = users::parse_email(email).ok_or_else(|| {
        ApiError::invalid_field("invalid_body", "email", format!("{email:?} is not an email address"))
    })?;
    let now = crate::store::now();
    let (secret, hash) = users::new_token();
    let (account, token) = transaction!(db, |q, conn| {
        let account = match q::insert_account(&mut *conn, email, admin, now).await {
            Ok(account) => account,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ApiError::Conflict {
                    code: "email_taken",
                    message: format!("a user {email} exists already"),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let token = q::insert_token(&mut *conn, account.id, &hash, now).await?;
        let target = format!("user:{}", account.id);
        let detail = format!("{email}{}, first token {}", if admin { " (admin)" } else { "" }, token.id);
        let entry = Entry::new(Some(account.id), by.actor(), "user.create", target, "succeeded").with_detail(detail);
        q::record_activity(&mut *conn, &entry, now).await?;
        Ok::<_, ApiError>((account, token))
    })?;
    let token = NewToken { token, secret };
    tracing::info!(user_id = account.id, email, admin, "user created");
    Ok((account, token))
}

pub async fn list_users(db: &Store, by: By<'_>, after: i64, limit: i64) -> Result<Vec<Account>, ApiError> {
    by.require_admin()?;
    Ok(db.accounts(after, limit).await?)
}

/// The user `id`, if `by` may act on them.
async fn visible_user(db: &Store, by: By<'_>, id: i64) -> Result<Account, ApiError> {
    match db.account(id).await? {
        Some(account) if by.may_touch(account.id) => Ok(account),
        _ => Err(ApiError::NotFound("user")),
    }
}

/// A user by email, for the command line.
pub async fn by_email(db: &Store, email: &str) -> Result<Account, ApiError> {
    db.account_by_email(email.trim()).await?.ok_or(ApiError::NotFound("user"))
}

pub async fn create_token(db: &Store, by: By<'_>, user_id: i64) -> Result<NewToken, ApiError> {
    let account = visible_user(db, by, user_id).await?;
    let now = crate::store::now();
    let (secret, hash) = users::new_token();
    let token = transaction!(db, |q, conn| {
        let token = q::insert_token(&mut *conn, account.id, &hash, now).await?;
        let target = format!("token:{}", token.id);
        let entry =
            Entry::new(Some(account.id), by.actor(), "token.create", target, "succeeded").with_detail(&account.email);
        q::record_activity(&mut *conn, &entry, now).await?;
        Ok::<_, ApiError>(token)
    })?;
    Ok(NewToken { token, secret })
}

pub async fn list_tokens(db: &Store, by: By<'_>, user_id: i64, after: i64, limit: i64) -> Result<Vec<Token>, ApiError> {
    let account = visible_user(db, by, user_id).await?;
    Ok(db.tokens_of(account.id, after, limit).await?)
}

/// Revokes a token: it answers 401 at once on this replica (`cache`), and
/// within [`TokenCache::TTL`] on the others.
pub async fn revoke_token(db: &Store, cache: Option<&TokenCache>, by: By<'_>, id: i64) -> Result<Token, ApiError> {
    let now = crate::store::now();
    let token = transaction!(db, |q, conn| {
        let token = match q::token(&mut *conn, id).await? {
            Some(token) if by.may_touch(token.user_id) => token,
            _ => return Err(ApiError::NotFound("token")),
        };
        let token = q::revoke_token(&mut *conn, token.id, now).await?;
        let entry = Entry::new(Some(token.user_id), by.actor(), "token.revoke", format!("token:{id}"), "succeeded");
        q::record_activity(&mut *conn, &entry, now).await?;
        Ok::<_, ApiError>(token)
    })?;
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
    db: &Store,
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
    let now = crate::store::now();
    let account = transaction!(db, |q, conn| {
        if q::account(&mut *conn, user_id).await?.is_none() {
            return Err(ApiError::NotFound("user"));
        }
        let account = q::set_disabled(&mut *conn, user_id, disabled, now).await?;
        let action = if disabled { "user.disable" } else { "user.enable" };
        let entry = Entry::new(Some(user_id), by.actor(), action, format!("user:{user_id}"), "succeeded")
            .with_detail(&account.email);
        q::record_activity(&mut *conn, &entry, now).await?;
        Ok::<_, ApiError>(account)
    })?;
    if let Some(cache) = cache {
        cache.clear();
    }
    tracing::info!(user_id, disabled, "user {}", if disabled { "disabled" } else { "enabled" });
    Ok(account)
}

/// A page of the activity log: every entry for an admin, a user's own otherwise.
pub async fn activity(db: &Store, user: &User, before: Option<i64>, limit: u32) -> Result<activity::Page, ApiError> {
    let owner = (!user.is_admin).then_some(user.id);
    let mut page = activity::page(db, owner, before, limit).await?;
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

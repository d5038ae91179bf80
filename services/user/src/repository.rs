//! The user service's SQL, checked at compile time against `migrations/user`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::UserError;

/// A user as stored, without the password hash (which is never read back).
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub(crate) user_id: Uuid,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) created_at: DateTime<Utc>,
}

/// Inserts a user; a taken email (case-insensitively) is [`UserError::EmailTaken`].
pub(crate) async fn insert_user(
    conn: &mut PgConnection,
    user: &UserRow,
    password_hash: &str,
) -> Result<(), UserError> {
    sqlx::query!(
        "INSERT INTO users (user_id, email, name, password_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
        user.user_id,
        user.email,
        user.name,
        password_hash,
        user.created_at,
    )
    .execute(conn)
    .await
    .map_err(email_taken_or_unexpected)?;
    Ok(())
}

/// One user by id.
pub(crate) async fn find_user(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        "SELECT user_id, email, name, created_at FROM users WHERE user_id = $1",
        user_id
    )
    .fetch_optional(conn)
    .await
}

/// One user by id, locked until the transaction ends (so concurrent updates serialise).
pub(crate) async fn lock_user(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        "SELECT user_id, email, name, created_at FROM users WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_optional(conn)
    .await
}

/// Writes a user's email and name.
pub(crate) async fn update_user(
    conn: &mut PgConnection,
    user: &UserRow,
    now: DateTime<Utc>,
) -> Result<(), UserError> {
    sqlx::query!(
        "UPDATE users SET email = $2, name = $3, updated_at = $4 WHERE user_id = $1",
        user.user_id,
        user.email,
        user.name,
        now,
    )
    .execute(conn)
    .await
    .map_err(email_taken_or_unexpected)?;
    Ok(())
}

fn email_taken_or_unexpected(e: sqlx::Error) -> UserError {
    let unique_email = e
        .as_database_error()
        .and_then(|d| d.constraint())
        .is_some_and(|c| c == "users_email_lower_key");
    if unique_email {
        UserError::EmailTaken
    } else {
        e.into()
    }
}

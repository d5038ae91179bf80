//! The user service's SQL, checked at compile time against `migrations/user`.

use chrono::{DateTime, Utc};
use shop_shared::ids::UserId;
use sqlx::PgConnection;

use shop_shared::auth::Role;

use crate::UserError;
use crate::domain::{Email, SignUpProfile, UserName};

/// A user as stored, without the password hash (which is never read back).
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub(crate) user_id: UserId,
    pub(crate) email: Email,
    pub(crate) name: UserName,
    pub(crate) created_at: DateTime<Utc>,
}

/// Inserts a user with `role` and what the sign-up said besides (`profile`); a taken email (case-insensitively) is
/// [`UserError::EmailTaken`].
pub(crate) async fn insert_user(
    conn: &mut PgConnection,
    user: &UserRow,
    profile: &SignUpProfile,
    password_hash: &str,
    role: Role,
) -> Result<(), UserError> {
    let metadata = serde_json::to_value(profile.metadata.entries())
        .map_err(|e| UserError::from(anyhow::Error::from(e)))?;
    sqlx::query!(
        "INSERT INTO users (user_id, email, name, password_hash, created_at, updated_at, role, \
                            given_name, family_name, metadata) \
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)",
        user.user_id.as_uuid(),
        user.email.as_str(),
        user.name.as_str(),
        password_hash,
        user.created_at,
        role.as_str(),
        profile.given_name,
        profile.family_name,
        metadata,
    )
    .execute(conn)
    .await
    .map_err(email_taken_or_unexpected)?;
    Ok(())
}

/// One user by id.
pub(crate) async fn find_user(
    conn: &mut PgConnection,
    user_id: UserId,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT user_id AS "user_id: UserId", email AS "email: Email",
                  name AS "name: UserName", created_at
           FROM users WHERE user_id = $1"#,
        user_id.as_uuid()
    )
    .fetch_optional(conn)
    .await
}

/// One user by id, locked until the transaction ends (so concurrent updates serialise).
pub(crate) async fn lock_user(
    conn: &mut PgConnection,
    user_id: UserId,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT user_id AS "user_id: UserId", email AS "email: Email",
                  name AS "name: UserName", created_at
           FROM users WHERE user_id = $1 FOR UPDATE"#,
        user_id.as_uuid()
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
        user.user_id.as_uuid(),
        user.email.as_str(),
        user.name.as_str(),
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

/// What Login checks a password against.
#[derive(Debug)]
pub(crate) struct StoredCredentials {
    pub(crate) user: UserRow,
    pub(crate) password_hash: String,
    pub(crate) role: Role,
}

/// The account with `email` (case-insensitively), with its hash and role.
pub(crate) async fn find_credentials(
    conn: &mut PgConnection,
    email: &Email,
) -> Result<Option<StoredCredentials>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT user_id AS "user_id: UserId", email AS "email: Email",
                  name AS "name: UserName", created_at, password_hash, role
           FROM users WHERE lower(email) = lower($1)"#,
        email.as_str()
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| StoredCredentials {
        user: UserRow {
            user_id: r.user_id,
            email: r.email,
            name: r.name,
            created_at: r.created_at,
        },
        password_hash: r.password_hash,
        // The CHECK constraint allows only the two roles.
        role: Role::parse(&r.role).unwrap_or(Role::Customer),
    }))
}

/// Serialises the staff-account set-up of replicas starting together (until the
/// transaction ends), so only one of them creates the account.
pub(crate) async fn lock_staff_setup(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('shop staff account', 0))")
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes an existing account staff with a new password hash.
pub(crate) async fn make_staff(
    conn: &mut PgConnection,
    user_id: UserId,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE users SET role = 'staff', password_hash = $2, updated_at = $3 WHERE user_id = $1",
        user_id.as_uuid(),
        password_hash,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The outcome of asking to try a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Go ahead: the attempt is recorded as a failure until a success clears it.
    Allowed,
    /// Too many failures within the window; the oldest counted one leaves it in this many
    /// seconds.
    Throttled { retry_after_secs: u64 },
}

/// Counts `email`'s failures within `window` and, if fewer than `max`, records this attempt
/// as one (before the password is checked, so that parallel guesses count too). The advisory
/// lock per email makes the count and the insert one step. The key is `lower(email)`: the
/// same fold as the account lookup ([`find_credentials`]) and the unique index.
pub(crate) async fn reserve_login_attempt(
    pool: &sqlx::PgPool,
    email: &Email,
    window: std::time::Duration,
    max: u32,
) -> Result<Attempt, sqlx::Error> {
    let window_secs = window.as_secs_f64();
    let email = email.as_str();
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended(lower($1), 0))",
        email
    )
    .execute(&mut *tx)
    .await?;
    let recent = sqlx::query!(
        r#"SELECT count(*) AS "count!",
                  extract(epoch FROM min(failed_at) + make_interval(secs => $2) - now())::float8
                      AS retry_after
           FROM login_failures
           WHERE email_key = lower($1) AND failed_at > now() - make_interval(secs => $2)"#,
        email,
        window_secs,
    )
    .fetch_one(&mut *tx)
    .await?;
    let attempt = if recent.count >= i64::from(max) {
        let retry_after_secs = recent.retry_after.unwrap_or(0.0).ceil().max(1.0) as u64;
        Attempt::Throttled { retry_after_secs }
    } else {
        sqlx::query!(
            "INSERT INTO login_failures (email_key) VALUES (lower($1))",
            email
        )
        .execute(&mut *tx)
        .await?;
        Attempt::Allowed
    };
    tx.commit().await?;
    Ok(attempt)
}

/// A successful login forgets the email's failures (and the attempt just recorded).
pub(crate) async fn clear_login_failures(
    pool: &sqlx::PgPool,
    email: &Email,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM login_failures WHERE email_key = lower($1)",
        email.as_str()
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets at most `chunk` failed logins, of any email, that left the throttling window: the
/// table holds at most a window's worth of failures (docs/contract.md, "Bounds").
pub(crate) async fn purge_login_failures(
    pool: &sqlx::PgPool,
    window: std::time::Duration,
    chunk: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM login_failures WHERE id IN ( \
             SELECT id FROM login_failures \
             WHERE failed_at <= now() - make_interval(secs => $1) LIMIT $2)",
        window.as_secs_f64(),
        chunk,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

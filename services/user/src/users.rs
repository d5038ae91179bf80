//! The user service's use cases, one function per RPC: authorize, validate, write, stage —
//! in that order, with no gRPC in sight (`grpc.rs` only converts). Also the staff account
//! of `SHOP_ADMIN_EMAIL` made sure of at start.

use std::sync::Arc;

use secrecy::ExposeSecret as _;
use shop_shared::auth::{Caller, Claims, Role};
use shop_shared::ids::UserId;
use shop_shared::messaging::{Envelope, EventContext, OutboxWaker, Retired, outbox};
use shop_shared::time::now;
use sqlx::PgPool;

use crate::UserError;
use crate::config::{AdminAccount, PasswordHashing, UserAuthConfig};
use crate::domain::{
    Credentials, Email, NewUser, Password, SignUpProfile, UserName, UserPatch, password,
};
use crate::events::{user_created, user_updated};
use crate::keys::CurrentKey;
use crate::password_checks::PasswordChecks;
use crate::repository::{self, Attempt, UserRow};

/// What the use cases work with.
#[derive(Debug, Clone)]
pub(crate) struct Users {
    pub(crate) pool: PgPool,
    /// Wakes this process's outbox relay after a commit that staged events.
    pub(crate) waker: OutboxWaker,
    pub(crate) hashing: PasswordHashing,
    /// The bound every CreateUser and Login passes before it hashes or writes anything.
    pub(crate) password_checks: PasswordChecks,
    pub(crate) auth: UserAuthConfig,
    pub(crate) key: CurrentKey,
    /// Verified against when the email is unknown (see [`password::dummy_hash`]).
    pub(crate) dummy_hash: Arc<str>,
    /// Event shapes no longer published (`RETIRED_ROUTING_KEYS`).
    pub(crate) retired: Retired,
}

/// A successful login.
#[derive(Debug)]
pub(crate) struct LoggedIn {
    pub(crate) access_token: String,
    pub(crate) expires_in_seconds: i64,
    pub(crate) user: UserRow,
}

/// Runs a CPU-bound closure off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, UserError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UserError::from(anyhow::Error::from(e)))
}

impl Users {
    /// CreateUser: anyone may register; the account is a customer.
    pub(crate) async fn register(
        &self,
        new: NewUser,
        context: &EventContext,
    ) -> Result<UserRow, UserError> {
        let admission = self.password_checks.admit()?;
        let cost = self.hashing;
        let (new, hash) = admission
            .run(move || {
                let hash = new.password.hash(cost);
                (new, hash)
            })
            .await?;
        drop(admission);
        let hash = hash.map_err(UserError::from)?;
        let user = UserRow {
            user_id: UserId::new(),
            email: new.email.clone(),
            name: new.name.clone(),
            created_at: now(),
        };
        let mut tx = self.pool.begin().await?;
        repository::insert_user(&mut tx, &user, &new.profile, &hash, Role::Customer).await?;
        // Same transaction: the user exists if and only if user.created (in each of its
        // shapes, one message id) will be published.
        let staged = user_created(&user, &new.profile, context).to_publish(&self.retired);
        outbox::stage_envelopes(&mut tx, &staged).await?;
        tx.commit().await?;
        // Committed: the relay publishes them at once (the fast path).
        self.waker.committed(staged);
        tracing::info!(user_id = %user.user_id, "user created");
        Ok(user)
    }

    /// Login: throttled per email, the same answer (and about the same time) for an unknown
    /// email as for a wrong password, then a token signed by the current key.
    pub(crate) async fn login(&self, credentials: Credentials) -> Result<LoggedIn, UserError> {
        // Before the attempt is recorded: a call turned away writes nothing.
        let admission = self.password_checks.admit()?;
        let attempt = repository::reserve_login_attempt(
            &self.pool,
            &credentials.email,
            self.auth.login_window,
            self.auth.login_max_failures,
        )
        .await?;
        if let Attempt::Throttled { retry_after_secs } = attempt {
            return Err(UserError::TooManyFailedLogins { retry_after_secs });
        }
        let mut conn = self.pool.acquire().await?;
        let stored = repository::find_credentials(&mut conn, &credentials.email).await?;
        drop(conn);
        let (stored, hash) = match stored {
            Some(stored) => {
                let hash = stored.password_hash.clone();
                (Some(stored), hash)
            }
            None => (None, self.dummy_hash.to_string()),
        };
        let candidate = credentials.password;
        let matches = admission
            .run(move || password::verify(&candidate, &hash))
            .await?;
        drop(admission);
        let Some(stored) = stored.filter(|_| matches) else {
            tracing::info!("login failed");
            return Err(UserError::WrongCredentials);
        };
        repository::clear_login_failures(&self.pool, &credentials.email).await?;
        let key = self.key.get(&self.pool).await?;
        let ttl = self.auth.token_ttl.as_secs() as i64;
        let claims = Claims::new(
            stored.user.user_id,
            stored.role,
            chrono::Utc::now().timestamp(),
            ttl,
        );
        let access_token = key.sign(&claims)?;
        tracing::info!(user_id = %stored.user.user_id, kid = key.kid(), "logged in");
        Ok(LoggedIn {
            access_token,
            expires_in_seconds: ttl,
            user: stored.user,
        })
    }

    /// GetUser: the user themself, or staff.
    pub(crate) async fn get(&self, caller: &Caller, user_id: UserId) -> Result<UserRow, UserError> {
        if !caller.may_act_for(user_id) {
            return Err(UserError::PermissionDenied);
        }
        let mut conn = self.pool.acquire().await?;
        repository::find_user(&mut conn, user_id)
            .await?
            .ok_or(UserError::NotFound)
    }

    /// UpdateUser: the user themself, or staff; publishes `user.updated` when a field changed.
    pub(crate) async fn update(
        &self,
        caller: &Caller,
        patch: UserPatch,
        context: &EventContext,
    ) -> Result<UserRow, UserError> {
        if !caller.may_act_for(patch.user_id) {
            return Err(UserError::PermissionDenied);
        }
        let mut tx = self.pool.begin().await?;
        let mut user = repository::lock_user(&mut tx, patch.user_id)
            .await?
            .ok_or(UserError::NotFound)?;
        let email_changed = patch.email.as_ref().is_some_and(|e| *e != user.email);
        let name_changed = patch.name.as_ref().is_some_and(|n| *n != user.name);
        if let Some(email) = patch.email.filter(|_| email_changed) {
            user.email = email;
        }
        if let Some(name) = patch.name.filter(|_| name_changed) {
            user.name = name;
        }
        let mut staged = Vec::new();
        if email_changed || name_changed {
            let now = now();
            repository::update_user(&mut tx, &user, now).await?;
            let event = user_updated(&user, email_changed, name_changed, now);
            staged.push(Envelope::new(&event, "", context));
            outbox::stage_envelopes(&mut tx, &staged).await?;
        }
        tx.commit().await?;
        self.waker.committed(staged);
        Ok(user)
    }

    /// Makes sure the staff account exists, is staff and has the configured password. A new
    /// account is announced with `user.created` like any other (it has no actor).
    pub(crate) async fn ensure_staff(&self, admin: &AdminAccount) -> anyhow::Result<()> {
        let email = Email::parse(&admin.email)
            .map_err(|e| anyhow::anyhow!("SHOP_ADMIN_EMAIL is not usable: {e}"))?;
        let password = Password::parse(admin.password.expose_secret().to_owned())
            .map_err(|e| anyhow::anyhow!("SHOP_ADMIN_PASSWORD is not usable: {e}"))?;
        let mut tx = self.pool.begin().await?;
        repository::lock_staff_setup(&mut tx).await?;
        let existing = repository::find_credentials(&mut tx, &email).await?;
        let cost = self.hashing;
        match existing {
            Some(stored) => {
                let hash = stored.password_hash.clone();
                let (password, same) = blocking(move || {
                    let same = password::verify(admin_secret(&password), &hash);
                    (password, same)
                })
                .await?;
                if same && stored.role == Role::Staff {
                    tracing::info!(user_id = %stored.user.user_id, "staff account is ready");
                    return Ok(());
                }
                let hash = blocking(move || password.hash(cost)).await??;
                repository::make_staff(&mut tx, stored.user.user_id, &hash, now()).await?;
                tx.commit().await?;
                tracing::info!(user_id = %stored.user.user_id, "staff account updated (role and password)");
            }
            None => {
                let hash = blocking(move || password.hash(cost)).await??;
                let user = UserRow {
                    user_id: UserId::new(),
                    email,
                    name: UserName::parse("shop staff")?,
                    created_at: now(),
                };
                let profile = SignUpProfile::default();
                repository::insert_user(&mut tx, &user, &profile, &hash, Role::Staff).await?;
                let staged = user_created(&user, &profile, &EventContext::new_flow())
                    .to_publish(&self.retired);
                outbox::stage_envelopes(&mut tx, &staged).await?;
                tx.commit().await?;
                self.waker.committed(staged);
                tracing::info!(user_id = %user.user_id, "staff account created");
            }
        }
        Ok(())
    }
}

/// The text of a validated password, for verifying it.
fn admin_secret(password: &Password) -> &str {
    password.expose()
}

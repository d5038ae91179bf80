//! `shop keys`: the user service's token signing keys, for operators.
//!
//! - `shop keys list` shows every stored key: which one signs, which are retired and until
//!   when they stay published.
//! - `shop keys rotate` adds a key that signs from now on (running user services pick it up
//!   on their next Login), keeps the old public keys in the JWK Set until their last token
//!   has expired (`AUTH_TOKEN_TTL_S` after the rotation, plus a minute for clock skew), and
//!   deletes the keys whose tokens have all expired.
//! - `shop keys revoke <kid>` removes a key at once (a leaked one): every verifier stops
//!   accepting its tokens, cached ones included, at its next refresh of the JWK Set
//!   (`AUTH_JWKS_REFRESH_S`); if it was the signing key, a new one signs from now on.
//!
//! All read `USER_DATABASE_URL` (and `AUTH_TOKEN_TTL_S`) like the user service.

use anyhow::Context as _;
use shop_user::keys;

/// `shop keys …`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// List the signing keys (newest first).
    List,
    /// Add a signing key that signs from now on; retire the others.
    Rotate,
    /// Remove a key at once: its tokens stop verifying at every verifier's next refresh.
    Revoke {
        /// The key's id (see `shop keys list`).
        kid: String,
    },
}

/// Runs `shop keys …`.
pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let config = shop_user::Config::from_env()?;
    let url = &config.service.database_url;
    let pool = shop_shared::db::connect(url, 2).await.with_context(|| {
        format!(
            "cannot reach the user database at {} (set USER_DATABASE_URL)",
            shop_shared::diagnose::redact(url)
        )
    })?;
    let ttl = config.auth.token_ttl;
    match args.command {
        KeysCommand::List => {
            let keys = keys::list(&pool)
                .await
                .context("cannot read the signing keys (has the user service started once?)")?;
            if keys.is_empty() {
                println!("no signing keys yet: the user service makes one at its first start");
            }
            let mut signing = true;
            for key in keys {
                let state = match key.retired_at {
                    None if signing => {
                        signing = false;
                        "signing".to_owned()
                    }
                    None => "not signing (an older unretired key)".to_owned(),
                    Some(at) => {
                        let until = at
                            + chrono::Duration::from_std(ttl + keys::CLOCK_SKEW)
                                .unwrap_or_default();
                        if until > chrono::Utc::now() {
                            format!(
                                "retired {}, published until {}",
                                at.to_rfc3339(),
                                until.to_rfc3339()
                            )
                        } else {
                            format!(
                                "retired {}, expired (dropped at the next rotation)",
                                at.to_rfc3339()
                            )
                        }
                    }
                };
                println!(
                    "{}  created {}  {state}",
                    key.kid,
                    key.created_at.to_rfc3339()
                );
            }
        }
        KeysCommand::Rotate => {
            let rotation = keys::rotate(&pool, ttl)
                .await
                .context("failed to rotate the signing keys")?;
            println!("new signing key: {}", rotation.new_kid);
            for kid in &rotation.retired {
                println!(
                    "retired: {kid} (still published for {} s, until its last token expires)",
                    (ttl + keys::CLOCK_SKEW).as_secs()
                );
            }
            for kid in &rotation.dropped {
                println!("dropped: {kid} (its tokens have all expired)");
            }
        }
        KeysCommand::Revoke { kid } => {
            let revocation = keys::revoke(&pool, kid.trim())
                .await
                .context("failed to revoke the key")?;
            let Some(revocation) = revocation else {
                pool.close().await;
                anyhow::bail!(
                    "no signing key has kid {} (see `shop keys list`)",
                    shop_shared::input::shown(kid.trim())
                );
            };
            println!(
                "revoked: {} (every verifier stops accepting its tokens within AUTH_JWKS_REFRESH_S)",
                revocation.revoked
            );
            if let Some(new_kid) = revocation.new_kid {
                println!("new signing key: {new_kid} (the revoked key was the one signing)");
            }
        }
    }
    pool.close().await;
    Ok(())
}

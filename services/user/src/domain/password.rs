//! Passwords: at least 8 characters, hashed with argon2id. The type has no `Display` and a
//! redacting `Debug`, so a password cannot end up in a log line by accident.

use argon2::password_hash::{
    PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString, rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::UserError;
use crate::config::PasswordHashing;

/// The fewest characters a password may have (docs/contract.md).
pub const MIN_CHARS: usize = 8;
/// The most bytes a password may have: hashing is costly, unbounded input is a denial of
/// service.
pub const MAX_BYTES: usize = 1024;

/// A password that meets the rules. Never printed.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// Validates a password.
    pub fn parse(raw: String) -> Result<Self, UserError> {
        if raw.chars().count() < MIN_CHARS {
            return Err(UserError::InvalidArgument(format!(
                "password must be at least {MIN_CHARS} characters"
            )));
        }
        if raw.len() > MAX_BYTES {
            return Err(UserError::InvalidArgument(format!(
                "password must be at most {MAX_BYTES} bytes"
            )));
        }
        shop_shared::input::no_nul("password", &raw).map_err(UserError::InvalidArgument)?;
        Ok(Self(raw))
    }

    /// The password's text, for checking it against a stored hash.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The argon2id PHC string (`$argon2id$v=19$m=…`), with a fresh random salt. CPU-bound:
    /// call it from a blocking task.
    pub fn hash(&self, cost: PasswordHashing) -> anyhow::Result<String> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let hash = argon
            .hash_password(self.0.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("failed to hash the password: {e}"))?;
        Ok(hash.to_string())
    }
}

/// Whether `candidate` is the password of the argon2id PHC string `phc` (its cost is read
/// from the string). CPU-bound like [`Password::hash`]: call it from a blocking task.
pub fn verify(candidate: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(candidate.as_bytes(), &hash)
            .is_ok()
    })
}

/// The hash of a random password at `cost`: Login verifies against it when the email is
/// unknown, so that an unknown email costs the same time as a wrong password.
pub fn dummy_hash(cost: PasswordHashing) -> anyhow::Result<String> {
    let random = uuid::Uuid::new_v4().to_string();
    Password(random).hash(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_huge_passwords_are_rejected() {
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("x".repeat(MAX_BYTES + 1)).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("1234\u{0}5678".into()).is_err());
    }

    #[test]
    fn the_hash_is_argon2id_and_verifies() {
        let cost = PasswordHashing {
            memory_kib: 64,
            iterations: 1,
        };
        let hash = Password::parse("correct horse".into())
            .unwrap()
            .hash(cost)
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
    }

    #[test]
    fn verify_accepts_the_password_only() {
        let cost = PasswordHashing {
            memory_kib: 64,
            iterations: 1,
        };
        let hash = Password::parse("correct horse".into())
            .unwrap()
            .hash(cost)
            .unwrap();
        assert!(verify("correct horse", &hash));
        assert!(!verify("correct horsf", &hash));
        assert!(!verify("correct horse", "not a hash"));
        assert!(!verify("anything", &dummy_hash(cost).unwrap()));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let p = Password::parse("s3cret-passw0rd".into()).unwrap();
        assert!(!format!("{p:?}").contains("s3cret"));
    }
}

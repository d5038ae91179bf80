//! Email addresses: a pragmatic check (one `@`, a dotted domain, no spaces, RFC 5321 length
//! limits). Uniqueness is case-insensitive and enforced by the database.

use crate::UserError;

/// The longest address (RFC 5321's limit on a path, less its angle brackets).
const MAX_BYTES: usize = 254;

/// A syntactically valid email address, trimmed; stored as the `email` text column.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct Email(String);

impl Email {
    /// Validates an address.
    pub fn parse(raw: &str) -> Result<Self, UserError> {
        let email = raw.trim();
        if email.is_empty() {
            return Err(UserError::InvalidArgument("email must not be empty".into()));
        }
        if email.len() > MAX_BYTES {
            // Not echoed: the answer stays small whatever was sent.
            return Err(UserError::InvalidArgument(format!(
                "email is not valid: longer than {MAX_BYTES} characters"
            )));
        }
        let invalid =
            |why: &str| UserError::InvalidArgument(format!("email {email:?} is not valid: {why}"));
        let Some((local, domain)) = email.split_once('@') else {
            return Err(invalid("it has no @"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(invalid("the part before @ must have 1 to 64 characters"));
        }
        if domain.contains('@') {
            return Err(invalid("it has more than one @"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || l.len() > 63) {
            return Err(invalid("the domain must look like example.com"));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("it contains spaces or control characters"));
        }
        Ok(Self(email.to_owned()))
    }

    /// The address as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_addresses_are_accepted_and_trimmed() {
        assert_eq!(
            Email::parse(" Ada@Example.com ").unwrap().as_str(),
            "Ada@Example.com"
        );
        assert!(Email::parse("a.b+tag@sub.example.org").is_ok());
    }

    #[test]
    fn invalid_addresses_are_rejected() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@b..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }
}

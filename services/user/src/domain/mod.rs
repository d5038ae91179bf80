//! Validated input: once a request is turned into these types, it cannot be invalid.

mod email;
pub mod password;

pub use email::Email;
pub use password::Password;

use shop_proto::user::v1::{CreateUserRequest, LoginRequest, UpdateUserRequest};
use uuid::Uuid;

use crate::UserError;

/// The most characters a name may have.
pub const MAX_NAME_CHARS: usize = 200;

/// A display name: trimmed, not empty, at most [`MAX_NAME_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Validates a name.
    pub fn parse(raw: &str) -> Result<Self, UserError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(UserError::InvalidArgument("name must not be empty".into()));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(UserError::InvalidArgument(format!(
                "name must be at most {MAX_NAME_CHARS} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(UserError::InvalidArgument(
                "name must not contain control characters".into(),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses a user id (a UUID) from a request field.
pub fn parse_user_id(raw: &str) -> Result<Uuid, UserError> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| UserError::InvalidArgument(format!("user_id {raw:?} is not a UUID")))
}

/// A valid CreateUser request.
#[derive(Debug)]
pub struct NewUser {
    /// The email address.
    pub email: Email,
    /// The display name.
    pub name: UserName,
    /// The password, to be hashed.
    pub password: Password,
}

impl TryFrom<CreateUserRequest> for NewUser {
    type Error = UserError;

    fn try_from(r: CreateUserRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            email: Email::parse(&r.email)?,
            name: UserName::parse(&r.name)?,
            password: Password::parse(r.password)?,
        })
    }
}

/// A Login request with both fields present. The email is only trimmed: an address that
/// could never have been registered is simply unknown (UNAUTHENTICATED, like any other).
pub struct Credentials {
    /// The email as given, trimmed.
    pub email: String,
    /// The password as given. Never printed.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("password", &"***")
            .finish()
    }
}

impl Credentials {
    /// The throttling key: the email lower-cased (emails are unique case-insensitively).
    pub fn email_key(&self) -> String {
        self.email.to_lowercase()
    }
}

impl TryFrom<LoginRequest> for Credentials {
    type Error = UserError;

    fn try_from(r: LoginRequest) -> Result<Self, Self::Error> {
        let email = r.email.trim();
        if email.is_empty() {
            return Err(UserError::InvalidArgument("email must not be empty".into()));
        }
        if r.password.is_empty() {
            return Err(UserError::InvalidArgument(
                "password must not be empty".into(),
            ));
        }
        Ok(Self {
            email: email.to_owned(),
            password: r.password,
        })
    }
}

/// A valid UpdateUser request: the fields to change.
#[derive(Debug)]
pub struct UserPatch {
    /// Whose profile.
    pub user_id: Uuid,
    /// The new email, if it changes.
    pub email: Option<Email>,
    /// The new name, if it changes.
    pub name: Option<UserName>,
}

impl TryFrom<UpdateUserRequest> for UserPatch {
    type Error = UserError;

    fn try_from(r: UpdateUserRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            user_id: parse_user_id(&r.user_id)?,
            email: r.email.as_deref().map(Email::parse).transpose()?,
            name: r.name.as_deref().map(UserName::parse).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_must_not_be_empty_or_huge() {
        assert_eq!(UserName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"x".repeat(201)).is_err());
        assert!(UserName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn login_needs_both_fields_and_never_shows_the_password() {
        let login = |email: &str, password: &str| {
            Credentials::try_from(LoginRequest {
                email: email.into(),
                password: password.into(),
            })
        };
        assert!(login(" ", "secret-pw").is_err());
        assert!(login("a@b.com", "").is_err());
        let ok = login(" Ada@Example.com ", "secret-pw").unwrap();
        assert_eq!(ok.email_key(), "ada@example.com");
        assert!(!format!("{ok:?}").contains("secret-pw"));
    }

    #[test]
    fn user_ids_must_be_uuids() {
        assert!(parse_user_id("not-a-uuid").is_err());
        assert!(parse_user_id("0190f5a0-0000-7000-8000-000000000000").is_ok());
    }
}

//! Validated input: once a request is turned into these types, it cannot be invalid.

mod email;
pub mod password;

pub use email::Email;
pub use password::Password;

use shop_proto::user::v1::{CreateUserRequest, LoginRequest, UpdateUserRequest};
use shop_shared::ids::UserId;

use crate::UserError;

/// The most characters a name may have.
pub const MAX_NAME_CHARS: usize = 200;

/// A display name: trimmed, not empty, at most [`MAX_NAME_CHARS`]; stored as the `name`
/// text column.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
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

/// A valid CreateUser request.
#[derive(Debug)]
pub struct NewUser {
    /// The email address.
    pub email: Email,
    /// The display name.
    pub name: UserName,
    /// The password, to be hashed.
    pub password: Password,
    /// What else the sign-up said: the name in parts, free-form attributes.
    pub profile: SignUpProfile,
}

impl TryFrom<CreateUserRequest> for NewUser {
    type Error = UserError;

    fn try_from(r: CreateUserRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            email: Email::parse(&r.email)?,
            name: UserName::parse(&r.name)?,
            password: Password::parse(r.password)?,
            profile: SignUpProfile {
                given_name: name_part("given_name", r.given_name.as_deref())?,
                family_name: name_part("family_name", r.family_name.as_deref())?,
                metadata: Metadata::parse(r.metadata)?,
            },
        })
    }
}

/// The parts of a sign-up besides email, display name and password, stored with the user and
/// published in `user.created` (metadata) and `user.created.v2` (all of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignUpProfile {
    /// The given name, when one was given.
    pub given_name: Option<String>,
    /// The family name, when one was given.
    pub family_name: Option<String>,
    /// Free-form sign-up attributes.
    pub metadata: Metadata,
}

/// A given or family name: absent or blank is none; otherwise trimmed, at most
/// [`MAX_NAME_CHARS`], no control characters.
fn name_part(field: &str, raw: Option<&str>) -> Result<Option<String>, UserError> {
    let Some(part) = raw.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if part.chars().count() > MAX_NAME_CHARS {
        return Err(UserError::InvalidArgument(format!(
            "{field} must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    if part.chars().any(char::is_control) {
        return Err(UserError::InvalidArgument(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(Some(part.to_owned()))
}

/// The most entries sign-up metadata may have.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// The most characters a metadata key may have (at least one).
pub const MAX_METADATA_KEY_CHARS: usize = 64;
/// The most characters a metadata value may have.
pub const MAX_METADATA_VALUE_CHARS: usize = 256;

/// Free-form sign-up attributes (e.g. `signup_source`): at most [`MAX_METADATA_ENTRIES`],
/// keys of 1 to [`MAX_METADATA_KEY_CHARS`] characters, values of at most
/// [`MAX_METADATA_VALUE_CHARS`] (docs/contract.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(std::collections::BTreeMap<String, String>);

impl Metadata {
    /// Validates the request's map.
    pub fn parse(raw: std::collections::HashMap<String, String>) -> Result<Self, UserError> {
        if raw.len() > MAX_METADATA_ENTRIES {
            return Err(UserError::InvalidArgument(format!(
                "metadata has {} entries, at most {MAX_METADATA_ENTRIES} are allowed",
                raw.len()
            )));
        }
        let mut entries = std::collections::BTreeMap::new();
        for (key, value) in raw {
            let key_chars = key.chars().count();
            if key_chars == 0 || key_chars > MAX_METADATA_KEY_CHARS {
                return Err(UserError::InvalidArgument(format!(
                    "metadata key {} must have 1 to {MAX_METADATA_KEY_CHARS} characters",
                    shop_shared::input::shown(&key)
                )));
            }
            shop_shared::input::no_control("metadata key", &key)
                .map_err(UserError::InvalidArgument)?;
            shop_shared::input::no_nul(&format!("metadata value of {key:?}"), &value)
                .map_err(UserError::InvalidArgument)?;
            if value.chars().count() > MAX_METADATA_VALUE_CHARS {
                return Err(UserError::InvalidArgument(format!(
                    "metadata value of {key:?} must have at most {MAX_METADATA_VALUE_CHARS} characters"
                )));
            }
            entries.insert(key, value);
        }
        Ok(Self(entries))
    }

    /// The entries, sorted by key.
    pub fn entries(&self) -> &std::collections::BTreeMap<String, String> {
        &self.0
    }

    /// As the events carry it.
    pub fn to_map(&self) -> std::collections::HashMap<String, String> {
        self.0.clone().into_iter().collect()
    }
}

/// A Login request with both fields present and an email CreateUser would accept: an address
/// that could never have been registered is refused before anything is hashed or stored.
pub struct Credentials {
    /// The email, validated as CreateUser validates it.
    pub email: Email,
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

impl TryFrom<LoginRequest> for Credentials {
    type Error = UserError;

    fn try_from(r: LoginRequest) -> Result<Self, Self::Error> {
        let email = Email::parse(&r.email)?;
        if r.password.is_empty() {
            return Err(UserError::InvalidArgument(
                "password must not be empty".into(),
            ));
        }
        shop_shared::input::no_nul("password", &r.password).map_err(UserError::InvalidArgument)?;
        if r.password.len() > password::MAX_BYTES {
            return Err(UserError::InvalidArgument(format!(
                "password must be at most {} bytes",
                password::MAX_BYTES
            )));
        }
        Ok(Self {
            email,
            password: r.password,
        })
    }
}

/// A valid UpdateUser request: the fields to change.
#[derive(Debug)]
pub struct UserPatch {
    /// Whose profile.
    pub user_id: UserId,
    /// The new email, if it changes.
    pub email: Option<Email>,
    /// The new name, if it changes.
    pub name: Option<UserName>,
}

impl TryFrom<UpdateUserRequest> for UserPatch {
    type Error = UserError;

    fn try_from(r: UpdateUserRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            user_id: UserId::parse(&r.user_id)?,
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
    fn metadata_is_bounded_in_entries_key_and_value_length() {
        let map = |pairs: &[(&str, String)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let ok = Metadata::parse(map(&[("signup_source", "ad".into())])).unwrap();
        assert_eq!(ok.entries().get("signup_source").unwrap(), "ad");
        let sixteen: std::collections::HashMap<_, _> =
            (0..16).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(Metadata::parse(sixteen.clone()).is_ok());
        let mut seventeen = sixteen;
        seventeen.insert("k16".into(), String::new());
        assert!(Metadata::parse(seventeen).is_err());
        assert!(Metadata::parse(map(&[("", "v".into())])).is_err());
        assert!(Metadata::parse(map(&[(&"k".repeat(64), "v".into())])).is_ok());
        assert!(Metadata::parse(map(&[(&"k".repeat(65), "v".into())])).is_err());
        assert!(Metadata::parse(map(&[("k", "v".repeat(256))])).is_ok());
        assert!(Metadata::parse(map(&[("k", "v".repeat(257))])).is_err());
        assert!(Metadata::parse(map(&[("k\n", "v".into())])).is_err());
        assert!(Metadata::parse(map(&[("k", "v\u{0}".into())])).is_err());
    }

    #[test]
    fn name_parts_are_optional_trimmed_and_bounded() {
        assert_eq!(name_part("given_name", None).unwrap(), None);
        assert_eq!(name_part("given_name", Some("  ")).unwrap(), None);
        assert_eq!(
            name_part("given_name", Some(" Ada ")).unwrap().as_deref(),
            Some("Ada")
        );
        let long = "x".repeat(201);
        let error = name_part("family_name", Some(&long)).unwrap_err();
        assert!(error.to_string().contains("family_name"), "{error}");
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
        let huge = format!("{}@example.com", "a".repeat(1 << 20));
        assert!(
            login(&huge, "secret-pw").is_err(),
            "a 1 MiB email is refused"
        );
        assert!(login("no-at-sign", "secret-pw").is_err());
        assert!(login("a\u{0}@example.com", "secret-pw").is_err());
        let ok = login(" Ada@Example.com ", "secret-pw").unwrap();
        assert_eq!(ok.email.as_str(), "Ada@Example.com");
        assert!(!format!("{ok:?}").contains("secret-pw"));
    }

    #[test]
    fn user_ids_must_be_uuids() {
        assert!(UserId::parse("not-a-uuid").is_err());
        assert!(UserId::parse("0190f5a0-0000-7000-8000-000000000000").is_ok());
    }
}

/// Fuzzing the validation of every user request (proptest): any text never panics, and what is
/// accepted holds no control character (NUL above all) and stays within its bounds.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,300}",
            "[a-zA-Z@. \u{0}\n\u{1b}]{0,30}",
            "[a-z]{1,10}@[a-z]{1,10}\\.com"
        ]
    }

    fn clean(value: &str) -> bool {
        !value.chars().any(char::is_control)
    }

    proptest! {
        #[test]
        fn create_user(email in text(), name in text(), password in text(), key in text(), value in text(), given in proptest::option::of(text())) {
            let request = CreateUserRequest {
                email,
                name,
                password,
                metadata: [(key, value)].into_iter().collect(),
                given_name: given,
                ..Default::default()
            };
            if let Ok(new) = NewUser::try_from(request) {
                prop_assert!(clean(new.email.as_str()) && new.email.as_str().len() <= 254);
                prop_assert!(clean(new.name.as_str()));
                prop_assert!(!new.password.expose().contains('\0'));
                for (key, value) in new.profile.metadata.entries() {
                    prop_assert!(clean(key) && !value.contains('\0'));
                }
                prop_assert!(new.profile.given_name.as_deref().is_none_or(clean));
            }
        }

        #[test]
        fn login(email in text(), password in text()) {
            if let Ok(credentials) = Credentials::try_from(LoginRequest { email, password }) {
                prop_assert!(clean(credentials.email.as_str()));
                prop_assert!(!credentials.password.contains('\0'));
            }
        }

        #[test]
        fn update_user(id in text(), email in proptest::option::of(text()), name in proptest::option::of(text())) {
            if let Ok(patch) = UserPatch::try_from(UpdateUserRequest { user_id: id, email, name }) {
                prop_assert!(patch.email.as_ref().is_none_or(|e| clean(e.as_str())));
                prop_assert!(patch.name.as_ref().is_none_or(|n| clean(n.as_str())));
            }
        }
    }
}

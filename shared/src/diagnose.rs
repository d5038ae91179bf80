//! Start-up errors that say what is wrong. A service that cannot use PostgreSQL or RabbitMQ
//! tells apart a server it cannot reach (refused, unknown host, timeout), one that it reached
//! but that refused it (password, role, database, vhost, permissions), and a URL that is not
//! one. Each gets its own one-line message naming the URL (password masked) and the setting
//! to change; the library's error is folded into that line, never repeated as a cause.

use std::fmt;
use std::io;

/// What went wrong, in the user's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The setting does not parse as a URL of that server.
    Malformed,
    /// Nothing answered: connection refused, unknown host, timeout.
    Unreachable,
    /// The server answered and refused: authentication, a missing role, database or vhost,
    /// missing permissions.
    Refused,
}

/// A dependency a service needs at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// PostgreSQL.
    Postgres,
    /// RabbitMQ.
    RabbitMq,
}

impl Dependency {
    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::RabbitMq => "RabbitMQ",
        }
    }
}

/// A start-up failure with everything needed to fix it, displayed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupError {
    /// Which server.
    pub dependency: Dependency,
    /// What kind of failure.
    pub problem: Problem,
    /// The URL, password masked.
    pub url: String,
    /// The environment variable that holds the URL.
    pub setting: String,
    /// The server's or the library's own words, once.
    pub detail: String,
    /// What to check for a refusal (`the password`, `that the database exists`, …).
    pub check: &'static str,
}

impl std::error::Error for StartupError {}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            url,
            setting,
            detail,
            ..
        } = self;
        let what = self.dependency.name();
        match self.problem {
            Problem::Malformed => {
                write!(f, "{setting} is not a valid {what} URL ({detail}): {url}")
            }
            Problem::Unreachable => write!(
                f,
                "cannot reach {what} at {url}: {detail}; {}, or set {setting}",
                start_hint(self.dependency, url)
            ),
            Problem::Refused => write!(
                f,
                "{what} at {url} refused the connection: {detail}; check {} (set by {setting})",
                self.check
            ),
        }
    }
}

/// How to get a server running. A loopback address gets the reminder that in a container it
/// is the container itself.
fn start_hint(dependency: Dependency, url: &str) -> String {
    let (compose, package) = match dependency {
        Dependency::Postgres => ("postgres", "postgresql"),
        Dependency::RabbitMq => ("rabbitmq", "rabbitmq-server"),
    };
    let loopback = [
        "@localhost",
        "@127.0.0.1",
        "@[::1]",
        "//localhost",
        "//127.0.0.1",
    ]
    .iter()
    .any(|host| url.contains(host));
    let container = if loopback {
        "; in a container, 127.0.0.1 is the container itself"
    } else {
        ""
    };
    format!(
        "is it running and listening there? (`docker compose up -d {compose}` from this repository, or `systemctl start {package}` where it is installed{container})"
    )
}

/// A server's message as a clause of ours: without its closing full stop.
fn clause(message: &str) -> String {
    message
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        .to_owned()
}

/// The words of an I/O failure, without the `(os error N)` noise.
fn io_detail(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            }
        }
    }
}

/// Classifies a PostgreSQL connection failure for `url`, held in `setting`.
pub fn postgres(url: &str, setting: &str, e: &sqlx::Error) -> StartupError {
    let (problem, detail, check) = match e {
        sqlx::Error::Configuration(c) => (Problem::Malformed, c.to_string(), ""),
        sqlx::Error::Io(io) => (Problem::Unreachable, io_detail(io), ""),
        sqlx::Error::PoolTimedOut => (Problem::Unreachable, "timed out".into(), ""),
        sqlx::Error::Database(d) => {
            let check = match d.code().as_deref() {
                Some("28P01") => "the user and password",
                Some("28000") => "that the role (user) exists and may connect",
                Some("3D000") => "that the database exists",
                Some("42501") => {
                    "the role's permissions (it needs CREATEDB, or create the database for it)"
                }
                Some("53300") => "the server's max_connections and DATABASE_POOL_SIZE",
                _ => "the user, password, database and permissions",
            };
            (Problem::Refused, clause(d.message()), check)
        }
        other => (
            Problem::Refused,
            other.to_string(),
            "that the URL names a PostgreSQL server",
        ),
    };
    StartupError {
        dependency: Dependency::Postgres,
        problem,
        url: redact(url),
        setting: setting.to_owned(),
        detail,
        check,
    }
}

/// Whether `url` parses as an AMQP URL, as the broker connections will parse it.
pub fn check_amqp_url(url: &str, setting: &str) -> Result<(), StartupError> {
    for node in node_urls(url) {
        if let Err(detail) = node.parse::<lapin::uri::AMQPUri>() {
            return Err(StartupError {
                dependency: Dependency::RabbitMq,
                problem: Problem::Malformed,
                url: redact(node),
                setting: setting.to_owned(),
                detail,
                check: "",
            });
        }
    }
    Ok(())
}

/// Classifies a RabbitMQ connection failure for `url`, held in `setting`.
pub fn rabbitmq(url: &str, setting: &str, e: &lapin::Error) -> StartupError {
    if let Err(malformed) = check_amqp_url(url, setting) {
        return malformed;
    }
    let (problem, detail, check) = match e {
        lapin::Error::IOError(io) => (Problem::Unreachable, io_detail(io), ""),
        lapin::Error::ProtocolError(amqp) => {
            // The reply codes of AMQP 0-9-1: 403 ACCESS_REFUSED, 530 NOT_ALLOWED.
            let check = match amqp.get_id() {
                530 => "that the vhost exists and the user may use it",
                403 => "the user and password, and the user's permissions on the vhost",
                _ => "the user, password, vhost and permissions",
            };
            (Problem::Refused, clause(amqp.get_message().as_str()), check)
        }
        other => (
            Problem::Refused,
            other.to_string(),
            "the user, password, vhost and permissions",
        ),
    };
    StartupError {
        dependency: Dependency::RabbitMq,
        problem,
        url: redact(url),
        setting: setting.to_owned(),
        detail,
        check,
    }
}

/// The node URLs of an `AMQP_URL`: one URL, or a comma-separated list of a cluster's nodes.
pub fn node_urls(url: &str) -> Vec<&str> {
    let nodes: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if nodes.is_empty() { vec![url] } else { nodes }
}

/// Hides the password of a URL for messages and logs, also in a URL too malformed to parse
/// (the user information is what comes before the last `@`, after any `/`).
pub fn redact(url: &str) -> String {
    // A list of a cluster's nodes: each URL on its own.
    if url.contains(',') {
        return url.split(',').map(redact).collect::<Vec<_>>().join(",");
    }
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let start = url[..at].rfind('/').map_or(0, |slash| slash + 1);
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(
            redact("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
        assert_eq!(redact("amqp//guest:pw@h"), "amqp//guest:***@h");
        assert_eq!(redact("guest:pw@h:5672"), "guest:***@h:5672");
        assert_eq!(redact("amqp://h:5672/%2f"), "amqp://h:5672/%2f");
        assert_eq!(
            redact("amqp://u:one@a:5672/%2f,amqp://u:two@b:5673/%2f"),
            "amqp://u:***@a:5672/%2f,amqp://u:***@b:5673/%2f"
        );
    }

    #[test]
    fn each_problem_has_its_own_line_with_the_masked_url_and_the_setting() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let e = postgres(
            "postgres://shop:secret@db:5432/shop_order",
            "ORDER_DATABASE_URL",
            &sqlx::Error::Io(refused),
        );
        assert_eq!(e.problem, Problem::Unreachable);
        let line = e.to_string();
        assert!(line.starts_with("cannot reach PostgreSQL at postgres://shop:***@db:5432/shop_order: connection refused;"), "{line}");
        assert!(line.ends_with("or set ORDER_DATABASE_URL"), "{line}");
        assert!(!line.contains("secret") && !line.contains('\n'), "{line}");

        let malformed = check_amqp_url("amqp//guest@host", "AMQP_URL").unwrap_err();
        assert_eq!(malformed.problem, Problem::Malformed);
        assert!(
            malformed
                .to_string()
                .starts_with("AMQP_URL is not a valid RabbitMQ URL")
        );
    }

    #[test]
    fn os_error_numbers_are_left_out() {
        let e = io::Error::other(
            "failed to lookup address information: Name or service not known (os error -2)",
        );
        assert_eq!(
            io_detail(&e),
            "failed to lookup address information: Name or service not known"
        );
    }
}

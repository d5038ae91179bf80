//! `shop up` with a setting that cannot work: the real binary, real PostgreSQL and RabbitMQ.
//! Each failure is told apart (unreachable, reached but refused, malformed URL) in one line
//! on stderr that names the URL with its password masked and the setting to change, with
//! the cause said once and no library's ERROR line beside it.

use std::process::Command;

use shop_shared::testing::{TestDatabase, amqp_url};

/// Runs `shop up` with `env` and returns its stderr, checking it failed.
fn failed_start(env: &[(&str, String)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    command
        .arg("up")
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("LOG_FORMAT");
    for service in ["USER", "ORDER", "INVENTORY", "NOTIFICATION"] {
        // Never the real ports: nothing here should get far enough to bind them.
        command
            .env(format!("{service}_GRPC_ADDR"), "127.0.0.1:0")
            .env(format!("{service}_HTTP_ADDR"), "127.0.0.1:0");
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run shop up");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "shop up should have failed:\n{stderr}"
    );
    stderr
}

/// The one error line, after checking there is exactly one and no ERROR/WARN log line.
fn the_error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got:\n{stderr}");
    let noisy: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            let level = l.split_whitespace().nth(1).unwrap_or("");
            level == "ERROR" || level == "WARN"
        })
        .collect();
    assert!(
        noisy.is_empty(),
        "library log lines beside the error:\n{stderr}"
    );
    errors[0]
}

/// Checks the parts every message has, and that no part of it is said twice.
fn assert_diagnosis(line: &str, starts_with: &str, setting: &str) {
    assert!(line.starts_with(starts_with), "{line}");
    assert!(
        line.contains(setting),
        "the setting {setting} is not named: {line}"
    );
    assert!(!line.contains("secret"), "the password is shown: {line}");
    assert!(!line.contains("os error"), "raw OS error: {line}");
    // The cause once: no clause of the message comes back after a ": ".
    let clauses: Vec<&str> = line.split(": ").map(str::trim).collect();
    for (i, clause) in clauses.iter().enumerate() {
        assert!(
            !clauses[i + 1..].contains(clause),
            "{clause:?} is repeated: {line}"
        );
    }
}

fn database_server_port_closed() -> String {
    // Port 1 on loopback: nothing listens there.
    "postgres://postgres:secret@127.0.0.1:1/shop_user".into()
}

#[test]
fn an_unreachable_database_is_reported_as_unreachable() {
    let stderr = failed_start(&[("USER_DATABASE_URL", database_server_port_closed())]);
    let line = the_error_line(&stderr);
    assert_diagnosis(
        line,
        "error: cannot reach PostgreSQL at postgres://postgres:***@127.0.0.1:1/shop_user: connection refused",
        "USER_DATABASE_URL",
    );
    assert!(line.contains("is it running"), "{line}");
}

#[test]
fn an_unknown_database_host_is_reported_as_unreachable() {
    let stderr = failed_start(&[(
        "USER_DATABASE_URL",
        "postgres://postgres:secret@no-such-host.invalid:5432/shop_user".into(),
    )]);
    assert_diagnosis(
        the_error_line(&stderr),
        "error: cannot reach PostgreSQL at postgres://postgres:***@no-such-host.invalid:5432/shop_user",
        "USER_DATABASE_URL",
    );
}

#[test]
fn a_missing_role_is_reported_as_refused() {
    let url = shop_shared::testing::with_database(
        &shop_shared::testing::database_server_url(),
        "shop_user",
    )
    .replacen("postgres@", "no_such_role:secret@", 1);
    let stderr = failed_start(&[("USER_DATABASE_URL", url)]);
    let line = the_error_line(&stderr);
    assert_diagnosis(
        line,
        "error: PostgreSQL at postgres://no_such_role:***@",
        "USER_DATABASE_URL",
    );
    assert!(line.contains("refused the connection"), "{line}");
    assert!(
        line.contains("role \"no_such_role\" does not exist"),
        "{line}"
    );
}

#[test]
fn a_malformed_database_url_is_reported_as_malformed() {
    let stderr = failed_start(&[(
        "USER_DATABASE_URL",
        "postgres://postgres:secret@127.0.0.1:notaport/shop_user".into(),
    )]);
    assert_diagnosis(
        the_error_line(&stderr),
        "error: USER_DATABASE_URL is not a valid PostgreSQL URL",
        "USER_DATABASE_URL",
    );
}

/// A reachable database for the user service, so that start-up gets as far as the broker.
async fn with_good_database(amqp: String) -> String {
    let database = TestDatabase::create().await;
    failed_start(&[
        ("USER_DATABASE_URL", database.url.clone()),
        ("AMQP_URL", amqp),
    ])
}

fn broker_with(user_password: &str, port: u16, vhost: &str) -> String {
    let base = amqp_url();
    let host = base
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split(['/', ':']).next())
        .unwrap_or("127.0.0.1")
        .to_owned();
    format!("amqp://{user_password}@{host}:{port}/{vhost}")
}

#[tokio::test]
async fn an_unreachable_broker_is_reported_as_unreachable() {
    let stderr = with_good_database(broker_with("guest:secret", 1, "%2f")).await;
    let line = the_error_line(&stderr);
    assert_diagnosis(
        line,
        "error: cannot reach RabbitMQ at amqp://guest:***@",
        "AMQP_URL",
    );
    assert!(line.contains("connection refused"), "{line}");
}

#[tokio::test]
async fn a_wrong_broker_password_is_reported_as_refused() {
    let stderr = with_good_database(broker_with("guest:secret", 5672, "%2f")).await;
    let line = the_error_line(&stderr);
    assert_diagnosis(line, "error: RabbitMQ at amqp://guest:***@", "AMQP_URL");
    assert!(line.contains("refused the connection"), "{line}");
    assert!(line.contains("password"), "{line}");
}

#[tokio::test]
async fn a_missing_vhost_is_reported_as_refused() {
    let password = amqp_url()
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo.to_owned())
        .unwrap_or_else(|| "guest:guest".into());
    let stderr = with_good_database(broker_with(&password, 5672, "no-such-vhost")).await;
    let line = the_error_line(&stderr);
    assert!(line.contains("refused the connection"), "{line}");
    assert!(line.contains("vhost"), "{line}");
    assert!(line.contains("AMQP_URL"), "{line}");
}

#[tokio::test]
async fn a_malformed_broker_url_is_reported_as_malformed() {
    let stderr = with_good_database("amqp//guest:secret@127.0.0.1".into()).await;
    assert_diagnosis(
        the_error_line(&stderr),
        "error: AMQP_URL is not a valid RabbitMQ URL",
        "AMQP_URL",
    );
}

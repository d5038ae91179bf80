use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use shop_shared::auth::{Role, Verifier, jwks_client::HttpJwks};
use shop_shared::testing::eventually;
use tonic::Code;

use crate::helpers::{PASSWORD, STAFF_EMAIL, WAIT, spawn_app, spawn_app_with};

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

fn header_of(token: &str) -> serde_json::Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&B64.decode(header).unwrap()).unwrap()
}

#[tokio::test]
async fn login_returns_an_es256_token_with_the_contract_claims_verifiable_from_the_jwks() {
    // Arrange
    let mut app = spawn_app().await;
    let user = app.create_user("Ada@Example.com").await;

    // Act: the email is compared case-insensitively.
    let done = app.login("ada@example.COM", PASSWORD).await.unwrap();

    // Assert
    assert_eq!(done.expires_in_seconds, 900);
    assert_eq!(done.user.as_ref(), Some(&user));
    let header = header_of(&done.access_token);
    assert_eq!(header["alg"], "ES256");
    let claims = claims_of(&done.access_token);
    assert_eq!(claims["iss"], "shop");
    assert_eq!(claims["aud"], "shop");
    assert_eq!(claims["sub"], user.user_id.as_str());
    assert_eq!(claims["roles"], serde_json::json!(["customer"]));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 900);
    assert!((iat - chrono::Utc::now().timestamp()).abs() < 60);
    let jwks = app.jwks().await;
    assert!(
        jwks.keys
            .iter()
            .any(|k| Some(k.kid.as_str()) == header["kid"].as_str()),
        "the token's kid is in the JWK Set"
    );
    // What another service does: verify with the public keys from the HTTP port only.
    let verifier = Verifier::new(
        std::sync::Arc::new(
            HttpJwks::new(&format!("http://{}/.well-known/jwks.json", app.http_addr)).unwrap(),
        ),
        Duration::from_secs(1),
    );
    let caller = verifier.verify(&done.access_token).await.unwrap();
    assert_eq!(caller.user_id.to_string(), user.user_id);
    assert_eq!(caller.role, Role::Customer);
}

#[tokio::test]
async fn login_gives_one_answer_for_a_wrong_password_and_an_unknown_email() {
    let mut app = spawn_app().await;
    app.create_user("grace@example.com").await;
    let wrong = app
        .login("grace@example.com", "not the password")
        .await
        .unwrap_err();
    let unknown = app.login("nobody@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message());
}

#[tokio::test]
async fn login_answers_invalid_argument_for_an_empty_email_or_password() {
    let mut app = spawn_app().await;
    for (email, password) in [("", PASSWORD), ("  ", PASSWORD), ("a@example.com", "")] {
        let status = app.login(email, password).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{email:?}/{password:?}"
        );
    }
}

#[tokio::test]
async fn login_is_throttled_after_too_many_failures_even_with_the_right_password_until_the_window_passed()
 {
    // Arrange: 3 failures within 3 s lock the email.
    let mut app = spawn_app_with(|c| {
        c.auth.login_max_failures = 3;
        c.auth.login_window = Duration::from_secs(3);
    })
    .await;
    app.create_user("locked@example.com").await;
    app.create_user("other@example.com").await;
    for _ in 0..3 {
        let wrong = app
            .login("locked@example.com", "wrong password")
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }

    // Act
    let throttled = app.login("LOCKED@example.com", PASSWORD).await.unwrap_err();

    // Assert: locked even with the right password; other emails are not affected; a second
    // replica on the same database sees the same count (it lives in the database).
    assert_eq!(throttled.code(), Code::ResourceExhausted, "{throttled:?}");
    assert!(app.login("other@example.com", PASSWORD).await.is_ok());
    let replica = shop_user::Application::build(app.config.clone())
        .await
        .unwrap();
    let replica_addr = replica.grpc_addr();
    let _replica = shop_shared::testing::run_until_dropped(|s| replica.run_until_stopped(s));
    let mut replica_client = shop_proto::user::v1::user_service_client::UserServiceClient::new(
        shop_shared::testing::grpc_channel(replica_addr).await,
    );
    let on_replica = replica_client
        .login(shop_proto::user::v1::LoginRequest {
            email: "locked@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(on_replica.code(), Code::ResourceExhausted);
    // Once the window has passed, the right password works again.
    eventually(WAIT, "the throttling window to pass", || {
        let mut client = app.anonymous.clone();
        async move {
            client
                .login(shop_proto::user::v1::LoginRequest {
                    email: "locked@example.com".into(),
                    password: PASSWORD.into(),
                })
                .await
                .ok()
        }
    })
    .await;
}

#[tokio::test]
async fn the_staff_account_is_made_at_start_and_its_password_follows_the_setting() {
    // Arrange
    let mut app = spawn_app().await;
    let staff = app.login(STAFF_EMAIL, PASSWORD).await.unwrap();
    assert_eq!(
        claims_of(&staff.access_token)["roles"],
        serde_json::json!(["staff"])
    );

    // Act: a restart with another password.
    let mut config = app.config.clone();
    config.service.grpc_addr = ([127, 0, 0, 1], 0).into();
    config.auth.admin = Some(shop_user::config::AdminAccount {
        email: STAFF_EMAIL.into(),
        password: "a new staff password".to_owned().into(),
    });
    let restarted = shop_user::Application::build(config).await.unwrap();

    // Assert
    drop(restarted);
    assert_eq!(
        app.login(STAFF_EMAIL, PASSWORD).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let again = app
        .login(STAFF_EMAIL, "a new staff password")
        .await
        .unwrap();
    assert_eq!(again.user.unwrap().user_id, staff.user.unwrap().user_id);
    // Sign-ups are customers, whatever they ask.
    app.create_user("customer@example.com").await;
    let customer = app.login("customer@example.com", PASSWORD).await.unwrap();
    assert_eq!(
        claims_of(&customer.access_token)["roles"],
        serde_json::json!(["customer"])
    );
}

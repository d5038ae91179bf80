use shop_proto::user::v1::GetUserRequest;

use crate::helpers::{PASSWORD, spawn_app};

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_signing_key_lives_in_the_database_so_tokens_survive_a_restart() {
    // Arrange
    let mut app = spawn_app().await;
    let ada = app.create_user("ada@example.com").await;
    let token = app
        .login("ada@example.com", PASSWORD)
        .await
        .unwrap()
        .access_token;

    // Act: a second start on the same database (a restart, or a replica).
    let again = shop_user::Application::build(app.config.clone())
        .await
        .unwrap();
    let addr = again.grpc_addr();
    let _running = shop_shared::testing::run_until_dropped(|s| again.run_until_stopped(s));

    // Assert: one key, the same one, and the first instance's token works on the second.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let bearer = shop_shared::auth::BearerToken::new();
    bearer.set(&token).unwrap();
    let mut client = shop_proto::user::v1::user_service_client::UserServiceClient::with_interceptor(
        shop_shared::testing::grpc_channel(addr).await,
        bearer,
    );
    let found = client
        .get_user(GetUserRequest {
            user_id: ada.user_id,
        })
        .await;
    assert!(found.is_ok(), "{found:?}");
}

#[tokio::test]
async fn a_rotation_signs_with_a_new_key_and_keeps_the_old_one_published_until_its_tokens_expired()
{
    // Arrange
    let mut app = spawn_app().await;
    let ada = app.create_user("ada@example.com").await;
    let old_token = app
        .login("ada@example.com", PASSWORD)
        .await
        .unwrap()
        .access_token;
    let old_kid = kid_of(&old_token);

    // Act
    let rotation = shop_user::keys::rotate(&app.db, app.config.auth.token_ttl)
        .await
        .unwrap();
    let new_token = app
        .login("ada@example.com", PASSWORD)
        .await
        .unwrap()
        .access_token;

    // Assert: the new key signs, both are published, both tokens are accepted.
    assert_eq!(rotation.retired, vec![old_kid.clone()]);
    assert_eq!(kid_of(&new_token), rotation.new_kid);
    let kids: Vec<String> = app.jwks().await.keys.into_iter().map(|k| k.kid).collect();
    assert!(
        kids.contains(&old_kid) && kids.contains(&rotation.new_kid),
        "{kids:?}"
    );
    for token in [&old_token, &new_token] {
        let mut client = app.client_with(token).await;
        let found = client
            .get_user(GetUserRequest {
                user_id: ada.user_id.clone(),
            })
            .await;
        assert!(found.is_ok(), "{found:?}");
    }

    // Once the old key's last token has expired (here: retired long ago), it is dropped.
    sqlx::query("UPDATE signing_keys SET retired_at = now() - interval '1 day' WHERE kid = $1")
        .bind(&old_kid)
        .execute(&app.db)
        .await
        .unwrap();
    let kids: Vec<String> = app.jwks().await.keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, vec![rotation.new_kid.clone()], "no longer published");
    let dropped = shop_user::keys::prune(&app.db, app.config.auth.token_ttl)
        .await
        .unwrap();
    assert_eq!(dropped, vec![old_kid]);
}

use std::time::Duration;

use shop_proto::notification::v1::notification_service_client::NotificationServiceClient;
use shop_proto::notification::v1::{ListNotificationsRequest, Notification};
use shop_shared::auth::BearerToken;
use shop_shared::testing::TestIssuer;
use shop_shared::testing::{
    RunningUntilDropped, TestEnv, bearer, eventually, grpc_channel, spawn_service,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A client sending a bearer token.
pub(crate) type Client = NotificationServiceClient<InterceptedService<Channel, BearerToken>>;

pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) struct TestApp {
    // First, so the service stops before its database and prefix are removed.
    _running: RunningUntilDropped,
    /// Sends a staff token: the tests' own calls may do everything.
    pub(crate) client: Client,
    /// Signs the tokens the service verifies (its JWK Set served over HTTP).
    pub(crate) issuer: TestIssuer,
    pub(crate) grpc_addr: std::net::SocketAddr,
    /// The HTTP port (`/metrics`).
    #[allow(dead_code)]
    pub(crate) http_addr: std::net::SocketAddr,
    pub(crate) env: TestEnv,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_in(TestEnv::new().await).await
}

/// The service on `env` (whose broker a test may have prepared).
pub(crate) async fn spawn_app_in(env: TestEnv) -> TestApp {
    spawn_app_with_email(env, shop_notification::config::EmailConfig::default()).await
}

/// The service on `env`, emailing as `email` says.
pub(crate) async fn spawn_app_with_email(
    env: TestEnv,
    email: shop_notification::config::EmailConfig,
) -> TestApp {
    let issuer = TestIssuer::start().await;
    let mut config = env.config("notification");
    config.auth.jwks_url = issuer.jwks_url().to_owned();
    let app = shop_notification::Application::build(shop_notification::Config {
        service: config,
        email,
    })
    .await
    .expect("build the notification service");
    let service = spawn_service((app.grpc_addr(), app.http_addr()), |s| {
        app.run_until_stopped(s)
    })
    .await;
    TestApp {
        client: NotificationServiceClient::with_interceptor(
            service.channel,
            bearer(&issuer.staff()),
        ),
        _running: service.running,
        issuer,
        grpc_addr: service.grpc_addr,
        http_addr: service.http_addr,
        env,
    }
}

impl TestApp {
    /// A client sending `token`.
    #[allow(dead_code)]
    pub(crate) async fn client_with(&self, token: &str) -> Client {
        NotificationServiceClient::with_interceptor(
            grpc_channel(self.grpc_addr).await,
            bearer(token),
        )
    }

    pub(crate) async fn list(&mut self, user_id: &str) -> Vec<Notification> {
        self.client
            .list_notifications(ListNotificationsRequest {
                user_id: user_id.into(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("ListNotifications succeeds")
            .into_inner()
            .notifications
    }

    /// Waits until `user_id` has `count` notifications, and returns them (newest first).
    pub(crate) async fn wait_for(&mut self, user_id: &str, count: usize) -> Vec<Notification> {
        let client = self.client.clone();
        eventually(
            WAIT,
            &format!("{count} notifications for {user_id}"),
            || async {
                notifications_of(&client, user_id)
                    .await
                    .filter(|list| list.len() >= count)
            },
        )
        .await
    }
}

/// `user_id`'s notifications (up to 100, newest first), or `None` when the call fails.
pub(crate) async fn notifications_of(client: &Client, user_id: &str) -> Option<Vec<Notification>> {
    let list = client
        .clone()
        .list_notifications(ListNotificationsRequest {
            user_id: user_id.to_owned(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .ok()?
        .into_inner()
        .notifications;
    Some(list)
}

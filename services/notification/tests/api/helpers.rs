use std::time::Duration;

use shop_proto::notification::v1::notification_service_client::NotificationServiceClient;
use shop_proto::notification::v1::{ListNotificationsRequest, Notification};
use shop_shared::testing::{TestBroker, TestDatabase, eventually, grpc_channel, service_config};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) struct TestApp {
    pub(crate) client: NotificationServiceClient<Channel>,
    pub(crate) broker: TestBroker,
    shutdown: CancellationToken,
    _database: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(crate) async fn spawn_app() -> TestApp {
    shop_shared::testing::init_logs();
    let database = TestDatabase::create().await;
    let broker = TestBroker::new();
    let config = shop_notification::Config {
        service: service_config("notification", &database, &broker),
    };
    let app = shop_notification::Application::build(config)
        .await
        .expect("build the notification service");
    let addr = app.grpc_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        client: NotificationServiceClient::new(grpc_channel(addr).await),
        broker,
        shutdown,
        _database: database,
    }
}

impl TestApp {
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
            || {
                let mut client = client.clone();
                let user_id = user_id.to_owned();
                async move {
                    let list = client
                        .list_notifications(ListNotificationsRequest {
                            user_id,
                            page_size: 100,
                            page_token: String::new(),
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .notifications;
                    (list.len() >= count).then_some(list)
                }
            },
        )
        .await
    }
}

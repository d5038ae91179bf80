use std::time::Duration;

use shop_proto::notification::v1::notification_service_client::NotificationServiceClient;
use shop_proto::notification::v1::{ListNotificationsRequest, Notification};
use shop_shared::testing::{
    RunningUntilDropped, TestEnv, eventually, grpc_channel, run_until_dropped,
};
use tonic::transport::Channel;

pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) struct TestApp {
    // First, so the service stops before its database and prefix are removed.
    _running: RunningUntilDropped,
    pub(crate) client: NotificationServiceClient<Channel>,
    pub(crate) env: TestEnv,
}

pub(crate) async fn spawn_app() -> TestApp {
    let env = TestEnv::new().await;
    let app = shop_notification::Application::build(shop_notification::Config {
        service: env.config("notification"),
    })
    .await
    .expect("build the notification service");
    let client = NotificationServiceClient::new(grpc_channel(app.grpc_addr()).await);
    TestApp {
        _running: run_until_dropped(|shutdown| app.run_until_stopped(shutdown)),
        client,
        env,
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

use std::time::Duration;

use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_proto::user::v1::{CreateUserRequest, User};
use shop_shared::testing::{
    EventProbe, RunningUntilDropped, TestEnv, grpc_channel, run_until_dropped,
};
use shop_user::config::PasswordHashing;
use sqlx::PgPool;
use tonic::transport::Channel;

pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) struct TestApp {
    // First, so the service stops before its database and prefix are removed.
    _running: RunningUntilDropped,
    pub(crate) client: UserServiceClient<Channel>,
    pub(crate) events: EventProbe,
    pub(crate) db: PgPool,
    _env: TestEnv,
}

pub(crate) async fn spawn_app() -> TestApp {
    let env = TestEnv::new().await;
    let events = EventProbe::bind(&env.broker, &["user.*"]).await;
    let app = shop_user::Application::build(shop_user::Config {
        service: env.config("user"),
        // Cheap hashing: the tests are about behaviour, not the cost.
        password: PasswordHashing {
            memory_kib: 64,
            iterations: 1,
        },
    })
    .await
    .expect("build the user service");
    let client = UserServiceClient::new(grpc_channel(app.grpc_addr()).await);
    let db = shop_shared::db::connect(&env.database.url, 2)
        .await
        .unwrap();
    TestApp {
        _running: run_until_dropped(|shutdown| app.run_until_stopped(shutdown)),
        client,
        events,
        db,
        _env: env,
    }
}

pub(crate) fn create_request(email: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: email.to_owned(),
        name: "Ada Lovelace".to_owned(),
        password: "correct horse battery".to_owned(),
    }
}

impl TestApp {
    pub(crate) async fn create_user(&mut self, email: &str) -> User {
        self.client
            .create_user(create_request(email))
            .await
            .expect("CreateUser succeeds")
            .into_inner()
            .user
            .expect("a user")
    }
}

use std::time::Duration;

use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_proto::user::v1::{CreateUserRequest, User};
use shop_shared::testing::{EventProbe, TestBroker, TestDatabase, grpc_channel, service_config};
use shop_user::config::PasswordHashing;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) struct TestApp {
    pub(crate) client: UserServiceClient<Channel>,
    pub(crate) events: EventProbe,
    pub(crate) db: PgPool,
    shutdown: CancellationToken,
    _database: TestDatabase,
    _broker: TestBroker,
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
    let config = shop_user::Config {
        service: service_config("user", &database, &broker),
        // Cheap hashing: the tests are about behaviour, not the cost.
        password: PasswordHashing {
            memory_kib: 64,
            iterations: 1,
        },
    };
    let events = EventProbe::bind(&broker, &["user.*"]).await;
    let app = shop_user::Application::build(config)
        .await
        .expect("build the user service");
    let addr = app.grpc_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let db = shop_shared::db::connect(&database.url, 2).await.unwrap();
    TestApp {
        client: UserServiceClient::new(grpc_channel(addr).await),
        events,
        db,
        shutdown,
        _database: database,
        _broker: broker,
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

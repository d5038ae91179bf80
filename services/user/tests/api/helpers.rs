use std::time::Duration;

use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_proto::user::v1::{CreateUserRequest, LoginRequest, LoginResponse, User};
use shop_shared::auth::BearerToken;
use shop_shared::testing::{
    EventProbe, RunningUntilDropped, TestEnv, bearer, grpc_channel, spawn_service,
};
use shop_user::config::{AdminAccount, PasswordHashing, UserAuthConfig};
use sqlx::PgPool;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub(crate) const WAIT: Duration = Duration::from_secs(15);
pub(crate) const PASSWORD: &str = "correct horse battery";
pub(crate) const STAFF_EMAIL: &str = "staff@example.com";

pub(crate) type Client = UserServiceClient<InterceptedService<Channel, BearerToken>>;

pub(crate) struct TestApp {
    // First, so the service stops before its database and prefix are removed.
    _running: RunningUntilDropped,
    /// Sends the staff token: the tests' own calls may do everything.
    pub(crate) client: Client,
    /// Sends no token.
    pub(crate) anonymous: Client,
    pub(crate) events: EventProbe,
    pub(crate) db: PgPool,
    pub(crate) grpc_addr: std::net::SocketAddr,
    pub(crate) http_addr: std::net::SocketAddr,
    pub(crate) config: shop_user::Config,
    _env: TestEnv,
}

pub(crate) fn test_config(env: &TestEnv) -> shop_user::Config {
    shop_user::Config {
        service: env.config("user"),
        // Cheap hashing: the tests are about behaviour, not the cost.
        password: PasswordHashing {
            memory_kib: 64,
            iterations: 1,
        },
        password_checks: shop_user::config::PasswordCheckLimits::default(),
        auth: UserAuthConfig {
            admin: Some(AdminAccount {
                email: STAFF_EMAIL.into(),
                password: PASSWORD.to_owned().into(),
            }),
            ..UserAuthConfig::default()
        },
    }
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub(crate) async fn spawn_app_with(adjust: impl FnOnce(&mut shop_user::Config)) -> TestApp {
    let env = TestEnv::new().await;
    let events = EventProbe::bind(&env.broker, &["user.*"]).await;
    let mut config = test_config(&env);
    adjust(&mut config);
    let app = shop_user::Application::build(config.clone())
        .await
        .expect("build the user service");
    let service = spawn_service((app.grpc_addr(), app.http_addr()), |s| {
        app.run_until_stopped(s)
    })
    .await;
    let (grpc_addr, http_addr) = (service.grpc_addr, service.http_addr);
    let staff_token = BearerToken::new();
    let client = UserServiceClient::with_interceptor(service.channel.clone(), staff_token.clone());
    let anonymous = UserServiceClient::with_interceptor(service.channel, BearerToken::new());
    let db = shop_shared::db::connect(&env.database.url, 2)
        .await
        .unwrap();
    let mut app = TestApp {
        _running: service.running,
        client,
        anonymous,
        events,
        db,
        grpc_addr,
        http_addr,
        config,
        _env: env,
    };
    if app.config.auth.admin.is_some() {
        let staff = app
            .login(STAFF_EMAIL, PASSWORD)
            .await
            .expect("staff logs in");
        staff_token.set(&staff.access_token).unwrap();
    }
    app
}

pub(crate) fn create_request(email: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: email.to_owned(),
        name: "Ada Lovelace".to_owned(),
        password: PASSWORD.to_owned(),
        ..Default::default()
    }
}

impl TestApp {
    /// The test's broker (for probes of other keys than `events`).
    pub(crate) fn env_broker(&self) -> &shop_shared::testing::TestBroker {
        &self._env.broker
    }

    pub(crate) async fn create_user(&mut self, email: &str) -> User {
        self.client
            .create_user(create_request(email))
            .await
            .expect("CreateUser succeeds")
            .into_inner()
            .user
            .expect("a user")
    }

    pub(crate) async fn login(
        &mut self,
        email: &str,
        password: &str,
    ) -> Result<LoginResponse, tonic::Status> {
        self.anonymous
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// A client sending `token`.
    pub(crate) async fn client_with(&self, token: &str) -> Client {
        UserServiceClient::with_interceptor(grpc_channel(self.grpc_addr).await, bearer(token))
    }

    /// The JWK Set served on the HTTP port.
    pub(crate) async fn jwks(&self) -> shop_shared::auth::JwkSet {
        use shop_shared::auth::KeySource as _;
        shop_shared::auth::jwks_client::HttpJwks::new(&format!(
            "http://{}/.well-known/jwks.json",
            self.http_addr
        ))
        .unwrap()
        .fetch()
        .await
        .expect("the JWK Set is served")
    }
}

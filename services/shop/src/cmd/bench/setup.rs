//! The system under test and its seed data.
//!
//! In-process (the default), the four services start in this process on fresh databases
//! (`shop_bench_<service>`, recreated each run and dropped at its end) under their own broker prefix, with the same
//! defaults as `shop up`. With `--target`, running services are driven instead and their
//! databases are read from the usual environment variables.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use shop_proto::inventory::v1::AdjustStockRequest;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::user::v1::CreateUserRequest;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_shared::messaging::Names;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::system::{Addresses, BuiltSystem, RunningSystem, SystemConfig};

/// The system being measured.
#[derive(Debug)]
pub struct Target {
    /// Where the services listen.
    pub addresses: Addresses,
    /// Their HTTP ports (`/metrics`).
    pub http: Addresses,
    /// The broker URL.
    pub amqp_url: String,
    /// Broker names (the prefix of this run, or the environment's).
    pub names: Names,
    /// The four databases, in the order user, order, inventory, notification.
    pub pools: Pools,
    /// A marker unique to this run, in every product id it creates.
    pub run_id: String,
    /// The staff account that stocks the products (AdjustStock is staff-only).
    pub staff: shop_user::config::AdminAccount,
    running: Option<RunningSystem>,
}

/// A seeded customer and the `authorization` metadata of their own token (each order is
/// placed by its customer, as in production).
#[derive(Debug, Clone)]
pub struct Customer {
    /// The user id.
    pub user_id: String,
    /// `Bearer <access token>`.
    pub authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

/// Pools on the four service databases.
#[derive(Debug, Clone)]
pub struct Pools {
    /// shop_user.
    pub user: PgPool,
    /// shop_order.
    pub order: PgPool,
    /// shop_inventory.
    pub inventory: PgPool,
    /// shop_notification.
    pub notification: PgPool,
}

impl Pools {
    /// All four.
    pub fn all(&self) -> [&PgPool; 4] {
        [&self.user, &self.order, &self.inventory, &self.notification]
    }
}

/// Starts (or finds) the system under test.
pub async fn start(target: Option<&str>) -> anyhow::Result<Target> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut config = SystemConfig::from_env()?;
    let staff = match (&config.user.auth.admin, target) {
        (Some(admin), _) => admin.clone(),
        // In process, the run makes its own staff account in its fresh user database.
        (None, None) => {
            let admin = shop_user::config::AdminAccount {
                email: format!("bench-staff-{run_id}@example.com"),
                password: uuid::Uuid::new_v4().to_string().into(),
            };
            config.user.auth.admin = Some(admin.clone());
            admin
        }
        (None, Some(_)) => anyhow::bail!(
            "--target needs the target's staff account to stock products: set SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD"
        ),
    };
    let (addresses, http, running) = match target {
        Some(host) => {
            let addr = |port: u16| -> anyhow::Result<std::net::SocketAddr> {
                use std::net::ToSocketAddrs as _;
                format!("{host}:{port}")
                    .to_socket_addrs()?
                    .next()
                    .with_context(|| format!("{host}:{port} does not resolve"))
            };
            let addresses = Addresses {
                user: addr(50051)?,
                order: addr(50052)?,
                inventory: addr(50053)?,
                notification: addr(50054)?,
            };
            let http = Addresses {
                user: addr(9091)?,
                order: addr(9092)?,
                inventory: addr(9093)?,
                notification: addr(9094)?,
            };
            (addresses, http, None)
        }
        None => {
            let prefix = format!("bench{run_id}_");
            let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            for service in [
                &mut config.user.service,
                &mut config.order.service,
                &mut config.inventory.service,
                &mut config.notification.service,
            ] {
                service.database_url = fresh_database(&service.database_url, service.name).await?;
                service.grpc_addr = local;
                service.http_addr = local;
                service.amqp.prefix = prefix.clone();
            }
            let built = BuiltSystem::build(config.clone()).await?;
            let (addresses, http) = (built.addresses(), built.http_addresses());
            (addresses, http, Some(built.spawn(CancellationToken::new())))
        }
    };
    let connect = |url: String| async move {
        shop_shared::db::connect(&url, 4)
            .await
            .with_context(|| format!("cannot connect to {}", shop_shared::diagnose::redact(&url)))
    };
    let pools = Pools {
        user: connect(config.user.service.database_url.clone()).await?,
        order: connect(config.order.service.database_url.clone()).await?,
        inventory: connect(config.inventory.service.database_url.clone()).await?,
        notification: connect(config.notification.service.database_url.clone()).await?,
    };
    Ok(Target {
        addresses,
        http,
        amqp_url: config.order.service.amqp.url.clone(),
        names: config.order.service.names(),
        pools,
        run_id,
        staff,
        running,
    })
}

/// `postgres://…/shop_order` → a freshly created `postgres://…/shop_bench_order`.
async fn fresh_database(url: &str, service: &str) -> anyhow::Result<String> {
    let name = format!("shop_bench_{service}");
    let fresh = replace_database(url, &name);
    let options: sqlx::postgres::PgConnectOptions = fresh.parse()?;
    use sqlx::{ConnectOptions as _, Connection as _};
    let mut admin = options
        .database("postgres")
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot reach PostgreSQL at {}",
                shop_shared::diagnose::redact(url)
            )
        })?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(fresh)
}

fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base
        .rfind('/')
        .filter(|i| *i > base.find("://").map_or(0, |s| s + 2))
        .unwrap_or(base.len());
    let mut out = format!("{}/{database}", &base[..cut]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Target {
    /// Stops in-process services and removes this run's queues, exchange and databases.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        if let Some(running) = self.running.take() {
            running.stop().await?;
            let conn = shop_shared::messaging::connection::connect(&self.amqp_url, "bench-cleanup")
                .await?;
            let channel = conn.create_channel().await?;
            for service in ["order", "inventory", "notification"] {
                for queue in [self.names.queue(service), self.names.dlq(service)] {
                    let _ = channel.queue_delete(&queue, Default::default()).await;
                }
                for delay in shop_shared::messaging::MessagingConfig::default()
                    .retry
                    .delays()
                {
                    let _ = channel
                        .queue_delete(&self.names.retry_queue(service, delay), Default::default())
                        .await;
                }
            }
            let _ = channel
                .exchange_delete(&self.names.exchange(), Default::default())
                .await;
            let _ = conn.close(200, "bench done").await;
            // The run's own databases (`shop_bench_*`, made fresh at its start) go too.
            for pool in self.pools.all() {
                let options = (*pool.connect_options()).clone();
                pool.close().await;
                let Some(name) = options.get_database().map(str::to_owned) else {
                    continue;
                };
                use sqlx::{ConnectOptions as _, Connection as _};
                if let Ok(mut admin) = options.database("postgres").connect().await {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    if let Err(e) = sqlx::query(&drop).execute(&mut admin).await {
                        eprintln!("could not drop the benchmark database {name}: {e}");
                    }
                    let _ = admin.close().await;
                }
            }
        }
        Ok(())
    }
}

/// Users and products placed before the load.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The customers, logged in.
    pub customers: Vec<Customer>,
    /// Product ids.
    pub products: Vec<String>,
    /// Units put in per product.
    pub stock: BTreeMap<String, i64>,
}

/// Creates `users` users and logs each in, stocks each product with what the planned orders
/// need (as staff), then waits until the order service knows every user.
pub async fn seed(
    target: &Target,
    users: usize,
    products: &[String],
    stock: &BTreeMap<String, i64>,
) -> anyhow::Result<Seed> {
    let user_channel = channel(target.addresses.user).await?;
    let inventory_channel = channel(target.addresses.inventory).await?;
    let mut ids = Vec::with_capacity(users);
    for chunk in (0..users).collect::<Vec<_>>().chunks(8) {
        let calls = chunk.iter().map(|i| {
            let mut client = UserServiceClient::new(user_channel.clone());
            let email = format!("bench-{}-{i}@example.com", target.run_id);
            async move {
                client
                    .create_user(CreateUserRequest {
                        email,
                        name: format!("Bench User {i}"),
                        password: "benchmark password".into(),
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().user.map(|u| u.user_id).unwrap_or_default())
            }
        });
        for result in futures::future::join_all(calls).await {
            ids.push(result.context("CreateUser failed while seeding")?);
        }
    }
    let mut customers = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(8).enumerate() {
        let (c, chunk) = chunk;
        let logins = chunk.iter().enumerate().map(|(j, user_id)| {
            let client = UserServiceClient::new(user_channel.clone());
            let email = format!("bench-{}-{}@example.com", target.run_id, c * 8 + j);
            async move {
                let token = login(client, &email, "benchmark password").await?;
                anyhow::Ok(Customer {
                    user_id: user_id.clone(),
                    authorization: shop_shared::auth::client::bearer_value(&token)?,
                })
            }
        });
        for customer in futures::future::join_all(logins).await {
            customers.push(customer.context("Login failed while seeding")?);
        }
    }
    let staff_token = login(
        UserServiceClient::new(user_channel.clone()),
        &target.staff.email,
        secrecy::ExposeSecret::expose_secret(&target.staff.password),
    )
    .await
    .context("the staff account cannot log in (check SHOP_ADMIN_EMAIL / SHOP_ADMIN_PASSWORD)")?;
    let mut inventory = InventoryServiceClient::with_interceptor(inventory_channel, {
        let bearer = shop_shared::auth::BearerToken::new();
        bearer.set(&staff_token)?;
        bearer
    });
    for product in products {
        let units = stock.get(product).copied().unwrap_or(0);
        if units > 0 {
            inventory
                .adjust_stock(AdjustStockRequest {
                    product_id: product.clone(),
                    delta: units,
                })
                .await
                .context("AdjustStock failed while seeding")?;
        }
    }
    // The order service must have applied every user.created before orders can be placed.
    let uuids: Vec<uuid::Uuid> = ids.iter().filter_map(|id| id.parse().ok()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let known: i64 =
            sqlx::query_scalar("SELECT count(*) FROM customers WHERE customer_id = ANY($1)")
                .bind(&uuids)
                .fetch_one(&target.pools.order)
                .await?;
        if known as usize >= uuids.len() {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the order service knows {known} of {} seeded users after 60 s",
            uuids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Seed {
        customers,
        products: products.to_vec(),
        stock: stock.clone(),
    })
}

/// Logs in and returns the access token.
pub async fn login(
    mut client: UserServiceClient<tonic::transport::Channel>,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let response = client
        .login(shop_proto::user::v1::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        })
        .await
        .with_context(|| format!("Login as {email} failed"))?;
    Ok(response.into_inner().access_token)
}

/// A gRPC channel to `addr`.
pub async fn channel(addr: std::net::SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

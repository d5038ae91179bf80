//! A service's start: its database opened (created, migrated), the broker checked, its queues
//! declared and every other consumer's queue made sure of, its listeners bound — each failure
//! said in one line naming the setting to change.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::diagnose::{self, redact};
use crate::messaging::{Links, OutboxWaker, Subscriptions, connection, topology};
use crate::metrics::Metrics;
use crate::retention::Purge;

use super::{ServiceConfig, ServiceParts};

/// How long start-up waits for PostgreSQL or RabbitMQ to answer.
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);

/// Creates the service's database if it is missing, connects, and migrates it (the messaging
/// tables and `migrator`). A failure is one line saying whether PostgreSQL was unreachable,
/// refused, or the URL malformed ([`crate::diagnose`]).
pub async fn open_database(config: &ServiceConfig, migrator: &Migrator) -> anyhow::Result<PgPool> {
    let url = &config.database_url;
    let setting = format!("{}_DATABASE_URL", config.name.to_uppercase());
    let diagnose = |e: anyhow::Error| match e.downcast_ref::<sqlx::Error>() {
        Some(sqlx_error) => anyhow::Error::new(diagnose::postgres(url, &setting, sqlx_error)),
        None => e.context(format!("{setting} ({})", redact(url))),
    };
    let opened = tokio::time::timeout(CONNECT_DEADLINE, async {
        crate::db::create_database_if_missing(url)
            .await
            .map_err(diagnose)?;
        let pool = crate::db::connect(url, config.pool_size)
            .await
            .map_err(diagnose)?;
        crate::db::migrate(&pool, migrator)
            .await
            .with_context(|| format!("failed to migrate the {} database", config.name))?;
        anyhow::Ok(pool)
    })
    .await;
    opened.unwrap_or_else(|_| {
        Err(diagnose::StartupError {
            dependency: diagnose::Dependency::Postgres,
            problem: diagnose::Problem::Unreachable,
            url: redact(url),
            setting: setting.clone(),
            detail: format!("no answer within {CONNECT_DEADLINE:?}"),
            check: "",
        }
        .into())
    })
}

/// Checks that the broker answers (and declares the exchange), failing fast with one line
/// saying whether RabbitMQ was unreachable, refused, or `AMQP_URL` malformed.
pub async fn check_broker(config: &ServiceConfig) -> anyhow::Result<()> {
    let url = &config.amqp.url;
    diagnose::check_amqp_url(url, "AMQP_URL")?;
    let checked = tokio::time::timeout(CONNECT_DEADLINE, async {
        let name = config.names().connection_name(config.name, "startup");
        let conn = connection::connect(url, &name)
            .await
            .map_err(|e| diagnose::rabbitmq(url, "AMQP_URL", &e))?;
        let channel = conn.create_channel().await?;
        topology::declare_exchange(&channel, &config.names()).await?;
        conn.close(200, "checked").await?;
        anyhow::Ok(())
    })
    .await;
    checked.unwrap_or_else(|_| {
        Err(diagnose::StartupError {
            dependency: diagnose::Dependency::RabbitMq,
            problem: diagnose::Problem::Unreachable,
            url: redact(url),
            setting: "AMQP_URL".into(),
            detail: format!("no answer within {CONNECT_DEADLINE:?}"),
            check: "",
        }
        .into())
    })
}

/// Declares the service's own queues (its row of the table of consumers, which its handlers
/// must match, with its retry queues) and makes sure every other consuming service's queue
/// exists, so that what this service publishes before a consumer first started waits for it.
async fn declare_topology(
    config: &ServiceConfig,
    subscriptions: Option<&Subscriptions>,
) -> anyhow::Result<()> {
    let names = config.names();
    let replicas = config.messaging.queue_replicas;
    if let Some(subscriptions) = subscriptions {
        topology::check_subscriptions(
            config.name,
            &subscriptions.routing_keys(),
            subscriptions.moved_from_keys(),
        )
        .map_err(anyhow::Error::msg)?;
    }
    let name = names.connection_name(config.name, "declare");
    let conn = connection::connect(&config.amqp.url, &name).await?;
    if let Some(subscriptions) = subscriptions {
        let channel = conn.create_channel().await?;
        topology::declare_consumer(
            &channel,
            &names,
            config.name,
            &subscriptions.routing_keys(),
            &config.messaging.retry,
            replicas,
        )
        .await?;
        topology::unbind(
            &channel,
            &names,
            config.name,
            subscriptions.moved_from_keys(),
        )
        .await?;
        let _ = channel.close(200, "declared").await;
    }
    for consumer in topology::CONSUMERS {
        if consumer.service == config.name {
            continue;
        }
        let queue = names.queue(consumer.service);
        match topology::ensure_queue(&conn, &names, consumer, replicas).await? {
            topology::Ensured::Existed => {}
            topology::Ensured::Created => {
                tracing::info!(queue = %queue, "declared the queue of a service that has not started yet: its events wait there")
            }
            topology::Ensured::Refused(error) => {
                tracing::warn!(queue = %queue, error = %error, "the queue of another service is missing and this broker user may not declare it: run `shop topology apply` with a user that may, or events for it published before it starts are returned unroutable")
            }
        }
    }
    conn.close(200, "declared").await?;
    Ok(())
}

/// Prepares everything a service needs before it can serve: the database (created,
/// migrated), the broker (reachable, the exchange and the service's queues declared, so
/// events published from now on are kept for it), and the bound gRPC listener.
pub async fn prepare(
    config: ServiceConfig,
    migrator: &Migrator,
    subscriptions: Option<Subscriptions>,
) -> anyhow::Result<ServiceParts> {
    let config_name = config.name;
    let pool = open_database(&config, migrator).await?;
    check_broker(&config).await?;
    declare_topology(&config, subscriptions.as_ref())
        .await
        .context("failed to declare the service's queues")?;
    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("failed to bind the gRPC address {}", config.grpc_addr))?;
    let http_listener = TcpListener::bind(config.http_addr).await.with_context(|| {
        format!(
            "failed to bind the HTTP address {} (set {}_HTTP_ADDR)",
            config.http_addr,
            config.name.to_uppercase()
        )
    })?;
    let owned_links = config.shared_links.is_none();
    let links = config
        .shared_links
        .clone()
        .unwrap_or_else(|| Links::new(&config.amqp.url, &config.names(), config.name));
    // The inbox grows with every message applied; a service that consumes nothing has none.
    let purges = subscriptions
        .iter()
        .map(|_| Purge::inbox(config.messaging.inbox_retention))
        .collect();
    Ok(ServiceParts {
        links,
        owned_links,
        purges,
        config,
        pool,
        listener,
        http_listener,
        subscriptions,
        waker: OutboxWaker::new(),
        metrics: Metrics::new(config_name),
    })
}

//! What the operator commands share: one connection to the broker from `AMQP_URL` and
//! `AMQP_PREFIX` ([`broker`]), the decoded view of a message ([`decoded`]) — for `shop dlq`,
//! `shop events tail`, `shop topology` — and a service's database as the service reads its URL
//! ([`service_database`]), for `shop schedule` and `shop outbox`.

pub mod broker;
pub mod decoded;

use anyhow::Context as _;

use crate::system::ServiceName;

/// The database URL of `service`, from the environment as the service reads it.
pub fn database_url(service: ServiceName) -> anyhow::Result<String> {
    Ok(match service {
        ServiceName::User => shop_user::Config::from_env()?.service.database_url,
        ServiceName::Order => shop_order::Config::from_env()?.service.database_url,
        ServiceName::Inventory => shop_inventory::Config::from_env()?.service.database_url,
        ServiceName::Notification => shop_notification::Config::from_env()?.service.database_url,
    })
}

/// A small pool on `service`'s database; a failure names the URL (password masked) and the
/// setting to change.
pub async fn service_database(service: ServiceName) -> anyhow::Result<sqlx::PgPool> {
    let url = database_url(service)?;
    let setting = format!("{}_DATABASE_URL", service.as_str().to_uppercase());
    shop_shared::db::connect(&url, 2).await.with_context(|| {
        format!(
            "cannot reach the {} database at {} (set {setting})",
            service.as_str(),
            shop_shared::diagnose::redact(&url)
        )
    })
}

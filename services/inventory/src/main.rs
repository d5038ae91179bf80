//! The inventory service alone, for deployment: `shop-inventory`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shop_shared::telemetry::init("inventory")?;
    let config = shop_inventory::Config::from_env()?;
    let app = shop_inventory::Application::build(config).await?;
    // The service logs its own "service stopped" line with what it drained.
    app.run_until_stopped(shop_shared::shutdown::on_signal())
        .await?;
    Ok(())
}

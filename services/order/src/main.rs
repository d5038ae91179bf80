//! The order service alone, for deployment: `shop-order`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shop_shared::telemetry::init("order")?;
    let config = shop_order::Config::from_env()?;
    let app = shop_order::Application::build(config).await?;
    // The service logs its own "service stopped" line with what it drained.
    app.run_until_stopped(shop_shared::shutdown::on_signal())
        .await?;
    Ok(())
}

//! The notification service alone, for deployment: `shop-notification`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shop_shared::telemetry::init("notification")?;
    let config = shop_notification::Config::from_env()?;
    let app = shop_notification::Application::build(config).await?;
    // The service logs its own "service stopped" line with what it drained.
    app.run_until_stopped(shop_shared::shutdown::on_signal())
        .await?;
    Ok(())
}

//! The user service alone, for deployment: `shop-user`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shop_shared::telemetry::init("user")?;
    let config = shop_user::Config::from_env()?;
    let app = shop_user::Application::build(config).await?;
    // The service logs its own "service stopped" line with what it drained.
    app.run_until_stopped(shop_shared::shutdown::on_signal())
        .await?;
    Ok(())
}

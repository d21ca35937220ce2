//! The event-api binary: reads the configuration, installs logging and the signal handler, binds
//! the listener and runs [`event_api::serve`].

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    camrec_shared::telemetry::init("info,sqlx=warn");
    let config = event_api::Config::from_env().context("configuration")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = camrec_shared::shutdown::on_signal();
    event_api::serve(config, listener, shutdown).await?;
    Ok(())
}

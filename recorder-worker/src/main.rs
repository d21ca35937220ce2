//! The `recorder-worker` binary: configuration from the environment, logging, signals, then
//! [`recorder_worker::run`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    camrec_shared::telemetry::init("info");
    let config = recorder_worker::Config::from_env()?;
    let shutdown = camrec_shared::shutdown::on_signal();
    recorder_worker::run(config, shutdown).await?;
    Ok(())
}

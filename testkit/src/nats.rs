//! A nats-server with JetStream for one test: its own port and store directory, so a test can
//! stop, kill -9 and restart it without touching anyone else's streams.

use crate::process::ServerProcess;
use crate::{find_binary, free_port, wait_until};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    binary: PathBuf,
    process: Option<ServerProcess>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until JetStream answers.
    pub async fn start() -> anyhow::Result<Self> {
        let mut s = Self {
            port: free_port(),
            store: tempfile::Builder::new().prefix("camrec-nats-").tempdir()?,
            binary: find_binary("nats-server", "NATS_SERVER_BIN")?,
            process: None,
        };
        s.spawn().await?;
        Ok(s)
    }

    /// The server's JetStream store directory (what NATS keeps on disk).
    pub fn store_dir(&self) -> &std::path::Path {
        self.store.path()
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.pid())
    }

    /// Graceful stop (SIGTERM); the store is kept for [`NatsServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// `kill -9`; the store is kept for [`NatsServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-sd",
        ])
        .arg(self.store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.process = Some(ServerProcess::spawn("nats-server", cmd)?);
        let url = self.url();
        wait_until(
            Duration::from_secs(15),
            "nats-server with JetStream",
            || {
                let url = url.clone();
                async move {
                    // A raw request: async-nats' typed account info does not parse 2.9's reply.
                    let client = async_nats::connect(&url).await.ok()?;
                    let reply = client.request("$JS.API.INFO", "".into()).await.ok()?;
                    let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
                    info.get("error").is_none().then_some(())
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_kills_and_restarts_with_its_streams() {
        let mut nats = NatsServer::start().await.unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        js.publish("t.1", "x".into()).await.unwrap().await.unwrap();
        nats.kill();
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", nats.port()))
            .await
            .is_err());
        nats.restart().await.unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("T").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 1);
    }
}

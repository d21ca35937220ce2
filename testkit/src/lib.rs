//! Test and lab infrastructure: the real parts camrec talks to, started on loopback and stopped
//! when dropped.
//!
//! - [`NatsServer`]: a nats-server with JetStream on a free port and its own store directory
//!   (stop, kill -9 and restart it on the same port and store), with camrec's users and
//!   permissions ([`NatsUser`]) and optionally TLS from a test CA ([`tls::TestCa`]).
//! - [`TestDb`]: a fresh PostgreSQL database on the machine's server, dropped on drop.
//! - [`S3Server`]: `s3s-fs`, an S3-protocol server that checks signatures, with one bucket.
//! - [`FakeCamera`]: a GStreamer RTSP server playing a live test pattern (`fake_camera.py`),
//!   with a username and password, in the codec profiles real cameras use.
//!
//! Every child process gets a parent-death signal, so a test that panics or is killed leaves no
//! server behind, and is killed and reaped on drop.

mod process;

pub mod camera;
pub mod db;
pub mod nats;
pub mod s3;
pub mod tls;

pub use camera::{AudioCodec, CameraProfile, FakeCamera, Sessions, VideoCodec};
pub use db::TestDb;
pub use nats::{NatsServer, NatsUser};
pub use s3::S3Server;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The workspace root (where `Cargo.toml` and `testkit/` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub async fn wait_for_port(port: u16, timeout: Duration, what: &str) -> anyhow::Result<()> {
    wait_until(timeout, what, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await
}

/// Finds an executable: `$NAME_PATH`-style override first, then PATH, then `~/.cargo/bin`.
pub(crate) fn find_binary(name: &str, env_override: &str) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var(env_override) {
        return Ok(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.extend(["/usr/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{name} not found on PATH (run scripts/install-deps.sh)"))
}

/// Writes a small faststart MP4 of `secs` seconds (a 160x90 test pattern at 10 fps) to `path`
/// with the ffmpeg on `PATH`: a playable clip for tests that need no camera.
pub fn make_test_clip(path: &std::path::Path, secs: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x90:rate=10",
        ])
        .args(["-t", &secs.to_string(), "-movflags", "+faststart"])
        .arg(path)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "ffmpeg could not make a test clip: {status}"
    );
    Ok(())
}

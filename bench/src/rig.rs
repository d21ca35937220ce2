//! The system under test, on loopback: lab's throwaway PostgreSQL cluster, a nats-server, the S3
//! server and fake cameras from testkit, and event-api plus one recorder-worker as real processes
//! (lab's service binaries, release builds under `cargo run --release`).
//!
//! Unlike lab's fault cluster, every service runs with its production defaults (database pool,
//! progress interval, timeouts, segment length); only what a run must set is set: addresses,
//! secrets, storage, and the ring's margin (`RING_MARGIN_SEC`: the default in a full run, short
//! in the smoke). The worker serves site [`RECORDING_SITE`] and captures every camera of it from
//! its creation on; cameras on [`IDLE_SITE`] have no worker, so their events stay `PENDING` and
//! cost nothing but the API, the database and the relay (P1, P2, P6).

use lab::cluster::ServiceBinaries;
use lab::pg::PgCluster;
use lab::process::ChildProcess;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::{CameraProfile, FakeCamera, NatsServer, S3Server};

/// The key camera passwords are sealed with between this harness's event-api and workers
/// (a test key: 32 bytes of 7).
const TEST_CAMERA_KEY: &str = "test:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The site the worker serves.
pub const RECORDING_SITE: &str = "default";
/// A site no worker serves.
pub const IDLE_SITE: &str = "bench-idle";
/// The database event-api uses.
pub const DATABASE: &str = "camrec";
pub const ADMIN_USERNAME: &str = "bench-admin";

/// A service process and how to start it again.
pub struct Service {
    name: &'static str,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    process: Option<ChildProcess>,
}

impl Service {
    fn start(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.process = Some(ChildProcess::spawn(self.name, cmd, &self.log)?);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildProcess::pid)
    }

    /// SIGTERM, up to `grace` for a clean exit, then SIGKILL; reaped.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(mut p) = self.process.take() {
            p.stop_with(Signal::SIGTERM, grace).await;
        }
    }
}

/// Everything a run needs.
pub struct Rig {
    pub pg: PgCluster,
    pub nats: NatsServer,
    pub s3: S3Server,
    pub cameras: Vec<FakeCamera>,
    pub api: Service,
    pub worker: Service,
    pub api_url: String,
    pub admin_password: String,
    pub record_dir: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Rig {
    /// Starts every part with `cameras` 360p H.264+AAC cameras and a worker whose rings keep
    /// `ring_margin_sec` beyond each camera's pre-roll, and waits until event-api answers.
    pub async fn start(
        cameras: usize,
        ring_margin_sec: u64,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)?;
        let binaries = ServiceBinaries::build_and_locate()?;
        let pg = PgCluster::start(log_dir, DATABASE).await?;
        let nats = NatsServer::start().await?;
        let s3 = S3Server::start().await?;
        let mut cams = Vec::with_capacity(cameras);
        for _ in 0..cameras {
            // Shared, as a real camera's encoder: a second client (a baseline's FFmpeg) costs the
            // camera what one does, so the machine's load does not grow with the baselines.
            cams.push(FakeCamera::start(CameraProfile::default().shared()).await?);
        }
        let scratch = tempfile::Builder::new().prefix("camrec-bench-").tempdir()?;
        let record_dir = scratch.path().join("recordings");
        let port = testkit::free_port();
        let admin_password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let mut api_env = pairs(&[
            ("DATABASE_URL", pg.url(DATABASE)),
            ("NATS_URL", nats.url_as(testkit::NatsUser::EventApi)),
            ("CAMERA_ALLOWED_NETWORKS", "127.0.0.0/8".into()),
            // Event-api seals camera passwords with it, the workers open them.
            ("CAMERA_SECRET_KEY", TEST_CAMERA_KEY.into()),
            ("HOST", "127.0.0.1".into()),
            ("PORT", port.to_string()),
            (
                "JWT_SECRET",
                format!("bench-{}", uuid::Uuid::new_v4().simple()),
            ),
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", admin_password.clone()),
            ("ACCESS_TOKEN_TTL_SEC", "86400".into()),
            ("RUST_LOG", "info,sqlx=warn".into()),
        ]);
        api_env.extend(s3.storage_env());
        let mut worker_env = pairs(&[
            ("NATS_URL", nats.url_as(testkit::NatsUser::Worker)),
            ("CAMERA_ALLOWED_NETWORKS", "127.0.0.0/8".into()),
            // Event-api seals camera passwords with it, the workers open them.
            ("CAMERA_SECRET_KEY", TEST_CAMERA_KEY.into()),
            ("SITE", RECORDING_SITE.into()),
            ("WORKER_ID", "bench-worker".into()),
            ("PORT", "0".into()),
            ("RECORD_DIR", record_dir.display().to_string()),
            ("RING_MARGIN_SEC", ring_margin_sec.to_string()),
            ("RUST_LOG", "info".into()),
        ]);
        worker_env.extend(s3.storage_env());
        let service = |name, binary: &Path, env| Service {
            name,
            binary: binary.to_owned(),
            env,
            log: log_dir.join(format!("{name}.log")),
            process: None,
        };
        let mut rig = Self {
            pg,
            nats,
            s3,
            cameras: cams,
            api: service("event-api", &binaries.event_api, api_env),
            worker: service("recorder-worker", &binaries.recorder_worker, worker_env),
            api_url: format!("http://127.0.0.1:{port}"),
            admin_password,
            record_dir,
            _scratch: scratch,
        };
        rig.start_api().await?;
        rig.worker.start()?;
        Ok(rig)
    }

    /// Starts event-api (again) and waits until `/health` answers.
    pub async fn start_api(&mut self) -> anyhow::Result<()> {
        self.api.start()?;
        let url = format!("{}/health", self.api_url);
        let client = reqwest::Client::new();
        testkit::wait_until(Duration::from_secs(60), "event-api /health", || {
            let req = client.get(&url).timeout(Duration::from_secs(2)).send();
            async move {
                req.await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await
    }

    /// The URL of event-api's database.
    pub fn database_url(&self) -> String {
        self.pg.url(DATABASE)
    }

    /// Stops the services gracefully; the servers go when the rig is dropped.
    pub async fn shutdown(mut self) {
        self.worker.stop(Duration::from_secs(30)).await;
        self.api.stop(Duration::from_secs(10)).await;
    }
}

fn pairs(items: &[(&str, String)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

//! The whole of camrec on loopback, each part on its own free port and killed on drop: a
//! throwaway PostgreSQL cluster, a nats-server, the S3-protocol server, N fake cameras (360p, one
//! keyframe a second), event-api and K recorder-workers as real processes (built by cargo from
//! this workspace). The workers learn the cameras from event-api's camera catalog and share them
//! out (up to `MAX_CAMERAS` each), one capture per camera.
//!
//! Every part can be crashed and brought back, which is what [`crate::faults`] does. A worker
//! comes back with the same `WORKER_ID` and `RECORD_DIR`, so its crash recovery runs.

use crate::pg::{PgCluster, PgError};
use crate::process::{self, ChildProcess, ProcessError};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::{CameraProfile, FakeCamera, NatsServer, NatsUser, S3Server};

/// The key camera passwords are sealed with between this harness's event-api and workers
/// (a test key: 32 bytes of 7).
const TEST_CAMERA_KEY: &str = "test:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// A part of the cluster that could not be built, started or restarted.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot find this executable's target directory: {0}")]
    TargetDir(std::io::Error),
    #[error("`cargo build -p event-api -p recorder-worker` failed ({0})")]
    Build(String),
    #[error("service binary {0} not found (build it, or set LAB_BIN_DIR)")]
    MissingBinary(PathBuf),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{what}: {source}")]
    Part {
        what: &'static str,
        source: anyhow::Error,
    },
    #[error("{0} did not become healthy within {1:?} (see its log in {2})")]
    NotHealthy(String, Duration, PathBuf),
    #[error("creating {0}: {1}")]
    Io(String, std::io::Error),
}

/// Where the service binaries are.
#[derive(Clone, Debug)]
pub struct ServiceBinaries {
    pub event_api: PathBuf,
    pub recorder_worker: PathBuf,
}

impl ServiceBinaries {
    /// `LAB_BIN_DIR` when set. Otherwise the binaries next to this executable (cargo puts a
    /// crate's bins, tests and the workspace's bins under one `<target>/<profile>/`), built first
    /// with `cargo build` of those two (`$CARGO`, else `cargo` on PATH) in
    /// the same profile and target directory. Cargo does not hold its build lock while tests
    /// run, so a test may call it; in a workspace test run the binaries are already built and
    /// this takes a second.
    pub fn build_and_locate() -> Result<Self, ClusterError> {
        if let Ok(dir) = std::env::var("LAB_BIN_DIR") {
            return Self::in_dir(Path::new(&dir));
        }
        let exe = std::env::current_exe().map_err(ClusterError::TargetDir)?;
        let mut profile_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir.pop();
        }
        if let Some(target) = profile_dir.parent() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet"])
                .env("CARGO_TARGET_DIR", target)
                .current_dir(testkit::workspace_root());
            // What cargo sets for the crate running now (this test or the bench) is not the
            // build's: ring's build script reruns when CARGO_MANIFEST_DIR differs, so
            // inheriting it made this build and the next top-level one rebuild each other.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if is_crate_env(&key) {
                    cmd.env_remove(key.as_ref());
                }
            }
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                // The bench's release build: `--bin` without `-p` selects the whole workspace,
                // as `cargo run --release --bin bench` does, so both builds resolve the same
                // features and share their artifacts instead of rebuilding each other's.
                cmd.args([
                    "--release",
                    "--bin",
                    "event-api",
                    "--bin",
                    "recorder-worker",
                ]);
            } else {
                cmd.args(["-p", "event-api", "-p", "recorder-worker"]);
            }
            match cmd.status() {
                Ok(status) if status.success() => {}
                Ok(status) => return Err(ClusterError::Build(status.to_string())),
                // No cargo on this machine: use the binaries as they are.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ClusterError::Build(e.to_string())),
            }
        }
        Self::in_dir(&profile_dir)
    }

    fn in_dir(dir: &Path) -> Result<Self, ClusterError> {
        let find = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(ClusterError::MissingBinary(p))
            }
        };
        Ok(Self {
            event_api: find("event-api")?,
            recorder_worker: find("recorder-worker")?,
        })
    }
}

/// The variables cargo sets for a crate it runs (its manifest, package, binary names), which a
/// nested `cargo build` must not inherit.
fn is_crate_env(key: &str) -> bool {
    matches!(
        key,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
    ) || key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_BIN_EXE_")
}

/// The lab's event-api `STALE_PLAYBACK_SEC` unless a run sets its own (shorter than the
/// service's 120 s default, so a worker that never comes back is failed sooner).
pub const STALE_PLAYBACK_SEC: u64 = 60;

/// The shape of the cluster and the service settings of the run.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub workers: usize,
    pub cameras: usize,
    /// The workers' `MAX_CAMERAS`: cameras one worker captures at once.
    pub max_cameras: usize,
    /// The workers' `RESTART_BACKOFF_MAX_SEC`: the longest wait before a capture whose camera
    /// dropped tries again (short, so a clip's gap is about as long as the camera was away).
    pub restart_backoff_max_sec: u64,
    /// event-api `MAX_RECORDING_SEC`: stops events that are never ended.
    pub max_recording_sec: u64,
    /// event-api `STALE_PLAYBACK_SEC`.
    pub stale_playback_sec: u64,
    /// event-api `PENDING_TIMEOUT_SEC`.
    pub pending_timeout_sec: u64,
    /// event-api `RECONCILE_INTERVAL_SEC`.
    pub reconcile_interval_sec: u64,
    /// Where every process writes its log.
    pub log_dir: PathBuf,
}

impl ClusterConfig {
    pub fn new(workers: usize, cameras: usize, log_dir: PathBuf) -> Self {
        Self {
            workers,
            cameras,
            max_cameras: 16,
            restart_backoff_max_sec: 2,
            max_recording_sec: 40,
            stale_playback_sec: STALE_PLAYBACK_SEC,
            pending_timeout_sec: 240,
            reconcile_interval_sec: 2,
            log_dir,
        }
    }
}

/// A service process (event-api or one worker) and how to start it again.
pub struct Service {
    name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    process: Option<ChildProcess>,
}

impl Service {
    fn new(name: &str, binary: &Path, env: Vec<(String, String)>, log_dir: &Path) -> Self {
        Self {
            name: name.to_owned(),
            binary: binary.to_owned(),
            env,
            log: log_dir.join(format!("{name}.log")),
            process: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildProcess::pid)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Starts the process (again) with its environment.
    pub fn start(&mut self) -> Result<(), ClusterError> {
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,sqlx=warn,async_nats=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.process = Some(ChildProcess::spawn(&self.name, cmd, &self.log)?);
        Ok(())
    }

    /// `kill -9`. Returns the children the process had (e.g. FFmpegs), so the caller can check
    /// that none outlives it.
    pub fn kill(&mut self) -> Vec<u32> {
        let children = self.pid().map(process::children_of).unwrap_or_default();
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        children
    }

    /// SIGTERM with a grace period (then SIGKILL).
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(mut p) = self.process.take() {
            p.stop_with(Signal::SIGTERM, grace).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildProcess::is_running)
    }
}

/// Everything camrec needs, on loopback.
pub struct Cluster {
    pub config: ClusterConfig,
    pub pg: PgCluster,
    pub nats: NatsServer,
    pub s3: S3Server,
    pub cameras: Vec<FakeCamera>,
    pub api: Service,
    pub workers: Vec<Service>,
    api_port: u16,
    admin_password: String,
    _record_root: tempfile::TempDir,
}

/// The database event-api uses inside the throwaway cluster.
pub const DATABASE: &str = "camrec";
/// The admin account event-api creates at its first start.
pub const ADMIN_USERNAME: &str = "lab-admin";
/// How long a service may take to answer after a (re)start.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

impl Cluster {
    /// Starts every part and waits until event-api answers `/health`.
    pub async fn start(
        config: ClusterConfig,
        binaries: &ServiceBinaries,
    ) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(&config.log_dir)
            .map_err(|e| ClusterError::Io(config.log_dir.display().to_string(), e))?;
        let pg = PgCluster::start(&config.log_dir, DATABASE).await?;
        let nats = NatsServer::start()
            .await
            .map_err(|source| ClusterError::Part {
                what: "nats-server",
                source,
            })?;
        let s3 = S3Server::start()
            .await
            .map_err(|source| ClusterError::Part {
                what: "s3s-fs",
                source,
            })?;
        let mut cameras = Vec::with_capacity(config.cameras);
        for _ in 0..config.cameras {
            cameras.push(
                FakeCamera::start(CameraProfile::default())
                    .await
                    .map_err(|source| ClusterError::Part {
                        what: "fake camera",
                        source,
                    })?,
            );
        }
        let record_root = tempfile::Builder::new()
            .prefix("camrec-lab-rec-")
            .tempdir()
            .map_err(|e| ClusterError::Io("the recordings directory".into(), e))?;
        let api_port = testkit::free_port();
        let admin_password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let api = Service::new(
            "event-api",
            &binaries.event_api,
            api_env(&config, &pg, &nats, &s3, api_port, &admin_password),
            &config.log_dir,
        );
        let workers = (0..config.workers)
            .map(|i| {
                let name = format!("worker-{i}");
                let dir = record_root.path().join(&name);
                Service::new(
                    &name,
                    &binaries.recorder_worker,
                    worker_env(&config, &nats, &s3, &name, &dir),
                    &config.log_dir,
                )
            })
            .collect();
        let mut cluster = Self {
            config,
            pg,
            nats,
            s3,
            cameras,
            api,
            workers,
            api_port,
            admin_password,
            _record_root: record_root,
        };
        cluster.start_api().await?;
        for w in &mut cluster.workers {
            w.start()?;
        }
        Ok(cluster)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// The URL of event-api's database.
    pub fn database_url(&self) -> String {
        self.pg.url(DATABASE)
    }

    /// Starts event-api and waits until `/health` answers.
    pub async fn start_api(&mut self) -> Result<(), ClusterError> {
        self.api.start()?;
        let url = format!("{}/health", self.api_url());
        let client = reqwest::Client::new();
        let healthy = testkit::wait_until(HEALTH_TIMEOUT, "event-api /health", || {
            let req = client.get(&url).timeout(Duration::from_secs(2)).send();
            async move {
                req.await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        healthy.map_err(|_| {
            ClusterError::NotHealthy(
                "event-api".into(),
                HEALTH_TIMEOUT,
                self.api.log().to_owned(),
            )
        })
    }

    /// Stops the services gracefully (workers first), then the rest is dropped.
    pub async fn shutdown(mut self) {
        for w in &mut self.workers {
            w.terminate(Duration::from_secs(30)).await;
        }
        self.api.terminate(Duration::from_secs(10)).await;
    }
}

fn pairs(items: &[(&str, String)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn api_env(
    c: &ClusterConfig,
    pg: &PgCluster,
    nats: &NatsServer,
    s3: &S3Server,
    port: u16,
    admin_password: &str,
) -> Vec<(String, String)> {
    let mut env = pairs(&[
        ("DATABASE_URL", pg.url(DATABASE)),
        ("DB_MAX_CONNECTIONS", "10".into()),
        ("NATS_URL", nats.url_as(NatsUser::EventApi)),
        ("CAMERA_ALLOWED_NETWORKS", "127.0.0.0/8".into()),
        // Event-api seals camera passwords with it, the workers open them.
        ("CAMERA_SECRET_KEY", TEST_CAMERA_KEY.into()),
        ("HOST", "127.0.0.1".into()),
        ("PORT", port.to_string()),
        (
            "JWT_SECRET",
            format!("lab-{}", uuid::Uuid::new_v4().simple()),
        ),
        ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
        ("ADMIN_PASSWORD", admin_password.into()),
        ("ACCESS_TOKEN_TTL_SEC", "86400".into()),
        ("MAX_RECORDING_SEC", c.max_recording_sec.to_string()),
        ("STALE_PLAYBACK_SEC", c.stale_playback_sec.to_string()),
        ("PENDING_TIMEOUT_SEC", c.pending_timeout_sec.to_string()),
        (
            "RECONCILE_INTERVAL_SEC",
            c.reconcile_interval_sec.to_string(),
        ),
    ]);
    env.extend(s3.storage_env());
    env
}

fn worker_env(
    c: &ClusterConfig,
    nats: &NatsServer,
    s3: &S3Server,
    worker_id: &str,
    record_dir: &Path,
) -> Vec<(String, String)> {
    let mut env = pairs(&[
        ("NATS_URL", nats.url_as(NatsUser::Worker)),
        ("CAMERA_ALLOWED_NETWORKS", "127.0.0.0/8".into()),
        // Event-api seals camera passwords with it, the workers open them.
        ("CAMERA_SECRET_KEY", TEST_CAMERA_KEY.into()),
        ("SITE", "default".into()),
        ("WORKER_ID", worker_id.into()),
        ("PORT", "0".into()),
        ("RECORD_DIR", record_dir.display().to_string()),
        ("MAX_CAMERAS", c.max_cameras.to_string()),
        (
            "RESTART_BACKOFF_MAX_SEC",
            c.restart_backoff_max_sec.to_string(),
        ),
        // The worker's own cap stays above event-api's, so the message's limit is the one hit.
        ("MAX_RECORDING_SEC", (c.max_recording_sec + 20).to_string()),
        ("RTSP_TIMEOUT_SEC", "5".into()),
        ("PROGRESS_INTERVAL_SEC", "2".into()),
        ("LEASE_HEARTBEAT_SEC", "2".into()),
        ("UPLOAD_GIVE_UP_SEC", "900".into()),
    ]);
    env.extend(s3.storage_env());
    env
}

#[cfg(test)]
mod tests {
    use super::is_crate_env;

    #[test]
    fn a_nested_build_drops_only_the_running_crates_variables() {
        for key in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_event-api",
        ] {
            assert!(is_crate_env(key), "{key}");
        }
        for key in ["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_BUILD_JOBS", "PATH"] {
            assert!(!is_crate_env(key), "{key}");
        }
    }
}

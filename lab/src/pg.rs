//! A throwaway PostgreSQL cluster for one lab run: `initdb` into a temporary directory owned by
//! the `postgres` user, then the postmaster as a child process on a free port (so the lab can
//! restart it, or `kill -9` it, without touching the machine's server).
//!
//! `fsync` is off: the faults are process crashes, not power loss, and what a killed postmaster
//! wrote is in the page cache. `synchronous_commit` stays on, so a committed transaction is in the
//! WAL the restarted server replays.

use crate::process::{ChildProcess, ProcessError};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User};
use sqlx::Connection;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The cluster could not be created or (re)started.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the postgres user does not exist (install PostgreSQL)")]
    NoPostgresUser,
    #[error("no PostgreSQL binaries (set PG_BIN_DIR, e.g. /usr/lib/postgresql/15/bin)")]
    NoBinaries,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("initdb failed: {0}")]
    Initdb(String),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("PostgreSQL did not accept connections within {0:?} (see {1})")]
    NotReady(Duration, PathBuf),
    #[error("creating the database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// How long a (re)start may take before the lab gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    uid: Uid,
    gid: Gid,
    log: PathBuf,
    postmaster: Option<ChildProcess>,
}

impl PgCluster {
    /// Creates a cluster, starts it, and creates the database `db`.
    pub async fn start(log_dir: &Path, db: &str) -> Result<Self, PgError> {
        let user = User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(PgError::NoPostgresUser)?;
        let dir = tempfile::Builder::new()
            .prefix("camrec-lab-pg-")
            .tempdir()
            .map_err(|source| PgError::Io {
                what: "creating the cluster directory".into(),
                source,
            })?;
        nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).map_err(|e| {
            PgError::Io {
                what: "handing the cluster directory to postgres".into(),
                source: e.into(),
            }
        })?;
        let mut pg = Self {
            dir,
            bin: bin_dir()?,
            port: testkit::free_port(),
            uid: user.uid,
            gid: user.gid,
            log: log_dir.join("postgres.log"),
            postmaster: None,
        };
        pg.initdb()?;
        pg.spawn_until_ready().await?;
        let mut conn = sqlx::PgConnection::connect(&pg.url("postgres")).await?;
        sqlx::query(&format!(r#"CREATE DATABASE "{db}""#))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A clean restart (`pg_ctl restart -m fast`: SIGINT, wait, start).
    pub async fn restart(&mut self) -> Result<(), PgError> {
        if let Some(mut p) = self.postmaster.take() {
            p.stop_with(Signal::SIGINT, Duration::from_secs(30)).await;
        }
        self.spawn_until_ready().await
    }

    /// `kill -9` of the postmaster, then a start (crash recovery replays the WAL).
    pub async fn kill_and_restart(&mut self) -> Result<(), PgError> {
        if let Some(mut p) = self.postmaster.take() {
            p.kill();
        }
        self.spawn_until_ready().await
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.uid(self.uid.as_raw())
            .gid(self.gid.as_raw())
            .current_dir(self.dir.path())
            .env("LC_ALL", "C");
        cmd
    }

    fn initdb(&self) -> Result<(), PgError> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["--auth=trust", "--no-sync", "-U", "postgres", "-E", "UTF8"])
            .output()
            .map_err(|source| PgError::Io {
                what: "running initdb".into(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(PgError::Initdb(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }

    /// Starts the postmaster and waits until it answers. A start right after a `kill -9` can fail
    /// while the old backends still hold the shared memory; it is retried until the deadline.
    async fn spawn_until_ready(&mut self) -> Result<(), PgError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let mut cmd = self.command("postgres");
            cmd.arg("-D")
                .arg(self.data_dir())
                .args(["-p", &self.port.to_string(), "-k"])
                .arg(self.dir.path())
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .args(["-c", "max_connections=200"]);
            let mut postmaster = ChildProcess::spawn("postgres", cmd, &self.log)?;
            loop {
                if self.accepts_connections().await {
                    self.postmaster = Some(postmaster);
                    return Ok(());
                }
                if !postmaster.is_running() || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            postmaster.kill();
            if tokio::time::Instant::now() >= deadline {
                return Err(PgError::NotReady(START_TIMEOUT, self.log.clone()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn accepts_connections(&self) -> bool {
        match sqlx::PgConnection::connect(&self.url("postgres")).await {
            Ok(conn) => {
                let _ = conn.close().await;
                true
            }
            Err(_) => false,
        }
    }
}

fn bin_dir() -> Result<PathBuf, PgError> {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| PgError::NoBinaries)?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or(PgError::NoBinaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn count_rows(pg: &PgCluster) -> i64 {
        let mut conn = sqlx::PgConnection::connect(&pg.url("lab")).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        n
    }

    #[tokio::test]
    async fn committed_rows_survive_a_restart_and_a_kill() {
        let logs = tempfile::tempdir().unwrap();
        let mut pg = PgCluster::start(logs.path(), "lab").await.unwrap();
        let mut conn = sqlx::PgConnection::connect(&pg.url("lab")).await.unwrap();
        sqlx::query("CREATE TABLE t (id int)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1), (2)")
            .execute(&mut conn)
            .await
            .unwrap();
        drop(conn);
        pg.restart().await.unwrap();
        assert_eq!(count_rows(&pg).await, 2);
        pg.kill_and_restart().await.unwrap();
        assert_eq!(count_rows(&pg).await, 2);
    }
}

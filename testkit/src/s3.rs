//! `s3s-fs`, an S3-protocol server that checks request signatures, serving one bucket from a
//! temporary directory. Stop and restart it (same port, same data) to test upload failures.

use crate::process::ServerProcess;
use crate::{find_binary, free_port, wait_for_port};
use camrec_shared::storage::{Storage, StorageConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct S3Server {
    pub port: u16,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    root: tempfile::TempDir,
    binary: PathBuf,
    process: Option<ServerProcess>,
}

impl S3Server {
    /// Starts a server with bucket `clips` on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let root = tempfile::Builder::new().prefix("camrec-s3-").tempdir()?;
        let bucket = "clips".to_owned();
        std::fs::create_dir_all(root.path().join(&bucket))?;
        let mut s = Self {
            port: free_port(),
            bucket,
            access_key: format!("AK{}", uuid::Uuid::new_v4().simple()),
            secret_key: format!("SK{}", uuid::Uuid::new_v4().simple()),
            root,
            binary: find_binary("s3s-fs", "S3S_FS_BIN")?,
            process: None,
        };
        s.spawn().await?;
        Ok(s)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment for `STORAGE_MODE=s3` against this server.
    pub fn storage_env(&self) -> Vec<(String, String)> {
        [
            ("STORAGE_MODE", "s3".to_owned()),
            ("S3_ENDPOINT", self.endpoint()),
            ("S3_BUCKET", self.bucket.clone()),
            ("S3_ACCESS_KEY_ID", self.access_key.clone()),
            ("S3_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("S3_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A [`StorageConfig`] for this server.
    pub fn storage_config(&self) -> StorageConfig {
        let env = self.storage_env();
        StorageConfig::from_lookup(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .expect("the test S3 configuration is complete")
    }

    /// An opened [`Storage`] on this server.
    pub fn storage(&self) -> anyhow::Result<Storage> {
        Ok(Storage::open(self.storage_config())?)
    }

    /// Where the bucket's objects are on disk (`<root>/<bucket>/<key>`).
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join(&self.bucket)
    }

    /// The object's file, if the server holds it.
    pub fn object_path(&self, key: &str) -> Option<PathBuf> {
        let p = self.bucket_dir().join(key);
        p.is_file().then_some(p)
    }

    /// Every object key in the bucket.
    pub fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect(&self.bucket_dir(), &self.bucket_dir(), &mut out);
        out.sort();
        out
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                &self.access_key,
                "--secret-key",
                &self.secret_key,
            ])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(ServerProcess::spawn("s3s-fs", cmd)?);
        wait_for_port(self.port, Duration::from_secs(15), "s3s-fs").await
    }
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(base, &p, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            let key = rel.to_string_lossy().into_owned();
            // s3s-fs keeps its own bookkeeping files next to the objects.
            if !key.starts_with(".") && !key.contains("/.") {
                out.push(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use camrec_shared::storage::ObjectKey;
    use camrec_shared::PlaybackId;

    #[tokio::test]
    async fn signed_puts_and_gets_round_trip_and_survive_a_restart() {
        let mut s3 = S3Server::start().await.unwrap();
        let storage = s3.storage().unwrap();
        let key = ObjectKey::Video(PlaybackId::new());
        storage
            .store()
            .put(&key.path(), b"hello".to_vec().into())
            .await
            .unwrap();
        assert_eq!(s3.keys(), vec![key.to_string()]);
        s3.restart().await.unwrap();
        let got = storage.store().get(&key.path()).await.unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), b"hello");

        let mut wrong = s3.storage_config();
        wrong.secret_access_key = Some(camrec_shared::storage::Secret::new("forged"));
        let forged = Storage::open(wrong).unwrap();
        assert!(forged.store().get(&key.path()).await.is_err());
    }
}

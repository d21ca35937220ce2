//! A throwaway certificate authority for TLS tests, made with the `openssl` command: a CA and a
//! server certificate for `127.0.0.1` and `localhost` signed by it (EC P-256, one day), in a
//! temporary directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCa {
    dir: tempfile::TempDir,
}

const CA: &str = "ca.pem";
const CERT: &str = "server.pem";
const KEY: &str = "server.key";

impl TestCa {
    /// Generates the CA and the server's certificate and key.
    pub fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("camrec-tls-").tempdir()?;
        let ca = Self { dir };
        let d = ca.dir.path();
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            d,
            &["req", "-x509", "-days", "1", "-subj", "/CN=camrec test CA"],
            &ec,
            &["-keyout", "ca.key", "-out", CA],
        )?;
        openssl(
            d,
            &["req", "-subj", "/CN=127.0.0.1"],
            &ec,
            &["-keyout", KEY, "-out", "server.csr"],
        )?;
        openssl(
            d,
            &["x509", "-req", "-days", "1", "-in", "server.csr", "-CA", CA],
            &["-CAkey", "ca.key", "-CAcreateserial"],
            &["-extfile", "server.ext", "-out", CERT],
        )?;
        Ok(ca)
    }

    /// The CA certificate (PEM) clients trust: `NATS_CA_FILE`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join(CA)
    }

    /// The server's certificate (PEM), for 127.0.0.1 and localhost.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join(CERT)
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join(KEY)
    }
}

fn openssl(dir: &Path, a: &[&str], b: &[&str], c: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(a)
        .args(b)
        .args(c)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run openssl: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {} failed: {}",
        a[0],
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

//! A nats-server with JetStream for one test: its own port and store directory, so a test can
//! stop, kill -9 and restart it without touching anyone else's streams.
//!
//! It runs the repository's `nats-users.conf` (authentication on, the shipped permissions), with
//! a fresh password per user and server, plus one user of its own, [`NatsUser::Admin`], which may
//! do anything (tests that inspect streams or plant messages). Tests connect as the role they
//! play: [`NatsServer::url_as`] gives a service its `NATS_URL`, [`NatsServer::connect_as`] a
//! client with that user's inbox prefix. [`NatsServer::url`] has no login: anonymous clients are
//! refused. [`NatsServer::start_tls`] adds TLS with a test CA ([`crate::tls`]).

use crate::process::ServerProcess;
use crate::tls::TestCa;
use crate::{find_binary, free_port, wait_until};
use camrec_shared::natsconn::inbox;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The users and permissions camrec ships (nats.conf includes the same file).
const USERS_CONF: &str = include_str!("../../nats-users.conf");

/// A user of the test server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatsUser {
    /// `camrec-event-api`.
    EventApi,
    /// `camrec-worker-default`: the workers of the site `default`.
    Worker,
    /// `camrec-reader`: other systems following playbacks.
    Reader,
    /// The harness's own user with every permission; not in nats-users.conf.
    Admin,
}

impl NatsUser {
    pub const ALL: [NatsUser; 4] = [
        NatsUser::EventApi,
        NatsUser::Worker,
        NatsUser::Reader,
        NatsUser::Admin,
    ];

    /// The user name.
    pub fn name(self) -> &'static str {
        match self {
            NatsUser::EventApi => "camrec-event-api",
            NatsUser::Worker => "camrec-worker-default",
            NatsUser::Reader => "camrec-reader",
            NatsUser::Admin => "testkit-admin",
        }
    }

    /// The server-side variable that holds the password.
    fn password_var(self) -> &'static str {
        match self {
            NatsUser::EventApi => "NATS_PASSWORD_EVENT_API",
            NatsUser::Worker => "NATS_PASSWORD_WORKER_DEFAULT",
            NatsUser::Reader => "NATS_PASSWORD_READER",
            NatsUser::Admin => "NATS_PASSWORD_TESTKIT_ADMIN",
        }
    }

    /// The inbox prefix this user may subscribe to.
    pub fn inbox_prefix(self) -> String {
        match self {
            NatsUser::EventApi => inbox::EVENT_API.to_owned(),
            NatsUser::Worker => inbox::worker(&Default::default()),
            NatsUser::Reader => inbox::READER.to_owned(),
            NatsUser::Admin => "_INBOX".to_owned(),
        }
    }
}

pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
    passwords: Vec<(NatsUser, String)>,
    /// Sites added the way docs/security.md says (tests of that recipe), with their passwords.
    extra_sites: Vec<(String, String)>,
    tls: Option<TestCa>,
    process: Option<ServerProcess>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until JetStream answers.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None, &[]).await
    }

    /// [`NatsServer::start`] with TLS required: a certificate for 127.0.0.1 and localhost from
    /// `ca`, which clients must trust ([`TestCa::ca_file`]).
    pub async fn start_tls(ca: TestCa) -> anyhow::Result<Self> {
        Self::start_with(Some(ca), &[]).await
    }

    async fn start_with(tls: Option<TestCa>, extra_sites: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("camrec-nats-").tempdir()?;
        std::fs::create_dir(dir.path().join("js"))?;
        let passwords = NatsUser::ALL
            .into_iter()
            .map(|u| (u, format!("t{}", uuid::Uuid::new_v4().simple())))
            .collect();
        let mut s = Self {
            port: free_port(),
            dir,
            binary: find_binary("nats-server", "NATS_SERVER_BIN")?,
            passwords,
            extra_sites: extra_sites
                .iter()
                .map(|site| {
                    (
                        site.to_string(),
                        format!("t{}", uuid::Uuid::new_v4().simple()),
                    )
                })
                .collect(),
            tls,
            process: None,
        };
        s.write_config()?;
        s.spawn().await?;
        Ok(s)
    }

    /// The server's JetStream store directory (what NATS keeps on disk).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// `nats://127.0.0.1:<port>` (`tls://` with TLS), without a login.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The URL with `user`'s login: `nats://<user>:<password>@127.0.0.1:<port>`, a `NATS_URL`.
    pub fn url_as(&self, user: NatsUser) -> String {
        self.url().replacen(
            "://",
            &format!("://{}:{}@", user.name(), self.password(user)),
            1,
        )
    }

    /// The NATS variables of a service that connects as `user`: `NATS_URL`, and `NATS_CA_FILE`
    /// with TLS.
    pub fn env_as(&self, user: NatsUser) -> Vec<(&'static str, String)> {
        let mut env = vec![("NATS_URL", self.url_as(user))];
        if let Some(ca) = &self.tls {
            env.push(("NATS_CA_FILE", ca.ca_file().display().to_string()));
        }
        env
    }

    /// A client logged in as `user`, with its inbox prefix (and the test CA with TLS).
    pub async fn connect_as(&self, user: NatsUser) -> anyhow::Result<async_nats::Client> {
        Ok(self.options_as(user).connect(self.url()).await?)
    }

    /// The connect options of `user` (for tests that add their own).
    pub fn options_as(&self, user: NatsUser) -> async_nats::ConnectOptions {
        let mut opts = async_nats::ConnectOptions::new()
            .user_and_password(user.name().to_owned(), self.password(user).to_owned())
            .custom_inbox_prefix(user.inbox_prefix());
        if let Some(ca) = &self.tls {
            opts = opts.add_root_certificates(ca.ca_file());
        }
        opts
    }

    fn password(&self, user: NatsUser) -> &str {
        self.passwords
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.pid())
    }

    /// The permission violations the server logged (`Publish Violation`, `Subscription
    /// Violation`): a service whose user lacks a permission it needs shows up here.
    pub fn permission_violations(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_file())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_owned)
            .collect()
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

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// `nats.conf` for this server: loopback, its port and store, the shipped users (with the
    /// harness's administrator added to them) and TLS if asked.
    fn write_config(&self) -> anyhow::Result<()> {
        let mut added = format!(
            "users = [\n    {{ user: {}, password: ${} }}\n",
            NatsUser::Admin.name(),
            NatsUser::Admin.password_var()
        );
        for (site, _) in &self.extra_sites {
            added.push_str(&site_worker_block(site)?);
        }
        let users = USERS_CONF.replacen("users = [", &added, 1);
        anyhow::ensure!(users != USERS_CONF, "nats-users.conf has no `users = [`");
        std::fs::write(self.dir.path().join("nats-users.conf"), users)?;
        let tls = match &self.tls {
            Some(ca) => format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n}}\n",
                quoted(&ca.server_cert()),
                quoted(&ca.server_key())
            ),
            None => String::new(),
        };
        let conf = format!(
            "host: 127.0.0.1\nport: {}\njetstream {{\n  store_dir: {}\n}}\n{tls}include ./nats-users.conf\n",
            self.port,
            quoted(&self.store_dir()),
        );
        std::fs::write(self.dir.path().join("nats.conf"), conf)?;
        Ok(())
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .arg("-l")
            .arg(self.log_file())
            .envs(self.passwords.iter().map(|(u, p)| (u.password_var(), p)))
            .envs(
                self.extra_sites
                    .iter()
                    .map(|(site, p)| (site_password_var(site), p)),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(ServerProcess::spawn("nats-server", cmd)?);
        let url = self.url();
        wait_until(
            Duration::from_secs(15),
            "nats-server with JetStream",
            || {
                let (url, options) = (url.clone(), self.options_as(NatsUser::Admin));
                async move {
                    // A raw request: async-nats' typed account info does not parse 2.9's reply.
                    let client = options.connect(url).await.ok()?;
                    let reply = client.request("$JS.API.INFO", "".into()).await.ok()?;
                    let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
                    info.get("error").is_none().then_some(())
                }
            },
        )
        .await
    }
}

/// The worker block of nats-users.conf for another site, made as docs/security.md says: the
/// `default` block with `default` replaced by the site everywhere (the password variable's name
/// in capitals, `-` as `_`).
fn site_worker_block(site: &str) -> anyhow::Result<String> {
    let (begin, end) = ("# BEGIN worker default", "# END worker default");
    let start = USERS_CONF
        .find(begin)
        .ok_or_else(|| anyhow::anyhow!("no {begin}"))?;
    let stop = USERS_CONF
        .find(end)
        .ok_or_else(|| anyhow::anyhow!("no {end}"))?
        + end.len();
    let block = USERS_CONF[start..stop]
        .replace("NATS_PASSWORD_WORKER_DEFAULT", &site_password_var(site))
        .replace("default", site);
    Ok(format!("    {block}\n"))
}

fn site_password_var(site: &str) -> String {
    format!(
        "NATS_PASSWORD_WORKER_{}",
        site.to_ascii_uppercase().replace('-', "_")
    )
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_kills_and_restarts_with_its_streams() {
        let mut nats = NatsServer::start().await.unwrap();
        let client = nats.connect_as(NatsUser::Admin).await.unwrap();
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
        let client = nats.connect_as(NatsUser::Admin).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("T").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 1);
    }

    #[tokio::test]
    async fn every_user_logs_in_and_anonymous_clients_are_refused() {
        let nats = NatsServer::start().await.unwrap();
        for user in NatsUser::ALL {
            let client = nats.connect_as(user).await.unwrap();
            client.flush().await.unwrap();
        }
        assert!(async_nats::connect(nats.url()).await.is_err());
        let wrong = async_nats::ConnectOptions::new()
            .user_and_password("camrec-event-api".into(), "wrong".into())
            .connect(nats.url())
            .await;
        assert!(wrong.is_err());
    }

    /// docs/security.md's recipe for a new site gives that site's workers their own user: they
    /// publish their site's statuses, not another site's, and read no other site's inbox.
    #[tokio::test]
    async fn a_site_added_as_documented_gets_a_worker_user_of_its_own() {
        let nats = NatsServer::start_with(None, &["north-1"]).await.unwrap();
        let password = nats.extra_sites[0].1.clone();
        let north = async_nats::ConnectOptions::new()
            .user_and_password("camrec-worker-north-1".into(), password)
            .custom_inbox_prefix("_INBOX_worker_north-1")
            .connect(nats.url())
            .await
            .unwrap();
        let cam = uuid::Uuid::new_v4();
        for site in ["north-1", "default"] {
            north
                .publish(format!("playback.progress.{site}.{cam}"), "{}".into())
                .await
                .unwrap();
        }
        let _inbox = north.subscribe("_INBOX_worker_default.>").await.unwrap();
        north.flush().await.unwrap();
        let violations = wait_until(Duration::from_secs(5), "two violations", || async {
            let v = nats.permission_violations();
            (v.len() >= 2).then_some(v)
        })
        .await
        .unwrap();
        let all = violations.join("\n");
        assert!(
            all.contains(&format!("playback.progress.default.{cam}")),
            "{all}"
        );
        assert!(all.contains("_INBOX_worker_default.>"), "{all}");
        assert!(!all.contains("playback.progress.north-1."), "{all}");
    }
}

//! How every camrec process connects to NATS: the one place that reads the NATS variables and
//! turns them into `async_nats::ConnectOptions` (event-api, the worker, the lab and the bench).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `NATS_URL` | `nats://127.0.0.1:4222` | server(s), comma-separated; `user:password@` in a URL is the login; `tls://` requires TLS |
//! | `NATS_USER` / `NATS_PASSWORD` | none | the login, instead of putting it in the URL |
//! | `NATS_CREDS_FILE` | none | a NATS `.creds` file (JWT and NKey seed), instead of a password |
//! | `NATS_CA_FILE` | none | PEM certificate(s) the server's certificate must chain to (TLS is then required) |
//! | `NATS_CLIENT_CERT` / `NATS_CLIENT_KEY` | none | PEM client certificate and key, for servers that verify clients |
//!
//! async-nats does not read a login from the URL itself: it is taken out here, and the URL kept
//! afterwards has none. Nothing here prints a password: [`NatsConfig`]'s `Debug` and
//! [`NatsConfig::display_url`] show the user only.
//!
//! Each client also gets its own inbox prefix ([`inbox`]): replies, pull deliveries and KV
//! watches arrive there, and the server lets each user subscribe to its own prefix only
//! (nats-users.conf).

use crate::storage::Secret;
use std::fmt;
use std::path::PathBuf;

/// The default server, a developer's local one.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// A NATS variable that is not valid. Names the variable, never its value.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    #[error("{0} is not valid")]
    Invalid(&'static str),
    #[error("NATS_CLIENT_CERT and NATS_CLIENT_KEY go together")]
    HalfClientCert,
    #[error("NATS_CREDS_FILE cannot be read: {0}")]
    Creds(#[source] std::io::Error),
}

/// The inbox prefixes nats-users.conf grants.
pub mod inbox {
    use crate::subjects::Site;

    /// event-api's.
    pub const EVENT_API: &str = "_INBOX_event_api";
    /// The reader user's (other systems, and tests that watch statuses).
    pub const READER: &str = "_INBOX_reader";

    /// The workers of `site`: `_INBOX_worker_<site>`.
    pub fn worker(site: &Site) -> String {
        format!("_INBOX_worker_{site}")
    }
}

/// Where and how to connect, read once from the environment.
#[derive(Clone)]
pub struct NatsConfig {
    /// The servers, without any login.
    servers: Vec<url::Url>,
    user: Option<String>,
    password: Option<Secret>,
    creds_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    require_tls: bool,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &self.display_url())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("creds_file", &self.creds_file)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("require_tls", &self.require_tls)
            .finish()
    }
}

impl NatsConfig {
    /// The NATS variables (the table above), read through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, NatsConfigError> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let path = |k: &str| var(k).map(|v| PathBuf::from(v.trim()));
        let raw = var("NATS_URL").unwrap_or_else(|| DEFAULT_URL.to_owned());
        let mut servers = Vec::new();
        let mut url_login: Option<(String, Option<String>)> = None;
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (server, login) = parse_server(part)?;
            if login.is_some() && url_login.is_none() {
                url_login = login;
            }
            servers.push(server);
        }
        if servers.is_empty() {
            return Err(NatsConfigError::Invalid("NATS_URL"));
        }
        let (mut user, mut password) = match url_login {
            Some((u, p)) => (Some(u), p.map(Secret::new)),
            None => (None, None),
        };
        if let Some(u) = var("NATS_USER") {
            user = Some(u.trim().to_owned());
        }
        if let Some(p) = var("NATS_PASSWORD") {
            password = Some(Secret::new(p));
        }
        if password
            .as_ref()
            .is_some_and(|p| is_placeholder(p.expose()))
        {
            return Err(NatsConfigError::Invalid(
                "NATS_PASSWORD (a placeholder from the examples in deploy/)",
            ));
        }
        if password.is_some() && user.is_none() {
            return Err(NatsConfigError::Invalid(
                "NATS_PASSWORD (a password needs NATS_USER or a user in NATS_URL)",
            ));
        }
        let creds_file = path("NATS_CREDS_FILE");
        if creds_file.is_some() && user.is_some() {
            return Err(NatsConfigError::Invalid(
                "NATS_CREDS_FILE (give either a .creds file or a user and password)",
            ));
        }
        let client_cert = match (path("NATS_CLIENT_CERT"), path("NATS_CLIENT_KEY")) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(NatsConfigError::HalfClientCert),
        };
        let ca_file = path("NATS_CA_FILE");
        let require_tls = ca_file.is_some()
            || client_cert.is_some()
            || servers.iter().any(|s| s.scheme() == "tls");
        Ok(Self {
            servers,
            user,
            password,
            creds_file,
            ca_file,
            client_cert,
            require_tls,
        })
    }

    /// Only `NATS_URL` = `url` (tools and tests that are handed a URL).
    pub fn from_url(url: &str) -> Result<Self, NatsConfigError> {
        Self::from_lookup(|k| (k == "NATS_URL").then(|| url.to_owned()))
    }

    /// The servers as they may be logged: `nats://<user>@host:port`, never the password.
    pub fn display_url(&self) -> String {
        self.servers
            .iter()
            .map(|s| match &self.user {
                Some(u) => {
                    let mut shown = s.clone();
                    let _ = shown.set_username(u);
                    shown.to_string()
                }
                None => s.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The user this configuration logs in as, if it uses a password.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the connection must be TLS.
    pub fn requires_tls(&self) -> bool {
        self.require_tls
    }

    /// The connect options for this configuration with `inbox_prefix` (see [`inbox`]); the
    /// caller adds its name, callbacks and retry policy. Reads the `.creds` file if one is given.
    pub async fn options(
        &self,
        inbox_prefix: &str,
    ) -> Result<async_nats::ConnectOptions, NatsConfigError> {
        let mut opts = match &self.creds_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(NatsConfigError::Creds)?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(user) = &self.user {
            let password = self.password.as_ref().map(|p| p.expose().to_owned());
            opts = opts.user_and_password(user.clone(), password.unwrap_or_default());
        }
        if let Some(ca) = &self.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(opts
            .require_tls(self.require_tls)
            .custom_inbox_prefix(inbox_prefix))
    }

    /// The servers to hand to `ConnectOptions::connect` (no login in them).
    pub fn servers(&self) -> Vec<async_nats::ServerAddr> {
        self.servers
            .iter()
            .filter_map(|s| s.as_str().parse().ok())
            .collect()
    }

    /// Connects with [`NatsConfig::options`] as they are (tools, the lab and the bench; the
    /// services add their own options first).
    pub async fn connect(&self, inbox_prefix: &str) -> Result<async_nats::Client, ConnectError> {
        let opts = self.options(inbox_prefix).await?;
        Ok(opts.connect(self.servers()).await?)
    }
}

/// Why [`NatsConfig::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] NatsConfigError),
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
}

/// One server of `NATS_URL`, without its login, and the login it carried (percent-decoded).
#[allow(clippy::type_complexity)]
fn parse_server(
    part: &str,
) -> Result<(url::Url, Option<(String, Option<String>)>), NatsConfigError> {
    let with_scheme = if part.contains("://") {
        part.to_owned()
    } else {
        format!("nats://{part}")
    };
    let mut url =
        url::Url::parse(&with_scheme).map_err(|_| NatsConfigError::Invalid("NATS_URL"))?;
    if !matches!(url.scheme(), "nats" | "tls") || url.host_str().is_none() {
        return Err(NatsConfigError::Invalid(
            "NATS_URL (nats://[user:password@]host[:port] or tls://...)",
        ));
    }
    let decode = |s: &str| {
        percent_decode(s).ok_or(NatsConfigError::Invalid(
            "NATS_URL (bad percent-encoding in the login)",
        ))
    };
    let login = if url.username().is_empty() {
        None
    } else {
        Some((
            decode(url.username())?,
            url.password().map(decode).transpose()?,
        ))
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if url.port().is_none() {
        let _ = url.set_port(Some(4222));
    }
    Ok((url, login))
}

/// `CHANGE_ME` and the like, which the examples in deploy/ ship.
fn is_placeholder(value: &str) -> bool {
    let v: String = value
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    v.contains("changeme")
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<NatsConfig, NatsConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NatsConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn the_default_is_the_local_server_without_login() {
        let c = from(&[]).unwrap();
        assert_eq!(c.display_url(), "nats://127.0.0.1:4222");
        assert_eq!(c.user(), None);
        assert!(!c.requires_tls());
    }

    #[test]
    fn a_login_in_the_url_is_taken_out_and_never_printed() {
        let c = from(&[(
            "NATS_URL",
            "nats://camrec-worker-default:s3cr%40t-pass@nats.example:4333",
        )])
        .unwrap();
        assert_eq!(c.user(), Some("camrec-worker-default"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "s3cr@t-pass");
        assert_eq!(
            c.display_url(),
            "nats://camrec-worker-default@nats.example:4333"
        );
        assert_eq!(c.servers[0].as_str(), "nats://nats.example:4333");
        for shown in [format!("{c:?}"), c.display_url()] {
            assert!(!shown.contains("s3cr"), "{shown}");
        }
    }

    #[test]
    fn user_and_password_variables_override_the_url() {
        let c = from(&[
            ("NATS_URL", "nats://a:b@h1:4222, h2"),
            ("NATS_USER", "camrec-event-api"),
            ("NATS_PASSWORD", "from-env"),
        ])
        .unwrap();
        assert_eq!(c.user(), Some("camrec-event-api"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "from-env");
        assert_eq!(
            c.display_url(),
            "nats://camrec-event-api@h1:4222,nats://camrec-event-api@h2:4222"
        );
        assert_eq!(c.servers().len(), 2);
    }

    #[test]
    fn tls_is_required_by_a_tls_url_a_ca_or_a_client_certificate() {
        assert!(from(&[("NATS_URL", "tls://h:4222")])
            .unwrap()
            .requires_tls());
        assert!(from(&[("NATS_CA_FILE", "/ca.pem")]).unwrap().requires_tls());
        assert!(from(&[
            ("NATS_CLIENT_CERT", "/c.pem"),
            ("NATS_CLIENT_KEY", "/k.pem")
        ])
        .unwrap()
        .requires_tls());
        assert!(matches!(
            from(&[("NATS_CLIENT_CERT", "/c.pem")]),
            Err(NatsConfigError::HalfClientCert)
        ));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (pairs, name) in [
            (vec![("NATS_URL", "http://h")], "NATS_URL"),
            (vec![("NATS_URL", " , ")], "NATS_URL"),
            (vec![("NATS_URL", "nats://u:%zz@h")], "NATS_URL"),
            (vec![("NATS_PASSWORD", "p")], "NATS_PASSWORD"),
            (
                vec![("NATS_USER", "u"), ("NATS_PASSWORD", "CHANGE_ME")],
                "NATS_PASSWORD",
            ),
            (
                vec![
                    ("NATS_URL", "nats://u:p@h"),
                    ("NATS_CREDS_FILE", "/x.creds"),
                ],
                "NATS_CREDS_FILE",
            ),
        ] {
            let err = from(&pairs).unwrap_err().to_string();
            assert!(err.starts_with(name), "{err}");
            assert!(!err.contains("%zz"), "{err}");
        }
    }

    #[tokio::test]
    async fn an_unreadable_creds_file_is_a_clear_error() {
        let c = from(&[("NATS_CREDS_FILE", "/nonexistent/camrec.creds")]).unwrap();
        let err = c.options(inbox::READER).await.unwrap_err();
        assert!(err.to_string().starts_with("NATS_CREDS_FILE"), "{err}");
    }
}

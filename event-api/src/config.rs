//! event-api's configuration: one typed struct read once from the environment at start.
//!
//! Every field says its variable and default. Secrets ([`Secret`]) never print in `Debug`.

use camrec_shared::storage::{Secret, StorageConfig, StorageError};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A variable that is missing or not valid. Names the variable, never its value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not valid")]
    Invalid(&'static str),
    #[error(
        "JWT_SECRET is required (set CAMREC_DEV=1 for a random per-process secret in development)"
    )]
    MissingJwtSecret,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Nats(#[from] camrec_shared::natsconn::NatsConfigError),
}

/// The whole configuration of event-api.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/camrec`.
    pub database_url: Secret,
    /// `DB_MAX_CONNECTIONS`, default 20: the size of the PostgreSQL pool.
    pub db_max_connections: u32,
    /// `NATS_URL` (default `nats://127.0.0.1:4222`), `NATS_USER`/`NATS_PASSWORD`,
    /// `NATS_CREDS_FILE`, `NATS_CA_FILE`, `NATS_CLIENT_CERT`/`NATS_CLIENT_KEY`: see
    /// `camrec_shared::natsconn`. The user is `camrec-event-api` (nats-users.conf).
    pub nats: camrec_shared::natsconn::NatsConfig,
    /// `NATS_STREAM_REPLICAS`, default 1: replicas of the `EVENTS` and `PLAYBACKS` streams.
    pub nats_stream_replicas: usize,
    /// `HOST`, default `0.0.0.0`, and `PORT`, default 3000: where `main` binds the HTTP listener.
    pub listen: SocketAddr,
    /// `HEADER_READ_TIMEOUT_SEC`, default 10: a connection whose request headers are not all in
    /// within this long is closed (a client cannot hold connections by sending them slowly).
    pub header_read_timeout: Duration,
    /// `JWT_SECRET`: the HS256 key of access tokens. Required unless `CAMREC_DEV=1`, in which
    /// case a random per-process secret is used (tokens die with the process). No fixed default.
    pub jwt_secret: Secret,
    /// `ADMIN_USERNAME`: the first admin, created at start when no user exists (with
    /// `ADMIN_PASSWORD`). Default none.
    pub admin_username: Option<String>,
    /// `ADMIN_PASSWORD`: the first admin's password. Default none.
    pub admin_password: Option<Secret>,
    /// `ACCESS_TOKEN_TTL_SEC`, default 900: lifetime of an access token (JWT).
    pub access_token_ttl: Duration,
    /// `REFRESH_TOKEN_TTL_SEC`, default 2592000 (30 days): lifetime of a refresh token.
    pub refresh_token_ttl: Duration,
    /// Failed-login limits: `LOGIN_MAX_FAILURES` (default 5 per username),
    /// `LOGIN_MAX_FAILURES_PER_ADDRESS` (default 20 per client address), `LOGIN_WINDOW_SEC`
    /// (default 300). Over either limit, login answers 429 with `Retry-After`.
    pub login_limits: crate::http::login_guard::LoginLimits,
    /// `CAMERA_SECRET_KEY` (required: `<id>:<base64 of 32 random bytes>`) seals camera
    /// passwords; `CAMERA_SECRET_KEYS_OLD` (comma-separated, same form) opens what retired keys
    /// sealed. Workers get the same variables (`camrec_shared::sealed`).
    pub camera_keys: camrec_shared::sealed::CameraKeys,
    /// `CAMERA_ALLOWED_NETWORKS`, default empty: CIDRs a camera may be in beyond the default
    /// policy, which refuses loopback, link-local, unspecified and multicast addresses.
    pub camera_networks: camrec_shared::netpolicy::NetworkPolicy,
    /// `MAX_RECORDING_SEC`, default 3600: the `max_duration_sec` put into `event.created`.
    pub max_recording_sec: u32,
    /// `STALE_PLAYBACK_SEC`, default 120: a RECORDING/PROCESSING playback without a status for
    /// this long, while the NATS connection was up, is presumed `FAILED worker_lost` (its
    /// worker's later report overrides that).
    pub stale_playback: Duration,
    /// `PENDING_TIMEOUT_SEC`, default 900: a PENDING playback this old becomes
    /// `FAILED not_started`.
    pub pending_timeout: Duration,
    /// `RECONCILE_INTERVAL_SEC`, default 10: how often the reconciler and the object-deletion
    /// sweeper run.
    pub reconcile_interval: Duration,
    /// `STORAGE_MODE`, `LOCAL_STORAGE_DIR`, `MEDIA_BASE_URL`, `R2_*`/`S3_*`: see
    /// [`StorageConfig`]. Default `local` (served by this process at `/media/<key>`).
    pub storage: StorageConfig,
    /// `WEBHOOK_ALLOWED_NETWORKS`, default none: comma-separated CIDRs a webhook URL may reach
    /// even though they are loopback, link-local, unspecified or multicast (refused otherwise).
    pub webhook_allowed_networks: camrec_shared::netpolicy::NetworkPolicy,
    /// `WEBHOOK_TIMEOUT_SEC`, default 10: how long one webhook request may take.
    pub webhook_timeout: Duration,
    /// `RETENTION_DAYS`, default unset (keep): how long finished playbacks of a camera without
    /// its own `retentionDays` are kept.
    pub retention_days: Option<u32>,
    /// `RETENTION_MAX_DELETES_PER_MIN`, default 600: the retention sweeper never deletes faster.
    pub retention_max_deletes_per_min: u32,
    /// `RETENTION_BATCH_SIZE`, default 100: playbacks deleted per retention pass.
    pub retention_batch_size: u32,
}

impl Config {
    /// Reads the variables from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let dev = var("CAMREC_DEV").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        let jwt_secret = match var("JWT_SECRET") {
            Some(s) if is_placeholder(&s) => return Err(ConfigError::Invalid(
                "JWT_SECRET (a placeholder from the examples; generate one: openssl rand -hex 32)",
            )),
            Some(s) if s.len() >= MIN_JWT_SECRET => Secret::new(s),
            Some(_) => return Err(ConfigError::Invalid("JWT_SECRET (at least 32 bytes)")),
            None if dev => {
                tracing::warn!(
                    "JWT_SECRET is not set: using a random per-process secret (CAMREC_DEV=1)"
                );
                Secret::new(random_secret())
            }
            None => return Err(ConfigError::MissingJwtSecret),
        };
        let host: IpAddr = parse_or(&var, "HOST", IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
        let port: u16 = parse_or(&var, "PORT", 3000)?;
        let secs = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            let v: u64 = parse_or(&var, name, default)?;
            if v == 0 {
                return Err(ConfigError::Invalid(name));
            }
            Ok(Duration::from_secs(v))
        };
        Ok(Self {
            database_url: Secret::new(
                var("DATABASE_URL")
                    .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/camrec".into()),
            ),
            db_max_connections: parse_or(&var, "DB_MAX_CONNECTIONS", 20)?,
            nats: camrec_shared::natsconn::NatsConfig::from_lookup(&get)?,
            nats_stream_replicas: parse_or(&var, "NATS_STREAM_REPLICAS", 1)?,
            listen: SocketAddr::new(host, port),
            header_read_timeout: secs("HEADER_READ_TIMEOUT_SEC", 10)?,
            jwt_secret,
            admin_username: var("ADMIN_USERNAME"),
            admin_password: match var("ADMIN_PASSWORD") {
                Some(p) if is_placeholder(&p) => {
                    return Err(ConfigError::Invalid(
                        "ADMIN_PASSWORD (a placeholder from the examples)",
                    ))
                }
                other => other.map(Secret::new),
            },
            access_token_ttl: secs("ACCESS_TOKEN_TTL_SEC", 900)?,
            refresh_token_ttl: secs("REFRESH_TOKEN_TTL_SEC", 2_592_000)?,
            login_limits: crate::http::login_guard::LoginLimits {
                per_username: parse_or(&var, "LOGIN_MAX_FAILURES", 5)?,
                per_address: parse_or(&var, "LOGIN_MAX_FAILURES_PER_ADDRESS", 20)?,
                window: secs("LOGIN_WINDOW_SEC", 300)?,
            },
            camera_keys: camrec_shared::sealed::CameraKeys::parse(
                &var("CAMERA_SECRET_KEY").ok_or(ConfigError::Invalid(
                    "CAMERA_SECRET_KEY (required: <id>:<base64 of 32 random bytes>)",
                ))?,
                &var("CAMERA_SECRET_KEYS_OLD").unwrap_or_default(),
            )
            .map_err(|_| {
                ConfigError::Invalid(
                    "CAMERA_SECRET_KEY or CAMERA_SECRET_KEYS_OLD (<id>:<base64 of 32 bytes>)",
                )
            })?,
            camera_networks: camrec_shared::netpolicy::NetworkPolicy::parse(
                &var("CAMERA_ALLOWED_NETWORKS").unwrap_or_default(),
            )
            .map_err(|_| ConfigError::Invalid("CAMERA_ALLOWED_NETWORKS"))?,
            max_recording_sec: parse_or(&var, "MAX_RECORDING_SEC", 3600)?,
            stale_playback: secs("STALE_PLAYBACK_SEC", 120)?,
            pending_timeout: secs("PENDING_TIMEOUT_SEC", 900)?,
            reconcile_interval: secs("RECONCILE_INTERVAL_SEC", 10)?,
            storage: StorageConfig::from_lookup(&get)?,
            webhook_allowed_networks: camrec_shared::netpolicy::NetworkPolicy::parse(
                &var("WEBHOOK_ALLOWED_NETWORKS").unwrap_or_default(),
            )
            .map_err(|_| {
                ConfigError::Invalid("WEBHOOK_ALLOWED_NETWORKS (comma-separated CIDRs)")
            })?,
            webhook_timeout: secs("WEBHOOK_TIMEOUT_SEC", 10)?,
            retention_days: match var("RETENTION_DAYS") {
                None => None,
                Some(v) => Some(
                    v.trim()
                        .parse()
                        .ok()
                        .filter(|d| (1..=36_500).contains(d))
                        .ok_or(ConfigError::Invalid("RETENTION_DAYS (1 to 36500)"))?,
                ),
            },
            retention_max_deletes_per_min: positive(&var, "RETENTION_MAX_DELETES_PER_MIN", 600)?,
            retention_batch_size: positive(&var, "RETENTION_BATCH_SIZE", 100)?,
        })
    }
}

/// The shortest `JWT_SECRET` accepted, in bytes (HS256's key is 256 bits).
pub const MIN_JWT_SECRET: usize = 32;

/// Whether `value` is one of the placeholders the examples in `deploy/` ship (`CHANGE_ME...`,
/// `change-me`): a deployment that kept one must not start.
pub fn is_placeholder(value: &str) -> bool {
    let v: String = value
        .to_ascii_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    v.contains("changeme")
}

fn parse_or<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid(name)),
    }
}

fn positive(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u32,
) -> Result<u32, ConfigError> {
    match parse_or(var, name, default)? {
        0 => Err(ConfigError::Invalid(name)),
        n => Ok(n),
    }
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A camera key for the tests (32 bytes of 7).
    const TEST_KEY: &str = "test:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

    /// `pairs` over a valid `CAMERA_SECRET_KEY`.
    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut map: HashMap<String, String> =
            HashMap::from([("CAMERA_SECRET_KEY".to_owned(), TEST_KEY.to_owned())]);
        map.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_camera_key_is_required_valid_and_never_printed() {
        let jwt = ("JWT_SECRET", "0123456789abcdef0123456789abcdef");
        for bad in ["", "no-colon", "k:c2hvcnQ="] {
            let c = Config::from_lookup(lookup(&[jwt, ("CAMERA_SECRET_KEY", bad)]));
            assert!(
                matches!(c, Err(ConfigError::Invalid(m)) if m.starts_with("CAMERA_SECRET_KEY")),
                "{bad:?}"
            );
        }
        let c = Config::from_lookup(lookup(&[jwt])).unwrap();
        assert_eq!(c.camera_keys.current_id(), "test");
        assert!(!format!("{c:?}").contains("BwcH"));
    }

    #[test]
    fn jwt_secret_is_required_outside_dev() {
        assert!(matches!(
            Config::from_lookup(lookup(&[])),
            Err(ConfigError::MissingJwtSecret)
        ));
        let a = Config::from_lookup(lookup(&[("CAMREC_DEV", "1")])).unwrap();
        let b = Config::from_lookup(lookup(&[("CAMREC_DEV", "1")])).unwrap();
        assert_ne!(a.jwt_secret.expose(), b.jwt_secret.expose());
    }

    #[test]
    fn defaults_and_secrets_do_not_print() {
        let c = Config::from_lookup(lookup(&[
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef-very-secret"),
            ("ADMIN_PASSWORD", "hunter2-admin"),
            ("NATS_URL", "nats://camrec-event-api:hunter2-nats@nats:4222"),
        ]))
        .unwrap();
        assert_eq!(c.nats.user(), Some("camrec-event-api"));
        assert_eq!(c.listen.port(), 3000);
        assert_eq!(c.max_recording_sec, 3600);
        assert_eq!(c.stale_playback, Duration::from_secs(120));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"));
        assert!(!dbg.contains("hunter2"));
        assert!(matches!(
            Config::from_lookup(lookup(&[
                ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("PORT", "x")
            ])),
            Err(ConfigError::Invalid("PORT"))
        ));
    }

    #[test]
    fn webhook_networks_and_retention_are_read() {
        let base = [("JWT_SECRET", "0123456789abcdef0123456789abcdef")];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            Config::from_lookup(lookup(&pairs))
        };
        let c = with(&[]).unwrap();
        assert_eq!(
            c.webhook_allowed_networks,
            camrec_shared::netpolicy::NetworkPolicy::default()
        );
        assert_eq!(c.retention_days, None);
        assert_eq!(c.retention_max_deletes_per_min, 600);
        let c = with(&[
            ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8, ::1"),
            ("RETENTION_DAYS", "30"),
        ])
        .unwrap();
        assert!(c
            .webhook_allowed_networks
            .check("::1".parse().unwrap())
            .is_ok());
        assert_eq!(c.retention_days, Some(30));
        for (name, bad) in [
            ("WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/33"),
            ("RETENTION_DAYS", "0"),
            ("RETENTION_MAX_DELETES_PER_MIN", "0"),
        ] {
            assert!(
                matches!(with(&[(name, bad)]), Err(ConfigError::Invalid(m)) if m.starts_with(name)),
                "{name}={bad}"
            );
        }
    }

    #[test]
    fn short_secrets_and_the_examples_placeholders_are_refused() {
        let secret = |s: &str| Config::from_lookup(lookup(&[("JWT_SECRET", s)]));
        assert!(matches!(
            secret("0123456789abcdef"),
            Err(ConfigError::Invalid(m)) if m.contains("32 bytes")
        ));
        for placeholder in [
            "CHANGE_ME_TO_32_RANDOM_BYTES_OF_HEX",
            "change-me-change-me-change-me-change-me",
        ] {
            assert!(
                matches!(secret(placeholder), Err(ConfigError::Invalid(m)) if m.contains("placeholder")),
                "{placeholder}"
            );
        }
        let admin = Config::from_lookup(lookup(&[
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("ADMIN_PASSWORD", "CHANGE_ME"),
        ]));
        assert!(matches!(admin, Err(ConfigError::Invalid(m)) if m.starts_with("ADMIN_PASSWORD")));
    }
}

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
}

/// The whole configuration of event-api.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/camrec`.
    pub database_url: Secret,
    /// `DB_MAX_CONNECTIONS`, default 20: the size of the PostgreSQL pool.
    pub db_max_connections: u32,
    /// `NATS_URL`, default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// `NATS_STREAM_REPLICAS`, default 1: replicas of the `EVENTS` and `PLAYBACKS` streams.
    pub nats_stream_replicas: usize,
    /// `HOST`, default `0.0.0.0`, and `PORT`, default 3000: where `main` binds the HTTP listener.
    pub listen: SocketAddr,
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
            nats_url: var("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            nats_stream_replicas: parse_or(&var, "NATS_STREAM_REPLICAS", 1)?,
            listen: SocketAddr::new(host, port),
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
            max_recording_sec: parse_or(&var, "MAX_RECORDING_SEC", 3600)?,
            stale_playback: secs("STALE_PLAYBACK_SEC", 120)?,
            pending_timeout: secs("PENDING_TIMEOUT_SEC", 900)?,
            reconcile_interval: secs("RECONCILE_INTERVAL_SEC", 10)?,
            storage: StorageConfig::from_lookup(&get)?,
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

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
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
        ]))
        .unwrap();
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

//! Signed webhooks: turning playback status messages into deliveries, and sending them.
//!
//! The consumer half reads `PLAYBACKS` through the durable pull consumer [`CONSUMER`] and adds,
//! for each status of a kind webhooks can subscribe to ([`EVENT_TYPES`]), one delivery row per
//! matching webhook, all in one statement that is idempotent per (webhook, message); the
//! message is acked after that commit ([`handle`]). So a restart, a redelivery or a replay adds
//! nothing twice, and a crash before the ack only re-adds what already exists.
//!
//! The sender half ([`run`]) claims due deliveries with a lease and sends each in a task of its
//! own, at most [`MAX_IN_FLIGHT`] at once, so a receiver that hangs holds one slot until its
//! timeout and never the others. Each request is signed ([`signature`]), carries the delivery's
//! id as its idempotency key, never follows a redirect, and may only reach addresses the
//! [`NetworkPolicy`] allows, checked again at every send, on every address the host resolves
//! to. A failure is retried with a doubling delay until [`GIVE_UP_AFTER`] from the first attempt,
//! then the delivery is dead ([`retry_at`]).

use crate::playbacks_feed::FeedError;
use crate::store::webhooks::{DueDelivery, Outcome};
use crate::store::{Store, StoreError};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{Context, Message};
use camrec_shared::backoff::{nth_delay, sleep_or_cancel, Backoff};
use camrec_shared::messages::{Envelope, Gap, PlaybackStatus, StatusBody};
use camrec_shared::netpolicy;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// The durable consumer name.
pub const CONSUMER: &str = "event-api-webhooks";
/// The event types a webhook can subscribe to (progress heartbeats are not notified).
pub const EVENT_TYPES: [&str; 4] = [
    "playback.recording",
    "playback.processing",
    "playback.completed",
    "playback.failed",
];
/// Requests in flight at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// A delivery still failing this long after its first attempt is dead.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
const FIRST_RETRY: Duration = Duration::from_secs(10);
const LONGEST_RETRY: Duration = Duration::from_secs(3600);
/// How often the sender looks for due deliveries when nothing wakes it.
const POLL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// The network policy

/// Which addresses a webhook may reach: the shared policy (`camrec_shared::netpolicy`: no
/// loopback, link-local, unspecified or multicast address) widened by `WEBHOOK_ALLOWED_NETWORKS`.
/// A type of its own so that the sender's resolver can apply it too.
#[derive(Clone, Debug, Default)]
pub struct NetworkPolicy(netpolicy::NetworkPolicy);

/// Why a webhook URL is refused; the messages are safe to show (they hold no URL).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlRefused {
    #[error("must be an http or https URL of at most 2048 characters")]
    NotHttp,
    #[error("must not contain a user name or password (the secret signs requests)")]
    Credentials,
    #[error("its host does not resolve")]
    Unresolved,
    #[error("its host resolves to {0}, a loopback, link-local, unspecified or multicast address outside WEBHOOK_ALLOWED_NETWORKS")]
    Address(IpAddr),
}

impl NetworkPolicy {
    pub fn new(policy: netpolicy::NetworkPolicy) -> Self {
        Self(policy)
    }

    /// Whether a request may go to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.check(ip).is_ok()
    }

    /// Checks `raw` as a webhook URL: its form, then every address its host resolves to.
    pub async fn check_url(&self, raw: &str) -> Result<url::Url, UrlRefused> {
        let url = parse_url(raw)?;
        let host = url.host_str().ok_or(UrlRefused::NotHttp)?;
        self.resolve(host).await?;
        Ok(url)
    }

    /// The addresses of `host` (a name or an IP literal), all of them allowed.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, UrlRefused> {
        match self.0.check_host(host, 0).await {
            Ok(addrs) => Ok(addrs.into_iter().map(|a| a.ip()).collect()),
            Err(netpolicy::PolicyError::Refused { ip, .. }) => Err(UrlRefused::Address(ip)),
            Err(_) => Err(UrlRefused::Unresolved),
        }
    }
}

fn parse_url(raw: &str) -> Result<url::Url, UrlRefused> {
    if raw.len() > 2048 {
        return Err(UrlRefused::NotHttp);
    }
    let url = url::Url::parse(raw).map_err(|_| UrlRefused::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(UrlRefused::NotHttp);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefused::Credentials);
    }
    Ok(url)
}

/// The sender's resolver: a connection only ever goes to an address the policy allows, even
/// when the name resolves differently from when it was checked.
impl reqwest::dns::Resolve for NetworkPolicy {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str()).await?;
            let sockets = addrs.into_iter().map(|ip| std::net::SocketAddr::new(ip, 0));
            Ok(Box::new(sockets) as reqwest::dns::Addrs)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The body and its signature

/// The JSON body of a webhook request (docs/messaging.md, "Webhook requests").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Notification<'a> {
    #[serde(rename = "type")]
    event_type: &'static str,
    message_id: String,
    occurred_at: DateTime<Utc>,
    playback: PlaybackNotice<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PlaybackNotice<'a> {
    id: Uuid,
    event_id: Uuid,
    camera_id: Uuid,
    site: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clip: Option<ClipNotice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<FailureNotice<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClipNotice<'a> {
    object_key: &'a str,
    thumb_key: Option<&'a str>,
    size_bytes: u64,
    duration_sec: f64,
    video_codec: &'a str,
    audio_codec: Option<&'a str>,
    width: u32,
    height: u32,
    sha256: &'a str,
    partial: bool,
    gaps: &'a [Gap],
    started_late: bool,
    /// The closed HLS playlist of the clip's segments, when the worker wrote one.
    #[serde(skip_serializing_if = "Option::is_none")]
    segment_list_key: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FailureNotice<'a> {
    code: &'static str,
    message: &'a str,
}

/// The event type and JSON body that notify `status`, or `None` for a kind webhooks do not
/// carry (progress).
pub fn notification(
    status: &PlaybackStatus,
    occurred_at: DateTime<Utc>,
) -> Option<(&'static str, String)> {
    let (event_type, state) = match status.body {
        StatusBody::Recording { .. } => (EVENT_TYPES[0], "RECORDING"),
        StatusBody::Processing { .. } => (EVENT_TYPES[1], "PROCESSING"),
        StatusBody::Completed(_) => (EVENT_TYPES[2], "COMPLETED"),
        StatusBody::Failed { .. } => (EVENT_TYPES[3], "FAILED"),
        StatusBody::Progress { .. } => return None,
    };
    let mut playback = PlaybackNotice {
        id: status.playback_id.0,
        event_id: status.event_id.0,
        camera_id: status.camera_id.0,
        site: status.site.as_str(),
        status: state,
        started_at: None,
        ended_at: None,
        clip: None,
        failure: None,
    };
    match &status.body {
        StatusBody::Recording { started_at } => playback.started_at = Some(*started_at),
        StatusBody::Processing { ended_at, .. } => playback.ended_at = Some(*ended_at),
        StatusBody::Completed(c) => {
            playback.started_at = Some(c.started_at);
            playback.ended_at = Some(c.ended_at);
            playback.clip = Some(ClipNotice {
                object_key: &c.object_key,
                thumb_key: c.thumb_key.as_deref(),
                size_bytes: c.size_bytes,
                duration_sec: c.duration_sec,
                video_codec: &c.video_codec,
                audio_codec: c.audio_codec.as_deref(),
                width: c.width,
                height: c.height,
                sha256: &c.sha256,
                partial: c.partial,
                gaps: &c.gaps,
                started_late: c.started_late,
                segment_list_key: c.segment_list_key.as_deref(),
            });
        }
        StatusBody::Failed { code, message } => {
            playback.failure = Some(FailureNotice {
                code: code.as_str(),
                message,
            });
        }
        StatusBody::Progress { .. } => {}
    }
    let body = Notification {
        event_type,
        message_id: status.msg_id(),
        occurred_at,
        playback,
    };
    serde_json::to_string(&body).ok().map(|b| (event_type, b))
}

/// The `X-Camrec-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Retries

/// When a delivery whose attempt number `attempts` (1-based) failed at `now` is tried again:
/// 10 s doubling up to an hour, or `None` (dead) once that would be later than
/// [`GIVE_UP_AFTER`] after the first attempt.
pub fn retry_at(
    first_attempt: DateTime<Utc>,
    attempts: u32,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let delay = nth_delay(attempts.saturating_sub(1), FIRST_RETRY, LONGEST_RETRY);
    let next = now + chrono::Duration::from_std(delay).ok()?;
    let deadline = first_attempt + chrono::Duration::from_std(GIVE_UP_AFTER).ok()?;
    (next <= deadline).then_some(next)
}

// ---------------------------------------------------------------------------------------------
// Sending

/// Sends webhook requests: one HTTP client that follows no redirect, resolves only to allowed
/// addresses and gives every request `timeout`.
#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::Client,
    policy: NetworkPolicy,
    timeout: Duration,
}

/// What an attempt got, before the retry rule.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok(u16),
    Refused(Option<u16>, String),
}

impl Sender {
    pub fn new(policy: NetworkPolicy, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .dns_resolver(Arc::new(policy.clone()))
            .user_agent("camrec-webhooks")
            .build()?;
        Ok(Self {
            client,
            policy,
            timeout,
        })
    }

    /// How long a claimed delivery is kept from other claims: longer than any request.
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(30)
    }

    async fn post(&self, d: &DueDelivery, now: DateTime<Utc>) -> Answer {
        if let Err(e) = self.policy.check_url(&d.url).await {
            return Answer::Refused(None, format!("url refused: {e}"));
        }
        let sent = self
            .client
            .post(&d.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Camrec-Delivery", d.id.to_string())
            .header("X-Camrec-Event", &d.event_type)
            .header(
                "X-Camrec-Signature",
                signature(&d.secret, now.timestamp(), &d.body),
            )
            .body(d.body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Answer::Ok(resp.status().as_u16()),
            Ok(resp) if resp.status().is_redirection() => Answer::Refused(
                Some(resp.status().as_u16()),
                format!(
                    "HTTP {}: redirects are not followed",
                    resp.status().as_u16()
                ),
            ),
            Ok(resp) => Answer::Refused(
                Some(resp.status().as_u16()),
                format!("HTTP {}", resp.status().as_u16()),
            ),
            Err(e) if e.is_timeout() => Answer::Refused(
                None,
                format!("no answer within {} s", self.timeout.as_secs()),
            ),
            Err(e) if e.is_connect() => Answer::Refused(None, "connection failed".to_owned()),
            Err(e) => Answer::Refused(None, format!("request failed: {}", e.without_url())),
        }
    }

    /// Sends `d` at `now` and records the outcome.
    pub async fn attempt(
        &self,
        store: &Store,
        d: &DueDelivery,
        now: DateTime<Utc>,
    ) -> Result<Outcome, StoreError> {
        let attempts = u32::try_from(d.attempts).unwrap_or(0) + 1;
        let outcome = match self.post(d, now).await {
            Answer::Ok(code) => {
                metrics::counter!("webhook_deliveries_total", "result" => "delivered").increment(1);
                Outcome::Delivered {
                    status_code: i32::from(code),
                }
            }
            Answer::Refused(code, error) => {
                let retry = retry_at(d.first_attempt_at.unwrap_or(now), attempts, now);
                let result = if retry.is_some() { "failed" } else { "dead" };
                metrics::counter!("webhook_deliveries_total", "result" => result).increment(1);
                tracing::warn!(delivery_id = %d.id, webhook_id = %d.webhook_id, attempts,
                    error = %error, dead = retry.is_none(), "webhook delivery failed");
                Outcome::Failed {
                    status_code: code.map(i32::from),
                    error,
                    retry_at: retry,
                }
            }
        };
        store.record_attempt(d.id, now, &outcome).await?;
        Ok(outcome)
    }
}

/// Claims up to `limit` deliveries due at `now` and sends them all at once; returns how many
/// were attempted. (The loop in [`run`] sends as slots free up instead; tests call this with a
/// moved `now`.)
pub async fn deliver_due(
    store: &Store,
    sender: &Sender,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<usize, StoreError> {
    let due = store
        .claim_due_deliveries(now, sender.lease(), limit)
        .await?;
    let results =
        futures::future::join_all(due.iter().map(|d| sender.attempt(store, d, now))).await;
    results.into_iter().try_fold(0, |n, r| r.map(|_| n + 1))
}

async fn send_loop(store: Store, sender: Sender, wake: Arc<Notify>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let tracker = TaskTracker::new();
    loop {
        let free = slots.available_permits();
        if free > 0 {
            match store
                .claim_due_deliveries(Utc::now(), sender.lease(), free as i64)
                .await
            {
                Ok(due) => {
                    for d in due {
                        let Ok(slot) = slots.clone().acquire_owned().await else {
                            break;
                        };
                        let (store, sender, stop) =
                            (store.clone(), sender.clone(), shutdown.clone());
                        tracker.spawn(async move {
                            // Cancelled mid-send, the lease runs out and the delivery is due again.
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                r = sender.attempt(&store, &d, Utc::now()) => if let Err(e) = r {
                                    tracing::warn!(delivery_id = %d.id, error = %e, "cannot record a webhook attempt");
                                },
                            }
                            drop(slot);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim webhook deliveries"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    tracker.close();
    tracker.wait().await;
}

// ---------------------------------------------------------------------------------------------
// The consumer

/// Decides and performs the ack of one message: an undecodable one is terminated; a kind that is
/// not notified (progress) is acked; otherwise the deliveries are added and the message acked
/// after the commit; a database error naks it for redelivery.
pub async fn handle(store: &Store, msg: &Message, wake: &Notify) -> Result<(), FeedError> {
    let env = match Envelope::<PlaybackStatus>::from_slice(&msg.payload) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!(subject = %msg.subject, error = %e, "undecodable status message terminated");
            msg.ack_with(AckKind::Term).await.map_err(FeedError::Ack)?;
            return Ok(());
        }
    };
    let status = env.payload;
    if let Some((event_type, body)) = notification(&status, env.occurred_at) {
        match store
            .add_deliveries(&status.msg_id(), event_type, status.camera_id.0, &body)
            .await
        {
            Ok(0) => {}
            Ok(added) => {
                tracing::debug!(playback_id = %status.playback_id, event_type, added, "webhook deliveries added");
                wake.notify_one();
            }
            Err(e) => {
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return Err(e.into());
            }
        }
    }
    msg.ack().await.map_err(FeedError::Ack)
}

async fn consume_once(
    store: &Store,
    js: &Context,
    replicas: usize,
    wake: &Notify,
) -> Result<(), FeedError> {
    let mut messages = crate::playbacks_feed::messages(js, replicas, CONSUMER).await?;
    while let Some(msg) = messages.next().await {
        handle(store, &msg?, wake).await?;
    }
    Ok(())
}

async fn consume_loop(
    store: Store,
    js: Context,
    replicas: usize,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = consume_once(&store, &js, replicas, &wake) => r,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "webhook consumer restarting");
        }
        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
            break;
        }
    }
}

/// Runs the consumer and the sender until `shutdown`.
pub async fn run(
    store: Store,
    js: Context,
    replicas: usize,
    sender: Sender,
    shutdown: CancellationToken,
) {
    let wake = Arc::new(Notify::new());
    tokio::join!(
        consume_loop(store.clone(), js, replicas, wake.clone(), shutdown.clone()),
        send_loop(store, sender, wake, shutdown),
    );
    tracing::info!("webhooks stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let strict = NetworkPolicy::default();
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            "fe80::1".parse().unwrap(),
            "::ffff:127.0.0.1".parse().unwrap(),
        ] {
            assert!(!strict.allows(ip), "{ip}");
        }
        for ip in ["10.1.2.3", "192.168.1.10", "93.184.216.34", "2001:db8::1"] {
            assert!(strict.allows(ip.parse().unwrap()), "{ip}");
        }
        let lab = NetworkPolicy::new(netpolicy::NetworkPolicy::parse("127.0.0.0/8").unwrap());
        assert!(lab.allows(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert!(!lab.allows(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))));
    }

    #[tokio::test]
    async fn urls_are_checked_for_form_and_address() {
        let strict = NetworkPolicy::default();
        for (url, want) in [
            ("ftp://example.com/", UrlRefused::NotHttp),
            ("not a url", UrlRefused::NotHttp),
            ("http://user:pw@10.0.0.1/", UrlRefused::Credentials),
            (
                "http://127.0.0.1:9/hook",
                UrlRefused::Address(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ),
            (
                "http://[::1]/hook",
                UrlRefused::Address(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ),
            (
                "http://localhost/hook",
                UrlRefused::Address(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ),
        ] {
            match strict.check_url(url).await {
                Err(UrlRefused::Address(_)) if matches!(want, UrlRefused::Address(_)) => {}
                got => assert_eq!(got.map(|_| ()), Err(want), "{url}"),
            }
        }
        assert!(strict
            .check_url("https://10.0.0.7:8443/hook?x=1")
            .await
            .is_ok());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Known answer from Python: hmac.new(b"whsec-test", b'1700000000.{"type":...}', sha256).
        assert_eq!(
            signature(
                "whsec-test",
                1_700_000_000,
                r#"{"type":"playback.completed"}"#
            ),
            "t=1700000000,v1=5a7c92739348008e63c928cd9cf3ecd086dfe0b84f4e20a5b41378c3897112d2"
        );
        assert_ne!(signature("k", 1, "{}"), signature("k", 2, "{}"));
    }

    #[test]
    fn retries_back_off_and_die_after_a_day() {
        let t0 = Utc::now();
        let s = |n| chrono::Duration::seconds(n);
        assert_eq!(retry_at(t0, 1, t0), Some(t0 + s(10)));
        assert_eq!(retry_at(t0, 2, t0 + s(10)), Some(t0 + s(30)));
        assert_eq!(retry_at(t0, 30, t0 + s(3600)), Some(t0 + s(7200)));
        let h = chrono::Duration::hours;
        // The last retry lands exactly on the deadline; one second later it would not.
        assert_eq!(retry_at(t0, 40, t0 + h(23)), Some(t0 + h(24)));
        assert_eq!(retry_at(t0, 40, t0 + h(23) + s(1)), None);
        assert_eq!(retry_at(t0, 40, t0 + h(25)), None);
    }
}

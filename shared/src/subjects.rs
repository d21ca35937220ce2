//! NATS stream names and subjects, as a codec: every subject camrec publishes is built here and
//! every subject it reads is parsed here, with round-trip tests.
//!
//! | stream      | subjects                                                  |
//! |-------------|-----------------------------------------------------------|
//! | `EVENTS`    | `event.created.<site>.<camera_id>`, `event.ended.<site>.<camera_id>` |
//! | `PLAYBACKS` | `playback.<status>.<site>.<camera_id>`                    |

use crate::ids::CameraId;
use crate::messages::StatusKind;
use std::fmt;

/// The stream that carries event messages from event-api to the workers.
pub const EVENTS_STREAM: &str = "EVENTS";
/// The stream that carries playback status messages from the workers.
pub const PLAYBACKS_STREAM: &str = "PLAYBACKS";
/// Every subject of the `EVENTS` stream.
pub const EVENTS_SUBJECTS: &str = "event.>";
/// Every subject of the `PLAYBACKS` stream.
pub const PLAYBACKS_SUBJECTS: &str = "playback.>";
/// The KV bucket where workers record which worker owns which recording.
pub const RECORDINGS_BUCKET: &str = "camrec_recordings";

/// A site name: the group of recorder hosts next to a set of cameras. One NATS token:
/// 1 to 64 of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Site(String);

/// A site name that is not one NATS token of the allowed characters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a site is 1 to 64 characters of letters, digits, '-' and '_'")]
pub struct InvalidSite;

impl Site {
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidSite> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s))
        } else {
            Err(InvalidSite)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Site {
    fn default() -> Self {
        Self("default".to_owned())
    }
}

impl TryFrom<String> for Site {
    type Error = InvalidSite;
    fn try_from(s: String) -> Result<Self, InvalidSite> {
        Site::new(s)
    }
}

impl From<Site> for String {
    fn from(s: Site) -> String {
        s.0
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The two kinds of event message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Ended,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Ended => "ended",
        }
    }
}

/// A parsed subject of the `EVENTS` or `PLAYBACKS` stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Event {
        kind: EventKind,
        site: Site,
        camera_id: CameraId,
    },
    Playback {
        status: StatusKind,
        site: Site,
        camera_id: CameraId,
    },
}

/// A subject that is not one of camrec's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a camrec subject")]
pub struct UnknownSubject;

impl Subject {
    pub fn parse(s: &str) -> Result<Self, UnknownSubject> {
        let parts: Vec<&str> = s.split('.').collect();
        let [root, kind, site, camera] = parts.as_slice() else {
            return Err(UnknownSubject);
        };
        let site = Site::new(*site).map_err(|_| UnknownSubject)?;
        let camera_id: CameraId = camera.parse().map_err(|_| UnknownSubject)?;
        match *root {
            "event" => {
                let kind = match *kind {
                    "created" => EventKind::Created,
                    "ended" => EventKind::Ended,
                    _ => return Err(UnknownSubject),
                };
                Ok(Subject::Event {
                    kind,
                    site,
                    camera_id,
                })
            }
            "playback" => {
                let status = StatusKind::from_token(kind).ok_or(UnknownSubject)?;
                Ok(Subject::Playback {
                    status,
                    site,
                    camera_id,
                })
            }
            _ => Err(UnknownSubject),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Event {
                kind,
                site,
                camera_id,
            } => write!(f, "event.{}.{site}.{camera_id}", kind.as_str()),
            Subject::Playback {
                status,
                site,
                camera_id,
            } => write!(f, "playback.{}.{site}.{camera_id}", status.as_token()),
        }
    }
}

/// `event.<kind>.<site>.<camera_id>`.
pub fn event_subject(kind: EventKind, site: &Site, camera_id: CameraId) -> String {
    Subject::Event {
        kind,
        site: site.clone(),
        camera_id,
    }
    .to_string()
}

/// `playback.<status>.<site>.<camera_id>`.
pub fn playback_subject(status: StatusKind, site: &Site, camera_id: CameraId) -> String {
    Subject::Playback {
        status,
        site: site.clone(),
        camera_id,
    }
    .to_string()
}

/// The filter of a camera's consumer: both kinds of event message of that camera,
/// `event.*.<site>.<camera_id>`, in the order event-api published them.
pub fn camera_event_filter(site: &Site, camera_id: CameraId) -> String {
    format!("event.*.{site}.{camera_id}")
}

/// The durable consumer of a camera's events, pulled by the worker that holds the camera (its
/// capture lease): `cam_<site>_<camera_id>`. The site is in the name so that a camera moved to
/// another site gets a consumer with the new filter.
pub fn camera_consumer_name(site: &Site, camera_id: CameraId) -> String {
    format!("cam_{site}_{camera_id}")
}

/// The `Nats-Msg-Id` of an event message: `<event_id>:<kind>`, so a relay retry is deduplicated.
pub fn event_msg_id(event_id: crate::EventId, kind: EventKind) -> String {
    format!("{event_id}:{}", kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subjects_round_trip() {
        let site = Site::new("north-1").unwrap();
        let cam = CameraId::new();
        for kind in [EventKind::Created, EventKind::Ended] {
            let s = event_subject(kind, &site, cam);
            assert_eq!(s, format!("event.{}.north-1.{cam}", kind.as_str()));
            assert_eq!(
                Subject::parse(&s).unwrap(),
                Subject::Event {
                    kind,
                    site: site.clone(),
                    camera_id: cam
                }
            );
        }
        for status in StatusKind::ALL {
            let s = playback_subject(status, &site, cam);
            assert_eq!(
                Subject::parse(&s).unwrap(),
                Subject::Playback {
                    status,
                    site: site.clone(),
                    camera_id: cam
                }
            );
        }
    }

    #[test]
    fn foreign_subjects_are_rejected() {
        for s in [
            "",
            "event.created.site",
            "event.opened.s.00000000-0000-0000-0000-000000000000",
            "event.created.s.not-a-uuid",
            "playback.paused.s.00000000-0000-0000-0000-000000000000",
            "other.created.s.00000000-0000-0000-0000-000000000000",
        ] {
            assert_eq!(Subject::parse(s), Err(UnknownSubject), "{s}");
        }
    }

    #[test]
    fn sites_are_single_tokens() {
        assert!(Site::new("default").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(Site::new(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Site>("\"a.b\"").is_err());
    }

    #[test]
    fn filters_match_the_subjects_they_serve() {
        let site = Site::new("s1").unwrap();
        let cam: CameraId = "00000000-0000-0000-0000-00000000000a".parse().unwrap();
        assert_eq!(
            camera_event_filter(&site, cam),
            "event.*.s1.00000000-0000-0000-0000-00000000000a"
        );
        for kind in [EventKind::Created, EventKind::Ended] {
            let subject = event_subject(kind, &site, cam);
            let filter = camera_event_filter(&site, cam);
            let matches = subject
                .split('.')
                .zip(filter.split('.'))
                .all(|(s, f)| f == "*" || s == f);
            assert!(matches, "{filter} matches {subject}");
        }
        let name = camera_consumer_name(&site, cam);
        assert_eq!(name, "cam_s1_00000000-0000-0000-0000-00000000000a");
        assert!(
            !name.contains(['.', '*', '>', ' ']),
            "a valid consumer name"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,120}") {
            let _ = Subject::parse(&s);
        }
    }
}

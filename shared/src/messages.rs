//! The versioned JSON messages of the `EVENTS` and `PLAYBACKS` streams.
//!
//! Every message is an [`Envelope`]: a schema version, a message id, the time it happened and a
//! payload. Readers ignore unknown fields (no `deny_unknown_fields` anywhere here), changes are
//! additive, and a breaking change gets a new [`SCHEMA_VERSION`].

use crate::ids::{CameraId, EventId, PlaybackId};
use crate::rtsp::RtspUrl;
use crate::subjects::Site;
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

/// The schema version this build writes. Readers accept this version and ignore unknown fields.
pub const SCHEMA_VERSION: u32 = 1;

/// Every message on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The schema version of `payload`.
    pub schema_version: u32,
    /// Unique per message; used as `Nats-Msg-Id` where no natural id exists.
    pub message_id: Uuid,
    /// When the thing the message announces happened.
    pub occurred_at: DateTime<Utc>,
    pub payload: T,
}

/// A message that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported schema version {0}")]
    Version(u32),
}

impl<T: Serialize + DeserializeOwned> Envelope<T> {
    pub fn new(occurred_at: DateTime<Utc>, payload: T) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            message_id: Uuid::now_v7(),
            occurred_at,
            payload,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no custom
        // serializers that error.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a message, refusing versions newer than this build understands.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env: Self = serde_json::from_slice(bytes)?;
        if env.schema_version > SCHEMA_VERSION || env.schema_version == 0 {
            return Err(DecodeError::Version(env.schema_version));
        }
        Ok(env)
    }
}

/// What happened on a camera.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Motion,
    Alert,
    Error,
    /// A recording started by hand through the API (the old "record without an event").
    Manual,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::Motion,
        EventType::Alert,
        EventType::Error,
        EventType::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Motion => "MOTION",
            EventType::Alert => "ALERT",
            EventType::Error => "ERROR",
            EventType::Manual => "MANUAL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// How long and how a recording may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingLimits {
    /// The worker stops the recording after this many seconds if the event is not ended first.
    pub max_duration_sec: u32,
    /// Seconds before the event to include, where the worker keeps a buffer (0: none).
    #[serde(default)]
    pub pre_roll_sec: u32,
    /// Seconds to keep recording after the event ends.
    #[serde(default)]
    pub post_roll_sec: u32,
}

/// `event.created`: a recording should start. The only message that carries a credential: the
/// camera's username inside `rtsp_url`, its password sealed (`password_sealed`, opened by the
/// worker with `crate::sealed::CameraKeys`). Older writers put the password in `rtsp_url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventCreated {
    pub event_id: EventId,
    pub playback_id: PlaybackId,
    pub camera_id: CameraId,
    pub camera_name: String,
    pub site: Site,
    pub event_type: EventType,
    pub rtsp_url: RtspUrl,
    /// The camera's password, sealed for this camera (`v1.<key id>.<...>`); absent when the
    /// camera has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_sealed: Option<String>,
    pub limits: RecordingLimits,
    /// The moment of the event (`occurredAt` of `POST /events`): the clip starts `pre_roll_sec`
    /// before it. Absent from older writers: the worker then uses the envelope's `occurred_at`.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Why an event ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `POST /events/:id/end`.
    Ended,
    /// `POST /playbacks/:id/stop`.
    PlaybackStopped,
    /// `DELETE /playbacks/:id` or `DELETE /events/:id` of a running recording.
    Deleted,
    /// The worker stopped the recording at the event's `max_duration_sec` (event-api records it
    /// from the worker's [`StopCause::MaxDuration`]; no `event.ended` carries it).
    MaxDuration,
    /// A reason added by a newer writer.
    #[serde(other)]
    Other,
}

impl EndReason {
    /// The wire name, also stored in `events.end_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Ended => "ended",
            EndReason::PlaybackStopped => "playback_stopped",
            EndReason::Deleted => "deleted",
            EndReason::MaxDuration => "max_duration",
            EndReason::Other => "other",
        }
    }
}

/// `event.ended`: the event ended; its recording runs its post-roll past `ended_at`, then stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnded {
    pub event_id: EventId,
    /// The event's playback, when its type records.
    pub playback_id: Option<PlaybackId>,
    pub camera_id: CameraId,
    pub site: Site,
    pub reason: EndReason,
    /// When the event ended: the clip ends `post_roll_sec` after it. Absent from older writers:
    /// the worker then takes the time the message reached it.
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
}

/// Why the worker stopped a recording, as reported in `processing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// The event was ended (`event.ended`).
    EventEnded,
    /// The event's `max_duration_sec` ran out: event-api ends the event with this reason.
    MaxDuration,
    /// The camera stopped delivering and did not come back in time.
    CameraLost,
    /// The worker was shutting down.
    Shutdown,
    /// A cause added by a newer writer.
    #[serde(other)]
    Other,
}

/// The kinds of playback status message; also the `<status>` token of the subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    Recording,
    Progress,
    Processing,
    Completed,
    Failed,
}

impl StatusKind {
    pub const ALL: [StatusKind; 5] = [
        StatusKind::Recording,
        StatusKind::Progress,
        StatusKind::Processing,
        StatusKind::Completed,
        StatusKind::Failed,
    ];

    pub fn as_token(self) -> &'static str {
        match self {
            StatusKind::Recording => "recording",
            StatusKind::Progress => "progress",
            StatusKind::Processing => "processing",
            StatusKind::Completed => "completed",
            StatusKind::Failed => "failed",
        }
    }

    pub fn from_token(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_token() == s)
    }
}

/// Why a playback failed. Stable codes for machines; the message is for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The camera could not be reached (after the bounded retry at start).
    CameraUnreachable,
    /// FFmpeg failed and nothing usable was recorded.
    RecordingFailed,
    /// The recording holds no playable media.
    NoMedia,
    /// ffprobe could not read the result.
    ProbeFailed,
    /// The upload failed for longer than the worker retries it; the local file is kept.
    UploadFailed,
    /// The event ended before a worker could start recording it.
    EndedBeforeStart,
    /// The owning worker stopped reporting (reconciler).
    WorkerLost,
    /// No worker took the recording in time (reconciler).
    NotStarted,
    /// The recording was deleted before it finished.
    Deleted,
    /// Its `event.created` could never be published (event-api's relay set it aside).
    Undeliverable,
    /// A code added by a newer writer.
    #[serde(other)]
    Other,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::CameraUnreachable => "camera_unreachable",
            FailureCode::RecordingFailed => "recording_failed",
            FailureCode::NoMedia => "no_media",
            FailureCode::ProbeFailed => "probe_failed",
            FailureCode::UploadFailed => "upload_failed",
            FailureCode::EndedBeforeStart => "ended_before_start",
            FailureCode::WorkerLost => "worker_lost",
            FailureCode::NotStarted => "not_started",
            FailureCode::Deleted => "deleted",
            FailureCode::Undeliverable => "undeliverable",
            FailureCode::Other => "other",
        }
    }

    /// The code of `s` (its wire name); unknown names are [`FailureCode::Other`].
    pub fn parse(s: &str) -> Self {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .unwrap_or(FailureCode::Other)
    }
}

/// An interval inside a clip where the camera delivered nothing (connection lost, camera
/// rebooted): the clip skips it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Wall-clock time of the last frame before the gap.
    pub from: DateTime<Utc>,
    /// Wall-clock time of the first frame after the gap.
    pub to: DateTime<Utc>,
}

/// What a finished clip is: everything the playback row shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletedClip {
    /// `playbacks/<playback_id>/video.mp4`.
    pub object_key: String,
    /// The worker's view of a URL for the clip (public URL, or a signed URL that expires);
    /// event-api computes the URL it serves from `object_key` at read time.
    #[serde(default)]
    pub url: Option<String>,
    /// `playbacks/<playback_id>/thumb.jpg`, when a thumbnail was made.
    #[serde(default)]
    pub thumb_key: Option<String>,
    pub size_bytes: u64,
    pub duration_sec: f64,
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub audio_codec: Option<String>,
    /// Hex SHA-256 of the uploaded clip.
    pub sha256: String,
    /// Wall-clock time of the clip's first frame, from the capture.
    pub started_at: DateTime<Utc>,
    /// Wall-clock time of the clip's last frame, from the capture.
    pub ended_at: DateTime<Utc>,
    /// True when the recording was cut short (camera lost, worker crash) and holds less than the
    /// event's duration.
    #[serde(default)]
    pub partial: bool,
    /// The intervals inside the clip where the camera delivered nothing, oldest first.
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// True when the capture did not hold `occurred_at - pre_roll_sec` (the camera was just added,
    /// the worker just took it over): the clip starts at the oldest frame held.
    #[serde(default)]
    pub started_late: bool,
    /// `playbacks/<playback_id>/index.m3u8`: the closed HLS playlist of the segments the clip
    /// was uploaded in while it was recorded (absent from older workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_list_key: Option<String>,
}

/// The body of a status message, tagged by `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StatusBody {
    /// FFmpeg has the stream.
    Recording {
        started_at: DateTime<Utc>,
    },
    /// Periodic figures from FFmpeg's `-progress` output; also the worker's heartbeat.
    Progress {
        frames: u64,
        #[serde(default)]
        fps: Option<f64>,
        #[serde(default)]
        bitrate_kbps: Option<f64>,
        bytes: u64,
        media_time_sec: f64,
    },
    /// Recording stopped; probing and uploading. Repeated as a heartbeat while uploads retry.
    Processing {
        ended_at: DateTime<Utc>,
        /// Why the recording stopped; absent in messages from older workers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stopped_by: Option<StopCause>,
    },
    Completed(CompletedClip),
    /// `message` never contains a credential.
    Failed {
        code: FailureCode,
        message: String,
    },
}

impl StatusBody {
    pub fn kind(&self) -> StatusKind {
        match self {
            StatusBody::Recording { .. } => StatusKind::Recording,
            StatusBody::Progress { .. } => StatusKind::Progress,
            StatusBody::Processing { .. } => StatusKind::Processing,
            StatusBody::Completed(_) => StatusKind::Completed,
            StatusBody::Failed { .. } => StatusKind::Failed,
        }
    }
}

/// A `playback.<status>` message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaybackStatus {
    pub playback_id: PlaybackId,
    pub event_id: EventId,
    pub camera_id: CameraId,
    pub site: Site,
    /// The worker that sent it (`WORKER_ID`), or `event-api` for the reconciler.
    pub worker_id: String,
    /// Per playback, strictly increasing across the messages of one playback, also across a
    /// worker restart. The projector ignores a message whose `seq` is not newer than the last it
    /// applied.
    pub seq: u64,
    /// Set by a worker that took the camera over and continues a recording its previous holder
    /// left open: that holder's `worker_id`. The projector then hands the playback to the sender
    /// (only from that owner, only while the playback is open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takes_over_from: Option<String>,
    #[serde(flatten)]
    pub body: StatusBody,
}

impl PlaybackStatus {
    /// The `Nats-Msg-Id` of this status: `<playback_id>:<seq>`.
    pub fn msg_id(&self) -> String {
        format!("{}:{}", self.playback_id, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> EventCreated {
        EventCreated {
            event_id: EventId::new(),
            playback_id: PlaybackId::new(),
            camera_id: CameraId::new(),
            camera_name: "gate".into(),
            site: Site::default(),
            event_type: EventType::Motion,
            rtsp_url: RtspUrl::parse("rtsp://u:p@127.0.0.1:8554/cam").unwrap(),
            password_sealed: None,
            limits: RecordingLimits {
                max_duration_sec: 600,
                pre_roll_sec: 0,
                post_roll_sec: 0,
            },
            occurred_at: Some(Utc::now()),
        }
    }

    fn clip() -> CompletedClip {
        let t0 = "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        CompletedClip {
            object_key: "playbacks/x/video.mp4".into(),
            url: None,
            thumb_key: None,
            size_bytes: 1,
            duration_sec: 12.5,
            video_codec: "h264".into(),
            width: 640,
            height: 360,
            audio_codec: None,
            sha256: "00".into(),
            started_at: t0,
            ended_at: t0 + chrono::Duration::seconds(13),
            partial: false,
            gaps: vec![Gap {
                from: t0 + chrono::Duration::seconds(3),
                to: t0 + chrono::Duration::seconds(5),
            }],
            started_late: true,
            segment_list_key: None,
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let env = Envelope::new(Utc::now(), created());
        let back = Envelope::<EventCreated>::from_slice(&env.to_bytes()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn readers_ignore_unknown_fields_and_refuse_future_versions() {
        let mut v = serde_json::to_value(Envelope::new(Utc::now(), created())).unwrap();
        v["extra"] = serde_json::json!(1);
        v["payload"]["new_field"] = serde_json::json!({"a": 1});
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(Envelope::<EventCreated>::from_slice(&bytes).is_ok());
        v["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Envelope::<EventCreated>::from_slice(&bytes),
            Err(DecodeError::Version(_))
        ));
    }

    #[test]
    fn status_messages_are_flat_and_tagged() {
        let msg = PlaybackStatus {
            playback_id: PlaybackId::new(),
            event_id: EventId::new(),
            camera_id: CameraId::new(),
            site: Site::default(),
            worker_id: "w1".into(),
            seq: 7,
            takes_over_from: None,
            body: StatusBody::Failed {
                code: FailureCode::CameraUnreachable,
                message: "connection refused".into(),
            },
        };
        let v = serde_json::to_value(&msg).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["code"], "camera_unreachable");
        let back: PlaybackStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.body.kind(), StatusKind::Failed);
    }

    #[test]
    fn unknown_codes_and_reasons_read_as_other() {
        let c: FailureCode = serde_json::from_str("\"disk_on_fire\"").unwrap();
        assert_eq!(c, FailureCode::Other);
        let r: EndReason = serde_json::from_str("\"sunset\"").unwrap();
        assert_eq!(r, EndReason::Other);
        let s: StopCause = serde_json::from_str("\"eclipse\"").unwrap();
        assert_eq!(s, StopCause::Other);
        assert_eq!(FailureCode::parse("meteor"), FailureCode::Other);
    }

    #[test]
    fn names_match_the_wire() {
        for code in [
            FailureCode::WorkerLost,
            FailureCode::Undeliverable,
            FailureCode::Other,
        ] {
            assert_eq!(FailureCode::parse(code.as_str()), code);
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        for r in [
            EndReason::Ended,
            EndReason::PlaybackStopped,
            EndReason::Deleted,
            EndReason::MaxDuration,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn processing_carries_its_stop_cause_and_reads_old_messages() {
        let v = serde_json::json!({"status": "processing", "ended_at": "2026-01-01T00:00:00Z"});
        let old: StatusBody = serde_json::from_value(v).unwrap();
        assert!(matches!(
            old,
            StatusBody::Processing {
                stopped_by: None,
                ..
            }
        ));
        let new = StatusBody::Processing {
            ended_at: Utc::now(),
            stopped_by: Some(StopCause::MaxDuration),
        };
        let v = serde_json::to_value(&new).unwrap();
        assert_eq!(v["stopped_by"], "max_duration");
    }

    #[test]
    fn event_times_round_trip_and_old_messages_read_without_them() {
        let c = created();
        let back: EventCreated = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let mut v = serde_json::to_value(&c).unwrap();
        v.as_object_mut().unwrap().remove("occurred_at");
        let old: EventCreated = serde_json::from_value(v).unwrap();
        assert_eq!(old.occurred_at, None);

        let ended = EventEnded {
            event_id: EventId::new(),
            playback_id: Some(PlaybackId::new()),
            camera_id: CameraId::new(),
            site: Site::default(),
            reason: EndReason::Ended,
            ended_at: Some(Utc::now()),
        };
        let v = serde_json::to_value(&ended).unwrap();
        assert!(v["ended_at"].is_string());
        assert_eq!(
            serde_json::from_value::<EventEnded>(v.clone()).unwrap(),
            ended
        );
        let mut v = v;
        v.as_object_mut().unwrap().remove("ended_at");
        assert_eq!(
            serde_json::from_value::<EventEnded>(v).unwrap().ended_at,
            None
        );
    }

    #[test]
    fn completed_clips_carry_gaps_and_read_old_messages() {
        let body = StatusBody::Completed(clip());
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["gaps"][0]["from"], "2026-01-01T00:00:03Z");
        assert_eq!(v["gaps"][0]["to"], "2026-01-01T00:00:05Z");
        assert_eq!(v["started_late"], true);
        assert_eq!(
            serde_json::from_value::<StatusBody>(v.clone()).unwrap(),
            body
        );
        let mut v = v;
        v.as_object_mut().unwrap().remove("gaps");
        v.as_object_mut().unwrap().remove("started_late");
        let StatusBody::Completed(old) = serde_json::from_value::<StatusBody>(v).unwrap() else {
            panic!("not completed");
        };
        assert!(old.gaps.is_empty());
        assert!(!old.started_late);
    }

    #[test]
    fn the_credential_is_on_the_wire_only_in_event_created() {
        let c = created();
        assert!(format!("{c:?}").contains("u:***@"));
        assert!(!format!("{c:?}").contains("u:p@"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("rtsp://u:p@127.0.0.1:8554/cam"));
    }
}

//! camrec's wire contract, shared by `event-api` and `recorder-worker`.
//!
//! Everything that crosses a process boundary is defined here exactly once: typed ids
//! ([`ids`]), NATS subjects and stream names ([`subjects`]), the versioned JSON messages
//! ([`messages`]), the RTSP URL type that never prints its credential ([`rtsp`]), the object
//! key layout plus the storage backend both services open ([`storage`]), the camera catalog and
//! capture leases of the per-camera capture ([`capture`]) and how every process connects to NATS
//! ([`natsconn`]). The two small helpers every binary needs, [`telemetry`] and [`shutdown`], and
//! the retry [`backoff`] live here too so that both services log and stop the same way.

pub mod backoff;
pub mod capture;
pub mod hls;
pub mod ids;
pub mod messages;
pub mod natsconn;
pub mod netpolicy;
pub mod rtsp;
pub mod sealed;
pub mod shutdown;
pub mod storage;
pub mod streams;
pub mod subjects;
pub mod telemetry;

pub use ids::{CameraId, EventId, PlaybackId};

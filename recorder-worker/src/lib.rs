//! camrec recorder worker: consumes event messages from NATS, records the camera's RTSP stream
//! with FFmpeg, finalizes and uploads the clip, and reports every state change as a status message.

pub mod config;
pub mod consumer;
pub mod ffmpeg;
pub mod finalize;
pub mod ownership;
pub mod probe;
pub mod progress;
pub mod recording;
pub mod recovery;
pub mod status;
pub mod upload;
pub mod worker;

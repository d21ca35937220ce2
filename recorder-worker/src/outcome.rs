//! How a recording ends, shared by the recording itself ([`crate::recording`]), its finish
//! ([`crate::finish`]) and crash recovery ([`crate::recovery`]): its states, its outcome, and the
//! failure that ends it without a clip.

use camrec_shared::messages::FailureCode;
use camrec_shared::PlaybackId;

/// Where a recording is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Claimed,
    Starting,
    Recording,
    Finalizing,
    Uploading,
    Done,
    Failed,
}

/// Logs a state change of a recording.
pub(crate) fn note_state(id: PlaybackId, state: State) {
    tracing::debug!(playback_id = %id, ?state, "recording state");
}

/// How a recording ended, for the caller's log and the tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed {
        partial: bool,
    },
    Failed(FailureCode),
    /// The worker's shutdown deadline passed first: the directory stays for the next start.
    Abandoned,
    /// Another worker took the camera over and continues the recording: this one wrote nothing
    /// more and reported nothing.
    TakenOver,
}

/// A recording that ends without a clip.
pub(crate) struct Failure {
    pub code: FailureCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

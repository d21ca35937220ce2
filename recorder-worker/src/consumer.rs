//! consumer (orchestration, in progress).

//! recording (orchestration, in progress).

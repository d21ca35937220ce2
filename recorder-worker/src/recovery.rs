//! recovery (orchestration, in progress).

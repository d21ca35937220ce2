//! config (orchestration, in progress).

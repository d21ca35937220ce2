//! status (orchestration, in progress).

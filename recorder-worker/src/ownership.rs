//! ownership (orchestration, in progress).

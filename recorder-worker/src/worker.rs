//! worker (orchestration, in progress).

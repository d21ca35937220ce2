//! The wall clock the HTTP layer judges request times by (`occurredAt` bounds, the default moment
//! of an event, the age of a capture lease). Injected, so tests of time bounds set the time
//! instead of racing it.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

/// The system clock, or a manual one that tests set.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<Mutex<DateTime<Utc>>>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that reads `at` until [`Clock::set`] moves it.
    pub fn manual(at: DateTime<Utc>) -> Self {
        Self(Some(Arc::new(Mutex::new(at))))
    }

    /// Moves a manual clock (every clone of it) to `at`; the system clock ignores it.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(t) = &self.0 {
            *t.lock().unwrap_or_else(|e| e.into_inner()) = at;
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            None => Utc::now(),
            Some(t) => *t.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_reads_what_it_was_set_to_in_every_clone() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Clock::manual(t0);
        let other = clock.clone();
        assert_eq!(other.now(), t0);
        clock.set(t0 + chrono::Duration::seconds(5));
        assert_eq!(other.now(), t0 + chrono::Duration::seconds(5));
        let system = Clock::system();
        system.set(t0);
        assert!(system.now() > t0);
    }
}

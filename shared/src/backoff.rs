//! Capped exponential backoff and a cancellable sleep: the one copy both services' retry loops use.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Doubles from `initial` up to `max`; `reset` after a success.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the following one doubles (capped).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The delay before retry number `attempt` (0-based): `initial × 2^attempt`, capped at `max`.
/// For loops that count their attempts instead of keeping a [`Backoff`].
pub fn nth_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    initial
        .checked_mul(2u32.saturating_pow(attempt.min(31)))
        .unwrap_or(max)
        .min(max)
}

/// Sleeps for `d` unless `shutdown` fires first; returns false when it did.
pub async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn nth_delay_doubles_up_to_the_cap() {
        let (one, max) = (Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(nth_delay(0, one, max), one);
        assert_eq!(nth_delay(1, one, max), Duration::from_secs(2));
        assert_eq!(nth_delay(4, one, max), Duration::from_secs(16));
        assert_eq!(nth_delay(5, one, max), max);
        assert_eq!(nth_delay(u32::MAX, one, max), max);
    }

    #[tokio::test]
    async fn sleep_or_cancel_returns_false_when_cancelled() {
        let token = CancellationToken::new();
        token.cancel();
        assert!(!sleep_or_cancel(Duration::from_secs(3600), &token).await);
        assert!(sleep_or_cancel(Duration::ZERO, &CancellationToken::new()).await);
    }
}

//! Guards `POST /auth/login`, which anyone can call and which is expensive on purpose: failed
//! logins are limited per username and per client address within a window, and a caller over
//! either limit gets 429 with `Retry-After` before any password is hashed. An attempt counts as
//! a failure from the moment it is let through ([`LoginGuard::attempt`]) and is taken back when
//! it succeeds, so a hundred concurrent guesses cannot all slip past the limit. (How many hashes
//! run at once is bounded separately, in `auth`.) Time is a parameter, so the rules are tested
//! without waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Above this many tracked keys, expired windows are dropped before a new key is added.
const MAX_TRACKED: usize = 10_000;

/// How many failed logins are allowed, and for how long they count.
#[derive(Clone, Copy, Debug)]
pub struct LoginLimits {
    /// `LOGIN_MAX_FAILURES`: failed logins per username in a window.
    pub per_username: u32,
    /// `LOGIN_MAX_FAILURES_PER_ADDRESS`: failed logins per client address in a window.
    pub per_address: u32,
    /// `LOGIN_WINDOW_SEC`: a window starts at its first failure.
    pub window: Duration,
}

/// Failures of one key since `started`.
#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failure windows by key, bounded in size.
#[derive(Debug)]
struct Counter<K> {
    windows: HashMap<K, Window>,
}

impl<K: Eq + Hash> Counter<K> {
    fn new() -> Self {
        Self {
            windows: HashMap::new(),
        }
    }

    /// How long `key` must wait when it has used up `max` failures, else `None`.
    fn blocked_for(&self, key: &K, max: u32, window: Duration, now: Instant) -> Option<Duration> {
        let w = self.windows.get(key)?;
        let ends = w.started + window;
        (w.failures >= max && now < ends).then(|| ends - now)
    }

    fn fail(&mut self, key: K, window: Duration, now: Instant) {
        if self.windows.len() >= MAX_TRACKED && !self.windows.contains_key(&key) {
            self.windows.retain(|_, w| now < w.started + window);
        }
        let w = self.windows.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= w.started + window {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures += 1;
    }

    fn clear(&mut self, key: &K) {
        self.windows.remove(key);
    }

    fn take_back(&mut self, key: &K) {
        if let Some(w) = self.windows.get_mut(key) {
            w.failures = w.failures.saturating_sub(1);
        }
    }
}

#[derive(Debug)]
struct Failures {
    by_username: Counter<String>,
    by_address: Counter<IpAddr>,
}

/// The failed-login limits of one event-api process.
#[derive(Debug)]
pub struct LoginGuard {
    limits: LoginLimits,
    failures: Mutex<Failures>,
}

impl LoginGuard {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            failures: Mutex::new(Failures {
                by_username: Counter::new(),
                by_address: Counter::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        // Counters only: a panicking holder cannot leave them inconsistent.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets an attempt through and counts it as a failure until [`LoginGuard::succeeded`]
    /// says otherwise; `Err(retry_after)` when `username` or `address` has used up its failures.
    pub fn attempt(
        &self,
        username: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut f = self.lock();
        let l = self.limits;
        let username = username.to_lowercase();
        let user = f
            .by_username
            .blocked_for(&username, l.per_username, l.window, now);
        let addr = address.and_then(|a| f.by_address.blocked_for(&a, l.per_address, l.window, now));
        if let Some(wait) = user.max(addr) {
            return Err(wait);
        }
        f.by_username.fail(username, l.window, now);
        if let Some(a) = address {
            f.by_address.fail(a, l.window, now);
        }
        Ok(())
    }

    /// A successful login forgets the username's failures and takes back its own attempt from
    /// the address's count.
    pub fn succeeded(&self, username: &str, address: Option<IpAddr>) {
        let mut f = self.lock();
        f.by_username.clear(&username.to_lowercase());
        if let Some(a) = address {
            f.by_address.take_back(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LoginLimits = LoginLimits {
        per_username: 3,
        per_address: 5,
        window: Duration::from_secs(60),
    };

    fn addr(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn a_username_is_blocked_after_its_failures_until_the_window_ends() {
        let g = LoginGuard::new(LIMITS);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(g.attempt("admin", addr(i), t0).is_ok());
        }
        let wait = g.attempt("ADMIN", addr(9), t0 + Duration::from_secs(10));
        assert_eq!(wait, Err(Duration::from_secs(50)), "any address, any case");
        assert!(g.attempt("someone", addr(9), t0).is_ok());
        assert!(g.attempt("admin", addr(9), t0 + LIMITS.window).is_ok());
    }

    #[test]
    fn an_address_is_blocked_whatever_usernames_it_tries() {
        let g = LoginGuard::new(LIMITS);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(g.attempt(&format!("user{i}"), addr(1), t0).is_ok());
        }
        assert!(g.attempt("fresh", addr(1), t0).is_err());
        assert!(g.attempt("fresh", addr(2), t0).is_ok());
        assert!(g.attempt("fresh2", None, t0).is_ok(), "no address known");
    }

    #[test]
    fn success_takes_the_attempt_back_and_forgets_the_usernames_failures() {
        let g = LoginGuard::new(LIMITS);
        let t0 = Instant::now();
        for _ in 0..2 {
            g.attempt("admin", addr(1), t0).unwrap();
        }
        g.attempt("admin", addr(1), t0).unwrap();
        g.succeeded("admin", addr(1));
        for _ in 0..3 {
            assert!(g.attempt("admin", None, t0).is_ok());
        }
        assert!(g.attempt("admin", None, t0).is_err());
        // The address counted 3 attempts and got one back: 3 more fit in its 5.
        for i in 0..3 {
            assert!(g.attempt(&format!("other{i}"), addr(1), t0).is_ok());
        }
        assert!(g.attempt("other9", addr(1), t0).is_err());
    }

    #[test]
    fn the_tracked_keys_stay_bounded() {
        let g = LoginGuard::new(LIMITS);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            let _ = g.attempt(&format!("u{i}"), None, t0);
        }
        let _ = g.attempt("late", None, t0 + LIMITS.window);
        assert!(g.lock().by_username.windows.len() <= MAX_TRACKED);
    }
}

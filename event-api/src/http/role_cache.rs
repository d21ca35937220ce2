//! A short-lived, in-process cache of each user's stored role, so that authenticating a request
//! does not cost a database round trip every time.
//!
//! An entry lives `AUTH_CACHE_SEC` (0 disables the cache). A change made through this instance
//! (`PUT /users/:id`, `DELETE /users/:id`) drops the user's entry at once; a change made through
//! another replica (or directly in the database) takes effect here within the TTL. A load that
//! started before an invalidation does not store its (possibly stale) answer.

use super::auth::Role;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Above this many entries, expired ones are dropped before a new one is stored (and all of
/// them when none has expired), so tokens of many users cannot grow the map without bound.
const MAX_ENTRIES: usize = 10_000;

/// Users' roles, each remembered for a TTL.
#[derive(Debug)]
pub struct RoleCache {
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Uuid, (Role, Instant)>,
    /// Bumped by every invalidation: a load that began under an older generation may have read
    /// the row before the change, so its answer is not stored.
    generation: u64,
}

/// A miss: what a load must hand back to [`RoleCache::store`].
#[derive(Clone, Copy, Debug)]
pub struct Miss {
    generation: u64,
}

impl RoleCache {
    /// A cache whose entries live `ttl`; `Duration::ZERO` caches nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map holds no invariant a panicking holder could break halfway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The role of `user` if it was loaded less than the TTL before `now`.
    pub fn get(&self, user: Uuid, now: Instant) -> Result<Role, Miss> {
        let inner = self.lock();
        match inner.entries.get(&user) {
            Some(&(role, loaded)) if now.saturating_duration_since(loaded) < self.ttl => Ok(role),
            _ => Err(Miss {
                generation: inner.generation,
            }),
        }
    }

    /// Remembers `role`, loaded at `now` after `miss`, unless an invalidation came in between.
    pub fn store(&self, user: Uuid, role: Role, miss: Miss, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != miss.generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            inner
                .entries
                .retain(|_, (_, loaded)| now.saturating_duration_since(*loaded) < ttl);
            if inner.entries.len() >= MAX_ENTRIES {
                inner.entries.clear();
            }
        }
        inner.entries.insert(user, (role, now));
    }

    /// Forgets `user` at once (their role changed or they were deleted).
    pub fn invalidate(&self, user: Uuid) {
        let mut inner = self.lock();
        inner.entries.remove(&user);
        inner.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn a_role_is_served_for_the_ttl_then_loaded_again() {
        let cache = RoleCache::new(TTL);
        let (user, t0) = (Uuid::new_v4(), Instant::now());
        let miss = cache.get(user, t0).unwrap_err();
        cache.store(user, Role::Operator, miss, t0);
        assert_eq!(cache.get(user, t0 + TTL / 2).unwrap(), Role::Operator);
        assert!(cache.get(user, t0 + TTL).is_err());
    }

    #[test]
    fn an_invalidation_drops_the_entry_and_a_load_that_began_before_it() {
        let cache = RoleCache::new(TTL);
        let (user, now) = (Uuid::new_v4(), Instant::now());
        let miss = cache.get(user, now).unwrap_err();
        cache.store(user, Role::Admin, miss, now);
        cache.invalidate(user);
        assert!(cache.get(user, now).is_err());
        // A request read ADMIN before the demotion and stores it after the invalidation.
        let stale = cache.get(user, now).unwrap_err();
        cache.invalidate(user);
        cache.store(user, Role::Admin, stale, now);
        assert!(cache.get(user, now).is_err());
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = RoleCache::new(Duration::ZERO);
        let (user, now) = (Uuid::new_v4(), Instant::now());
        let miss = cache.get(user, now).unwrap_err();
        cache.store(user, Role::Viewer, miss, now);
        assert!(cache.get(user, now).is_err());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let cache = RoleCache::new(TTL);
        let t0 = Instant::now();
        for _ in 0..MAX_ENTRIES {
            let user = Uuid::new_v4();
            let miss = cache.get(user, t0).unwrap_err();
            cache.store(user, Role::Viewer, miss, t0);
        }
        let (user, later) = (Uuid::new_v4(), t0 + TTL);
        let miss = cache.get(user, later).unwrap_err();
        cache.store(user, Role::Viewer, miss, later);
        assert_eq!(cache.lock().entries.len(), 1);
    }
}

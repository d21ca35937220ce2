//! Whether event-api can reach NATS, and since when. While it cannot, no worker's report could
//! reach it either, so the reconciler presumes nothing; `/ready` and `/metrics` show it.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

/// Shared by the connection's event callback (the writer) and its readers.
#[derive(Clone, Debug, Default)]
pub struct NatsLink(Arc<Mutex<Option<DateTime<Utc>>>>);

impl NatsLink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<DateTime<Utc>>> {
        // A plain value: a panicking holder cannot leave it half-written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection is up from `at` (a reconnect after an outage starts a new span).
    pub fn connected(&self, at: DateTime<Utc>) {
        let mut since = self.lock();
        if since.is_none() {
            *since = Some(at);
        }
        metrics::gauge!("nats_connected").set(1.0);
    }

    pub fn disconnected(&self) {
        *self.lock() = None;
        metrics::gauge!("nats_connected").set(0.0);
    }

    /// Since when the connection has been up without interruption; `None` while it is down.
    pub fn up_since(&self) -> Option<DateTime<Utc>> {
        *self.lock()
    }

    /// Connect options that keep this link current.
    pub fn watch(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        let link = self.clone();
        options.event_callback(move |event| {
            let link = link.clone();
            async move {
                match event {
                    async_nats::Event::Connected => link.connected(Utc::now()),
                    async_nats::Event::Disconnected => link.disconnected(),
                    // A refused login or a subject event-api's NATS user may not use
                    // (nats-users.conf): the server says so here, not in the call that failed.
                    async_nats::Event::ServerError(e) => {
                        tracing::warn!(error = %e, "the NATS server refused something")
                    }
                    _ => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_starts_a_new_span() {
        let link = NatsLink::default();
        assert_eq!(link.up_since(), None);
        let t0 = Utc::now();
        link.connected(t0);
        link.connected(t0 + chrono::Duration::seconds(5));
        assert_eq!(link.up_since(), Some(t0), "still the first span");
        link.disconnected();
        assert_eq!(link.up_since(), None);
        let t1 = t0 + chrono::Duration::seconds(60);
        link.connected(t1);
        assert_eq!(link.up_since(), Some(t1));
    }
}

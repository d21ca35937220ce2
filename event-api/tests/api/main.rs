//! event-api's integration tests: one binary, one module per area. Every test starts its own
//! service through `support::spawn_app` against a fresh PostgreSQL database and its own
//! nats-server, and talks to it over HTTP.

mod analytics;
mod auth;
mod cameras;
mod capture;
mod events;
mod fuzz_findings;
mod live;
mod nats_auth;
mod ops;
mod outbox;
mod playbacks;
mod postgres_tls;
mod projector;
mod retention;
mod roles;
mod server;
mod support;
mod webhooks;

//! Every SQL statement of event-api lives under this module. [`Store`] wraps the pool; each
//! submodule owns one table (or one transaction that spans several), and turns constraint
//! violations into [`StoreError::Conflict`] right next to the query that can cause them.

pub mod cameras;
pub mod deletions;
pub mod events;
pub mod outbox;
pub mod playbacks;
pub mod users;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Connection;
use std::time::Duration;

/// A pooled connection idle at least this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);
/// What a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist (or is deleted).
    #[error("not found")]
    NotFound,
    /// The change conflicts with existing state; the message is safe to show to clients.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database cannot be reached (pool timeout, connection lost): worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The database failed.
    #[error("database: {0}")]
    Db(sqlx::Error),
}

/// The one place database errors are classified: connection-level failures are
/// [`StoreError::Unavailable`], everything else [`StoreError::Db`].
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.code().is_some_and(|c| server_going_away(&c)) {
                return StoreError::Unavailable(e);
            }
        }
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            e => StoreError::Db(e),
        }
    }
}

/// SQLSTATE codes that mean the server, not the statement, failed: class 08 (connection
/// exception) and 57P01-57P03 (shutting down, crashed, starting up), as a PostgreSQL restart
/// sends them to open connections. Worth retrying, like a lost connection.
fn server_going_away(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// Turns a unique violation of `constraint` into a [`StoreError::Conflict`] with `message`.
fn on_unique(err: sqlx::Error, constraint: &str, message: &'static str) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() && db.constraint() == Some(constraint) {
            return StoreError::Conflict(message);
        }
    }
    StoreError::from(err)
}

/// The pool and every query.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

/// A page request: 1-based page number and page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl PageRequest {
    pub fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.page_size)
    }
    pub fn limit(&self) -> i64 {
        i64::from(self.page_size)
    }
}

/// One page of rows plus the total count of matching rows.
#[derive(Debug)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub total: i64,
}

impl Store {
    /// Connects with a bounded pool; the first connection is attempted at once. A database
    /// that does not exist yet is created first (when the server lets us), so a fresh
    /// PostgreSQL works without a manual `createdb`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        use sqlx::migrate::MigrateDatabase;
        if let Ok(false) = sqlx::Postgres::database_exists(url).await {
            if let Err(e) = sqlx::Postgres::create_database(url).await {
                tracing::warn!(error = %e, "cannot create the database; connecting anyway");
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings every connection it hands out by default: one more round trip per
            // checkout. Only a connection idle long enough to have been dropped is pinged; a
            // busy one that broke anyway fails its query as `Unavailable` and is discarded.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await?;
        Ok(Self { pool })
    }

    /// Runs the forward-only migrations in `migrations/`.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("../migrations").run(&self.pool).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `SELECT 1`, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable() {
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(sqlx::Error::RowNotFound),
            StoreError::Db(_)
        ));
    }

    #[test]
    fn a_restarting_server_is_unavailable_not_an_internal_error() {
        for code in ["57P01", "57P02", "57P03", "08006", "08001"] {
            assert!(server_going_away(code), "{code}");
        }
        for code in ["23505", "42P01", "40001", "57014"] {
            assert!(!server_going_away(code), "{code}");
        }
    }
}

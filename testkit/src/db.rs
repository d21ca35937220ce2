//! A fresh PostgreSQL database per test on the machine's server (`TEST_DATABASE_ADMIN_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`), dropped when the [`TestDb`] is dropped.

use sqlx::{Connection, Executor, PgConnection};

pub struct TestDb {
    name: String,
    admin_url: String,
    url: String,
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    /// Creates `camrec_test_<uuid>`.
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url = admin_url();
        let name = format!("camrec_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url).await?;
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await?;
        conn.close().await?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        let url = format!("{base}/{name}");
        Ok(Self {
            name,
            admin_url,
            url,
        })
    }

    /// The connection URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        // Drop runs inside the test's runtime; a blocking client on its own thread avoids
        // nesting runtimes.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await.ok()?;
                conn.execute(sql.as_str()).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            tracing::warn!(db = %self.name, "could not drop the test database");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_and_drops_a_database() {
        let db = TestDb::create().await.unwrap();
        let name = db.name().to_owned();
        let mut conn = PgConnection::connect(db.url()).await.unwrap();
        let one: (i32,) = sqlx::query_as("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one.0, 1);
        conn.close().await.unwrap();
        drop(db);
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        let left: Option<(String,)> =
            sqlx::query_as("SELECT datname::text FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut admin)
                .await
                .unwrap();
        assert!(left.is_none());
    }
}

//! PostgreSQL over TLS: `sslmode` in `DATABASE_URL` is honoured (the machine's server offers
//! TLS with its own certificate), and a server without TLS is a clear error, not a silent
//! downgrade.

use event_api::store::Store;
use testkit::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    let db = TestDb::create().await.unwrap();
    let store = Store::connect(&format!("{}?sslmode=require", db.url()), 2)
        .await
        .expect("the machine's PostgreSQL offers TLS");
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(tls, "the connection is encrypted");
    store.pool().close().await;
}

/// A server that answers PostgreSQL's TLS request with `N` (no TLS), as one without `ssl = on`.
async fn server_without_tls() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ssl_request = [0u8; 8];
                if conn.read_exact(&mut ssl_request).await.is_ok() {
                    let _ = conn.write_all(b"N").await;
                    let mut rest = Vec::new();
                    let _ = conn.read_to_end(&mut rest).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_fails_saying_so() {
    let port = server_without_tls().await;
    let url = format!("postgres://postgres:pg-secret@127.0.0.1:{port}/camrec?sslmode=require");
    let Err(err) = Store::connect(&url, 1).await else {
        panic!("connected without TLS");
    };
    let text = err.to_string();
    assert!(text.to_lowercase().contains("tls"), "{text}");
    assert!(!text.contains("pg-secret"), "{text}");
}

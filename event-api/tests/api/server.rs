//! The HTTP server itself: a client that sends its request headers slowly is cut off.

use crate::support::spawn_app_with;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_connection_whose_headers_never_finish_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(vec![("HEADER_READ_TIMEOUT_SEC".into(), "1".into())]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: camrec\r\nX-Slow: 1")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was still open after 5 s");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // A complete request on a connection of its own is served as usual.
    let (status, _) = app.get("/health").await;
    assert_eq!(status, reqwest::StatusCode::OK);
}

//! A closed-loop HTTP load generator: C tasks share one keep-alive client and each sends the same
//! request again as soon as the previous answer arrived, for a fixed duration. Every successful
//! request's latency (send to last byte of the body) is recorded.

use crate::stats::Latencies;
use std::time::{Duration, Instant};

/// The request every task repeats.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub bearer: String,
    pub body: bytes::Bytes,
    /// The status that counts as success.
    pub expect: reqwest::StatusCode,
}

/// What one load run did.
#[derive(Clone, Debug)]
pub struct LoadRun {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// The first unexpected answer or transport error, for the report.
    pub first_error: Option<String>,
}

impl LoadRun {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A client for `concurrency` tasks: that many idle keep-alive connections, no Nagle delay.
pub fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

struct TaskResult {
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

async fn one_task(client: reqwest::Client, target: Target, deadline: Instant) -> TaskResult {
    let mut r = TaskResult {
        ok: 0,
        failed: 0,
        latencies: Vec::new(),
        first_error: None,
    };
    while Instant::now() < deadline {
        let sent = Instant::now();
        let answer = client
            .post(&target.url)
            .bearer_auth(&target.bearer)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(target.body.clone())
            .send()
            .await;
        let outcome = match answer {
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Ok(_) if status == target.expect => Ok(()),
                    Ok(body) => Err(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                r.ok += 1;
                r.latencies.push(sent.elapsed());
            }
            Err(e) => {
                r.failed += 1;
                r.first_error.get_or_insert(e);
            }
        }
    }
    r
}

/// Runs `concurrency` tasks against `target` for `duration`.
pub async fn run(
    client: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    duration: Duration,
) -> LoadRun {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| tokio::spawn(one_task(client.clone(), target.clone(), deadline)))
        .collect();
    let (mut ok, mut failed, mut all, mut first_error) = (0, 0, Vec::new(), None);
    for t in tasks {
        match t.await {
            Ok(r) => {
                ok += r.ok;
                failed += r.failed;
                all.extend(r.latencies);
                if first_error.is_none() {
                    first_error = r.first_error;
                }
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("load task panicked: {e}"));
            }
        }
    }
    LoadRun {
        ok,
        failed,
        elapsed: started.elapsed(),
        latencies: Latencies::new(all),
        first_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tiny keep-alive HTTP/1.1 server answering every request with `status`.
    async fn server(status: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut pending = Vec::new();
                    loop {
                        let Ok(n) = sock.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        // Requests carry a 2-byte body ("{}") after the blank line.
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            if pending.len() < end + 4 + 2 {
                                break;
                            }
                            pending.drain(..end + 4 + 2);
                            let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
                            if sock.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        format!("http://{addr}/events")
    }

    fn target(url: String) -> Target {
        Target {
            url,
            bearer: "t".into(),
            body: bytes::Bytes::from_static(b"{}"),
            expect: reqwest::StatusCode::CREATED,
        }
    }

    #[tokio::test]
    async fn counts_successes_with_latencies() {
        let url = server("201 Created").await;
        let run = run(&client(4), &target(url), 4, Duration::from_millis(300)).await;
        assert!(run.ok > 10, "{run:?}");
        assert_eq!(run.failed, 0);
        assert_eq!(run.latencies.len() as u64, run.ok);
        assert!(run.throughput() > 0.0 && run.latencies.p99() >= run.latencies.p50());
    }

    #[tokio::test]
    async fn counts_unexpected_answers_as_failures() {
        let url = server("500 Internal Server Error").await;
        let run = run(&client(2), &target(url), 2, Duration::from_millis(100)).await;
        assert_eq!(run.ok, 0);
        assert!(run.failed > 0);
        assert!(run.first_error.unwrap().contains("500"));
    }
}

//! A closed-loop HTTP load generator: C tasks, each with its own keep-alive HTTP/1.1 connection
//! (no Nagle delay), send the same request again as soon as the previous answer arrived, for a
//! fixed duration. The tasks run on at most two threads of their own, as pgbench's clients run
//! on its `-j 2` threads. Every successful request's latency (send to last byte of the body) is
//! recorded.
//!
//! The request is serialized once and the answer read straight from the socket, as `wrk` or
//! pgbench's own client do: a general-purpose client (a connection pool handing each request to
//! a connection task) cost a third of a request's time at concurrency 1 on a 2-core machine,
//! time that P1 would have charged to event-api.

use crate::stats::Latencies;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request every task repeats.
#[derive(Clone, Debug)]
pub struct Target {
    /// `POST` (with the JSON body) or `GET` (without).
    pub method: &'static str,
    /// `http://host:port/path`.
    pub url: String,
    pub bearer: String,
    pub body: bytes::Bytes,
    /// The status that counts as success.
    pub expect: u16,
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
    /// A run that could not start: one failure, with why.
    fn failed_before_start(why: String) -> LoadRun {
        LoadRun {
            ok: 0,
            failed: 1,
            elapsed: Duration::ZERO,
            latencies: Latencies::new(Vec::new()),
            first_error: Some(why),
        }
    }

    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The target's address and the request's bytes, built once.
#[derive(Clone, Debug)]
struct Prepared {
    addr: String,
    request: bytes::Bytes,
    expect: u16,
}

fn prepare(target: &Target) -> anyhow::Result<Prepared> {
    let url = url::Url::parse(&target.url)?;
    anyhow::ensure!(
        url.scheme() == "http",
        "only http:// targets: {}",
        target.url
    );
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("no host in {}", target.url))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {}\r\n",
        target.method,
        url.path(),
        target.bearer,
    )
    .into_bytes();
    if target.method == "GET" {
        request.extend_from_slice(b"\r\n");
    } else {
        request.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                target.body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(&target.body);
    }
    Ok(Prepared {
        addr: format!("{host}:{port}"),
        request: request.into(),
        expect: target.expect,
    })
}

/// One keep-alive connection and its read buffer.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends `request` and reads the whole answer: (status, keep the connection open).
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(u16, bool)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = resp.parse(&self.buf)? {
                let status = resp.code.unwrap_or(0);
                let header = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                };
                let length: usize = header("content-length")
                    .ok_or_else(|| anyhow::anyhow!("HTTP {status} without content-length"))?
                    .parse()?;
                let close = header("connection").is_some_and(|v| v == "close");
                while self.buf.len() < head + length {
                    let n = self.stream.read(&mut chunk).await?;
                    anyhow::ensure!(n > 0, "the server closed the connection mid-answer");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                if status >= 300 {
                    let body = String::from_utf8_lossy(&self.buf[head..head + length]);
                    anyhow::bail!(
                        "HTTP {status}: {}",
                        body.chars().take(200).collect::<String>()
                    );
                }
                return Ok((status, !close));
            }
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

struct TaskResult {
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

async fn one_task(target: Prepared, deadline: Instant) -> TaskResult {
    let mut r = TaskResult {
        ok: 0,
        failed: 0,
        latencies: Vec::new(),
        first_error: None,
    };
    let mut conn: Option<Connection> = None;
    while Instant::now() < deadline {
        let sent = Instant::now();
        let outcome = async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(Connection::open(&target.addr).await?),
            };
            c.exchange(&target.request).await
        }
        .await;
        match outcome {
            Ok((status, keep)) if status == target.expect => {
                r.ok += 1;
                r.latencies.push(sent.elapsed());
                if !keep {
                    conn = None;
                }
            }
            Ok((status, _)) => {
                r.failed += 1;
                r.first_error
                    .get_or_insert(format!("HTTP {status}, expected {}", target.expect));
                conn = None;
            }
            Err(e) => {
                r.failed += 1;
                r.first_error.get_or_insert(e.to_string());
                conn = None;
            }
        }
    }
    r
}

/// How many OS threads carry the load: as pgbench's `-j` in P1's baseline, at most two, one
/// per client below that.
pub fn threads_for(concurrency: usize) -> usize {
    concurrency.clamp(1, 2)
}

/// Runs `concurrency` tasks against `target` for `duration`, on [`threads_for`] threads of their
/// own, each with a single-threaded runtime and the tasks dealt to it in turn: pgbench's client
/// threads, not a work-stealing pool that would hand a connection's wake-ups from one thread to
/// another (and charge those hand-offs to event-api).
pub async fn run(target: &Target, concurrency: usize, duration: Duration) -> LoadRun {
    let prepared = match prepare(target) {
        Ok(p) => p,
        Err(e) => return LoadRun::failed_before_start(e.to_string()),
    };
    let concurrency = concurrency.max(1);
    let threads = threads_for(concurrency);
    let started = Instant::now();
    let deadline = started + duration;
    let mut receivers = Vec::with_capacity(threads);
    for t in 0..threads {
        let tasks = (t..concurrency).step_by(threads).count();
        let prepared = prepared.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || {
                let results = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| {
                        rt.block_on(futures::future::join_all(
                            (0..tasks).map(|_| one_task(prepared.clone(), deadline)),
                        ))
                    })
                    .map_err(|e| e.to_string());
                let _ = tx.send(results);
            });
        match spawned {
            Ok(_) => receivers.push(rx),
            Err(e) => return LoadRun::failed_before_start(format!("load thread: {e}")),
        }
    }
    let (mut ok, mut failed, mut all, mut first_error) = (0, 0, Vec::new(), None);
    for rx in receivers {
        match rx.await {
            Ok(Ok(results)) => {
                for r in results {
                    ok += r.ok;
                    failed += r.failed;
                    all.extend(r.latencies);
                    if first_error.is_none() {
                        first_error = r.first_error;
                    }
                }
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(format!("load runtime: {e}"));
            }
            Err(_) => {
                failed += 1;
                first_error.get_or_insert("a load thread panicked".to_owned());
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tiny keep-alive HTTP/1.1 server answering every request with `status`.
    async fn server(status: &'static str) -> String {
        counting_server(status, Arc::default()).await
    }

    /// [`server`], counting the connections it accepts in `accepted`.
    async fn counting_server(status: &'static str, accepted: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
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
            method: "POST",
            url,
            bearer: "t".into(),
            body: bytes::Bytes::from_static(b"{}"),
            expect: 201,
        }
    }

    #[tokio::test]
    async fn counts_successes_with_latencies() {
        let url = server("201 Created").await;
        let run = run(&target(url), 4, Duration::from_millis(300)).await;
        assert!(run.ok > 10, "{run:?}");
        assert_eq!(run.failed, 0);
        assert_eq!(run.latencies.len() as u64, run.ok);
        assert!(run.throughput() > 0.0 && run.latencies.p99() >= run.latencies.p50());
    }

    #[tokio::test]
    async fn counts_unexpected_answers_as_failures() {
        let url = server("500 Internal Server Error").await;
        let run = run(&target(url), 2, Duration::from_millis(100)).await;
        assert_eq!(run.ok, 0);
        assert!(run.failed > 0);
        assert!(run.first_error.unwrap().contains("500"));
    }

    #[tokio::test]
    async fn every_client_keeps_one_connection_across_the_threads() {
        let accepted = Arc::new(AtomicUsize::new(0));
        let url = counting_server("201 Created", accepted.clone()).await;
        let run = run(&target(url), 3, Duration::from_millis(200)).await;
        assert_eq!(run.failed, 0, "{run:?}");
        assert!(run.ok >= 3, "{run:?}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "one keep-alive connection per client"
        );
        assert_eq!((threads_for(1), threads_for(3), threads_for(64)), (1, 2, 2));
    }
}

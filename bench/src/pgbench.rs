//! P1's info baseline: `pgbench` running the transaction event-api's `POST /events` runs,
//! prepared, against the same database, with a per-transaction latency log for p50/p99.
//!
//! The script is SQL, so it states its own copy of that transaction, mirroring
//! `event_api::store::events` `create_event` (the camera `SELECT ... FOR SHARE`, the `events`
//! insert and, for a type that records, the `playbacks` insert) and
//! `event_api::store::outbox::enqueue` (the outbox insert with its `pg_notify`, one statement).
//! Its outbox rows go to the real `outbox` and are published by the relay, as camrec's are.

use crate::stats::Latencies;
use event_api::store::outbox::NOTIFY_CHANNEL;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A pgbench run that failed or printed something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum PgbenchError {
    #[error("cannot run pgbench: {0}")]
    Io(#[from] std::io::Error),
    #[error("pgbench failed: {0}")]
    Failed(String),
    #[error("pgbench printed no `tps = ` line")]
    NoTps,
}

/// The columns `create_event` selects from `cameras` (store/cameras.rs `COLUMNS`).
const CAMERA_COLUMNS: &str = "id, name, ip_address, channel, rtsp_port, rtsp_url, username, \
     password, codec, resolution, vendor, enabled, site, record_event_types, created_at, updated_at, \
     retention_days, pre_roll_sec, post_roll_sec";

/// The transaction of `POST /events` for a camera, one statement a line: the camera, locked
/// `FOR SHARE`; the event; for a recording type (`recording` given: the `event.created`
/// subject and envelope bytes) the playback and the outbox row with its notify, as `enqueue`
/// writes them. The camera id is pgbench's `:camera` variable. What event-api binds is computed
/// by the server here: `gen_random_uuid()` for the ids, `now()` for `created_at` and
/// `occurred_at`, the msg id from the event id. (A `:` inside a literal confuses pgbench's
/// variable parser, hence `chr(58)` for the msg id's `:created`.)
pub fn script(event_type: &str, recording: Option<(&str, &[u8])>) -> String {
    let mut s = format!(
        "BEGIN;\n\
         SELECT {CAMERA_COLUMNS} FROM cameras WHERE id = :camera FOR SHARE;\n\
         INSERT INTO events (id, camera_id, type, description, created_at, occurred_at) \
         VALUES (gen_random_uuid(), :camera, '{event_type}', NULL, now(), now()) \
         RETURNING id \\gset event_\n"
    );
    if let Some((subject, payload)) = recording {
        s.push_str(&format!(
            "INSERT INTO playbacks (id, event_id, camera_id) \
             VALUES (gen_random_uuid(), :event_id, :camera);\n\
             WITH queued AS (INSERT INTO outbox (subject, msg_id, payload) \
             VALUES ('{subject}', CAST(:event_id AS text) || chr(58) || 'created', \
             '\\x{}'::bytea) ON CONFLICT (msg_id) DO NOTHING) \
             SELECT pg_notify('{NOTIFY_CHANNEL}', '');\n",
            hex::encode(payload)
        ));
    }
    s.push_str("COMMIT;\n");
    s
}

/// Where and how to run pgbench.
#[derive(Clone, Debug)]
pub struct Run {
    pub pgbench: PathBuf,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub camera_id: uuid::Uuid,
    pub clients: usize,
    pub duration: Duration,
}

/// What pgbench measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Transactions per second, without the initial connection time.
    pub tps: f64,
    pub latencies: Latencies,
}

/// Runs `script` with `run`'s settings in a scratch directory (script and latency logs).
pub async fn run(run: &Run, script: &str) -> Result<Outcome, PgbenchError> {
    let dir = tempfile::Builder::new()
        .prefix("camrec-pgbench-")
        .tempdir()?;
    let script_path = dir.path().join("post_events.sql");
    tokio::fs::write(&script_path, script).await?;
    let threads = crate::load::threads_for(run.clients);
    let out = tokio::process::Command::new(&run.pgbench)
        .args(["-n", "-M", "prepared", "-l"])
        .arg(format!("--log-prefix={}", dir.path().join("tx").display()))
        .args(["-c", &run.clients.to_string(), "-j", &threads.to_string()])
        .args(["-T", &run.duration.as_secs().max(1).to_string()])
        .arg("-f")
        .arg(&script_path)
        .args([
            "-h",
            &run.host,
            "-p",
            &run.port.to_string(),
            "-U",
            &run.user,
        ])
        .arg("-D")
        .arg(format!("camera={}", run.camera_id))
        .arg(&run.database)
        .kill_on_drop(true)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(PgbenchError::Failed(
            stderr.lines().last().unwrap_or("no output").to_owned(),
        ));
    }
    let tps = parse_tps(&stdout).ok_or(PgbenchError::NoTps)?;
    Ok(Outcome {
        tps,
        latencies: Latencies::new(read_logs(dir.path())?),
    })
}

/// `tps = 2432.98 (without initial connection time)`.
fn parse_tps(stdout: &str) -> Option<f64> {
    stdout.lines().find_map(|l| {
        l.strip_prefix("tps = ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Per-transaction latencies from every `tx.*` log: `client tx_no latency_us script epoch us`.
fn read_logs(dir: &Path) -> Result<Vec<Duration>, std::io::Error> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with("tx.") {
            continue;
        }
        all.extend(parse_log(&std::fs::read_to_string(entry.path())?));
    }
    Ok(all)
}

fn parse_log(text: &str) -> impl Iterator<Item = Duration> + '_ {
    text.lines().filter_map(|l| {
        let us: u64 = l.split_whitespace().nth(2)?.parse().ok()?;
        Some(Duration::from_micros(us))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_output_and_logs() {
        let out =
            "latency average = 0.822 ms\ntps = 2432.987688 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(2432.987688));
        assert_eq!(parse_tps("nothing"), None);
        let log = "0 1 7488 0 1795939158 739283\n0 2 1054 0 1795939158 740347\nbad\n";
        let l: Vec<_> = parse_log(log).collect();
        assert_eq!(
            l,
            vec![Duration::from_micros(7488), Duration::from_micros(1054)]
        );
    }

    #[test]
    fn scripts_hold_the_same_statements_as_post_events() {
        let error = script("ERROR", None);
        assert!(error.contains("FOR SHARE") && error.contains("INSERT INTO events"));
        assert!(error.contains("RETURNING id \\gset event_"));
        assert!(!error.contains("outbox") && !error.contains("playbacks"));
        assert_eq!(error.lines().count(), 4, "BEGIN, camera, event, COMMIT");
        let motion = script("MOTION", Some(("event.created.s.c", b"{}")));
        assert!(motion.contains("INSERT INTO playbacks") && motion.contains("'\\x7b7d'::bytea"));
        assert!(motion.contains("INSERT INTO outbox (subject, msg_id, payload)"));
        assert!(motion.contains("pg_notify('camrec_outbox', '')"));
        assert_eq!(
            motion.lines().count(),
            6,
            "BEGIN, camera, event, playback, outbox, COMMIT"
        );
    }

    /// Runs both scripts against a fresh database migrated by event-api.
    #[tokio::test]
    async fn runs_against_the_real_schema() {
        let db = testkit::TestDb::create().await.unwrap();
        let store = event_api::store::Store::connect(db.url(), 2).await.unwrap();
        store.migrate().await.unwrap();
        let pool = store.pool();
        let camera = uuid::Uuid::new_v4();
        sqlx::query("INSERT INTO cameras (id, name, ip_address, rtsp_url) VALUES ($1, 'c', '10.0.0.1', 'rtsp://10.0.0.1/')")
            .bind(camera)
            .execute(pool)
            .await
            .unwrap();
        let url = url::Url::parse(db.url()).unwrap();
        let r = Run {
            pgbench: PathBuf::from("pgbench"),
            host: url.host_str().unwrap().to_owned(),
            port: url.port().unwrap_or(5432),
            user: url.username().to_owned(),
            database: db.name().to_owned(),
            camera_id: camera,
            clients: 2,
            duration: Duration::from_secs(1),
        };
        let motion = run(&r, &script("MOTION", Some(("event.created.s.c", b"{}"))))
            .await
            .unwrap();
        assert!(motion.tps > 0.0 && !motion.latencies.is_empty());
        let error = run(&r, &script("ERROR", None)).await.unwrap();
        assert!(error.tps > 0.0);
        let (events, playbacks, outbox, linked): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM playbacks), \
             (SELECT count(*) FROM outbox), \
             (SELECT count(*) FROM outbox o JOIN playbacks p ON o.msg_id = p.event_id::text || ':created')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(playbacks as usize, motion.latencies.len());
        assert_eq!(
            events as usize,
            motion.latencies.len() + error.latencies.len()
        );
        assert_eq!(
            (outbox, linked),
            (playbacks, playbacks),
            "one outbox row per playback"
        );
        pool.close().await;
    }
}

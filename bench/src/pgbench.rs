//! P1's baseline: `pgbench` running the statements event-api's `POST /events` runs (see
//! event-api/src/store/events.rs `create_event`, `INSERT_EVENT` and `INSERT_RECORDING_EVENT`),
//! prepared, against the same database, with a per-transaction latency log for p50/p99.
//!
//! The recording transaction queues its message in [`SHADOW_OUTBOX`], a copy of `outbox` (same
//! columns, defaults, indexes and constraints), and notifies [`SHADOW_CHANNEL`]: the same
//! inserts and the same `NOTIFY` work in PostgreSQL, but rows camrec's relay does not see. In
//! `outbox` the relay would publish pgbench's rows during pgbench's turn, and the baseline would
//! be pgbench plus camrec's relay: on a 2-core VM that made it up to 70% faster at C=1 (the
//! relay keeps the CPUs out of idle, so pgbench's wake-ups are quicker) and 20% slower at C=16
//! and 64 (it competes for them). See docs/adr/0014-p1-baseline-is-the-sql-alone.md.

use crate::stats::Latencies;
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

/// The table pgbench's recording transaction queues its message in: created by
/// [`shadow_outbox_ddl`] as a copy of `outbox`, never read by the relay.
pub const SHADOW_OUTBOX: &str = "bench_outbox";

/// The channel pgbench's transaction notifies: nobody listens to it.
pub const SHADOW_CHANNEL: &str = "bench_outbox";

/// Creates [`SHADOW_OUTBOX`] as a copy of `outbox`: columns, defaults, indexes, constraints.
pub fn shadow_outbox_ddl() -> String {
    format!("CREATE TABLE IF NOT EXISTS {SHADOW_OUTBOX} (LIKE outbox INCLUDING ALL)")
}

/// The columns `create_event` selects from `cameras` (store/cameras.rs `COLUMNS`).
const CAMERA_COLUMNS: &str = "id, name, ip_address, channel, rtsp_port, rtsp_url, username, \
     password, codec, resolution, vendor, enabled, site, record_event_types, created_at, updated_at";

/// The statements of `POST /events` for a camera (store/events.rs `create_event`): the camera
/// with its row version, then `INSERT_EVENT` (ERROR) or `INSERT_RECORDING_EVENT` (`payload`
/// given: the `event.created` envelope bytes), which writes the event, and for a recording type
/// the playback, the outbox row and the notify, in one statement (no explicit transaction, as
/// there); the outbox row goes to [`SHADOW_OUTBOX`] and the notify to [`SHADOW_CHANNEL`]. The
/// camera id is pgbench's `:camera` variable. What event-api binds is computed by the server
/// here: `gen_random_uuid()` for the ids, `now()` for `created_at`,
/// the msg id from the event id. (A `:` inside a literal confuses pgbench's variable parser,
/// hence `chr(58)` for the msg id's `:created`.)
pub fn script(event_type: &str, recording: Option<(&str, &[u8])>) -> String {
    let mut s = format!(
        "SELECT {CAMERA_COLUMNS}, xmin::text AS version FROM cameras WHERE id = :camera \\gset camera_\n\
         WITH camera AS (SELECT id FROM cameras WHERE id = :camera AND xmin::text = \
         :camera_version AND enabled FOR SHARE), \
         event AS (INSERT INTO events (id, camera_id, type, description, created_at) \
         SELECT gen_random_uuid(), id, '{event_type}', NULL, now() FROM camera RETURNING id)"
    );
    match recording {
        None => s.push_str(" SELECT id FROM event;\n"),
        Some((subject, payload)) => s.push_str(&format!(
            ", playback AS (INSERT INTO playbacks (id, event_id, camera_id) \
             SELECT gen_random_uuid(), id, :camera FROM event), \
             queued AS (INSERT INTO {SHADOW_OUTBOX} (subject, msg_id, payload) \
             SELECT '{subject}', CAST(id AS text) || chr(58) || 'created', '\\x{}'::bytea \
             FROM event ON CONFLICT (msg_id) DO NOTHING) \
             SELECT id, pg_notify('{SHADOW_CHANNEL}', '') FROM event;\n",
            hex::encode(payload)
        )),
    }
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
        assert!(error.contains("xmin::text AS version") && error.contains("\\gset camera_"));
        assert!(!error.contains("outbox"));
        assert_eq!(error.lines().count(), 2, "two statements, no BEGIN/COMMIT");
        let motion = script("MOTION", Some(("event.created.s.c", b"{}")));
        assert!(motion.contains("INSERT INTO playbacks") && motion.contains("'\\x7b7d'::bytea"));
        assert!(motion.contains("INSERT INTO bench_outbox (subject, msg_id, payload)"));
        assert!(motion.contains("pg_notify('bench_outbox'") && !motion.contains("camrec_outbox"));
        assert_eq!(motion.lines().count(), 2, "two statements, no BEGIN/COMMIT");
    }

    /// Runs both scripts against a fresh database with camrec's schema.
    #[tokio::test]
    async fn runs_against_the_real_schema() {
        let db = testkit::TestDb::create().await.unwrap();
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        let schema =
            std::fs::read_to_string(testkit::workspace_root().join("migrations/0001_init.sql"))
                .unwrap();
        sqlx::raw_sql(&schema).execute(&pool).await.unwrap();
        sqlx::query(&shadow_outbox_ddl())
            .execute(&pool)
            .await
            .unwrap();
        let camera = uuid::Uuid::new_v4();
        sqlx::query("INSERT INTO cameras (id, name, ip_address, rtsp_url) VALUES ($1, 'c', '10.0.0.1', 'rtsp://10.0.0.1/')")
            .bind(camera)
            .execute(&pool)
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
        let (shadow, outbox, playbacks): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM bench_outbox), (SELECT count(*) FROM outbox), \
             (SELECT count(*) FROM playbacks)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(shadow, playbacks);
        assert_eq!(shadow as usize, motion.latencies.len());
        assert_eq!(outbox, 0, "the relay's outbox gets none of pgbench's rows");
        // The copy keeps outbox's unique msg_id, which the transaction's ON CONFLICT names.
        let indexes: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'bench_outbox'")
                .fetch_one(&pool)
                .await
                .unwrap();
        let originals: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'outbox'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(indexes, originals);
        pool.close().await;
    }
}

//! CPU and memory of process trees, sampled from /proc: the CPU time of every process in the
//! trees (roots and all descendants, found through the parent pid of /proc/<pid>/stat) and their
//! `VmRSS` from /proc/<pid>/status.
//!
//! A tree's CPU time is the sum over its processes of `utime + stime + cutime + cstime`: the
//! last two hold the children a process has reaped, so a child that starts and exits between two
//! samples (a thumbnail's FFmpeg) is counted in full, through its parent, and a child seen before
//! it exited is not counted twice (its own entry leaves the sum as its parent's grows by it).
//! The CPU of a window is the growth of that sum.
//!
//! Memory is read both as `VmRSS` and as `Pss` of /proc/<pid>/smaps_rollup: the proportional
//! set size divides each shared page among the processes that map it, so the libraries that
//! every FFmpeg maps count once across them, not once per process.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A failure to read /proc.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc: {0}")]
    Io(#[from] std::io::Error),
    #[error("process {0} is not running")]
    Gone(u32),
}

/// One process as /proc shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    /// utime + stime, in clock ticks.
    ticks: u64,
    /// cutime + cstime: the children this process has reaped, in clock ticks.
    reaped: u64,
}

/// Parses /proc/<pid>/stat: the command name is in parentheses and may hold spaces, so the
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        ticks: field(11)? + field(12)?,
        reaped: field(13)? + field(14)?,
    })
}

/// `VmRSS` of /proc/<pid>/status, in KiB (0 for a kernel thread or a zombie).
fn parse_rss_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `Pss` of /proc/<pid>/smaps_rollup, in KiB (0 when absent).
fn parse_pss_kib(rollup: &str) -> u64 {
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads one /proc file of `pid` and parses it; 0 when the process is gone.
fn read_kib(pid: u32, file: &str, parse: fn(&str) -> u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .map(|s| parse(&s))
        .unwrap_or(0)
}

fn all_stats() -> Result<HashMap<u32, Stat>, ProcError> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        if let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            out.insert(pid, stat);
        }
    }
    Ok(out)
}

/// `roots` and every descendant of them in `stats`.
fn tree(stats: &HashMap<u32, Stat>, roots: &[u32]) -> HashSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, s) in stats {
        children.entry(s.ppid).or_default().push(*pid);
    }
    let mut seen: HashSet<u32> = HashSet::new();
    let mut todo: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|p| stats.contains_key(p))
        .collect();
    while let Some(pid) = todo.pop() {
        if seen.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    seen
}

/// What a process tree used over a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// CPU time over wall time, in percent of one core.
    pub cpu_percent: f64,
    /// The roots' own share of `cpu_percent` (their `utime + stime`, without any child).
    pub roots_cpu_percent: f64,
    /// Mean over the samples of the summed resident memory.
    pub rss_mib: f64,
    /// Mean over the samples of the summed proportional set size.
    pub pss_mib: f64,
    /// The roots' own share of `pss_mib` (without any child).
    pub roots_pss_mib: f64,
    /// The most processes seen in the trees at once.
    pub max_processes: usize,
    pub samples: usize,
}

/// The CPU time of the trees under `roots` so far, in clock ticks: `(all, the roots' own)`.
fn tree_ticks(stats: &HashMap<u32, Stat>, pids: &HashSet<u32>, roots: &[u32]) -> (u64, u64) {
    let all = pids.iter().map(|p| stats[p].ticks + stats[p].reaped).sum();
    let own = roots
        .iter()
        .filter_map(|p| stats.get(p))
        .map(|s| s.ticks)
        .sum();
    (all, own)
}

/// The CPU time, in seconds, of the trees under `roots` so far: every process's own and that of
/// the children it has reaped. Its growth over a span is what the trees used in it.
pub fn cpu_seconds(roots: &[u32]) -> Result<f64, ProcError> {
    let stats = all_stats()?;
    if let Some(gone) = roots.iter().find(|p| !stats.contains_key(p)) {
        return Err(ProcError::Gone(*gone));
    }
    let (all, _) = tree_ticks(&stats, &tree(&stats, roots), roots);
    Ok(all as f64 / clock_ticks_per_sec())
}

/// The CPU time, in seconds, of the children this process has reaped so far (`cutime + cstime`
/// of /proc/self/stat).
pub fn reaped_children_seconds() -> Result<f64, ProcError> {
    let text = std::fs::read_to_string("/proc/self/stat")?;
    let stat = parse_stat(&text)
        .ok_or_else(|| ProcError::Io(std::io::Error::other("unreadable /proc/self/stat")))?;
    Ok(stat.reaped as f64 / clock_ticks_per_sec())
}

/// Samples the trees under `roots` every `interval` for `window`.
pub async fn sample(
    roots: &[u32],
    window: Duration,
    interval: Duration,
) -> Result<Usage, ProcError> {
    let hz = clock_ticks_per_sec();
    let first = all_stats()?;
    if let Some(gone) = roots.iter().find(|p| !first.contains_key(p)) {
        return Err(ProcError::Gone(*gone));
    }
    let start = tree_ticks(&first, &tree(&first, roots), roots);
    let mut end = start;
    let started = Instant::now();
    let (mut rss_kib_sum, mut pss_kib_sum, mut roots_pss_kib_sum) = (0u64, 0u64, 0u64);
    let (mut samples, mut max_processes) = (0usize, 0);
    while started.elapsed() < window {
        tokio::time::sleep(interval).await;
        let stats = all_stats()?;
        let pids = tree(&stats, roots);
        end = tree_ticks(&stats, &pids, roots);
        for p in &pids {
            rss_kib_sum += read_kib(*p, "status", parse_rss_kib);
            let pss = read_kib(*p, "smaps_rollup", parse_pss_kib);
            pss_kib_sum += pss;
            if roots.contains(p) {
                roots_pss_kib_sum += pss;
            }
        }
        samples += 1;
        max_processes = max_processes.max(pids.len());
    }
    let wall = started.elapsed().as_secs_f64();
    let percent = |ticks: u64| 100.0 * ticks as f64 / hz / wall;
    Ok(Usage {
        cpu_percent: percent(end.0.saturating_sub(start.0)),
        roots_cpu_percent: percent(end.1.saturating_sub(start.1)),
        rss_mib: rss_kib_sum as f64 / samples.max(1) as f64 / 1024.0,
        pss_mib: pss_kib_sum as f64 / samples.max(1) as f64 / 1024.0,
        roots_pss_mib: roots_pss_kib_sum as f64 / samples.max(1) as f64 / 1024.0,
        max_processes,
        samples,
    })
}

/// The kernel's USER_HZ (`getconf CLK_TCK`; 100 on every Linux this runs on), read once: a
/// `getconf` reaped later would count in [`reaped_children_seconds`].
fn clock_ticks_per_sec() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_the_name() {
        let line = "1234 (my (odd) name) S 42 1234 1234 0 -1 4194560 100 0 0 0 7 5 3 1 20 0 1 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 42,
                ticks: 12,
                reaped: 4
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_rss() {
        assert_eq!(parse_rss_kib("Name:\tx\nVmRSS:\t   2048 kB\n"), 2048);
        assert_eq!(parse_rss_kib("Name:\tkthread\n"), 0);
    }

    #[test]
    fn parses_pss() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  8000 kB\nPss:  3120 kB\n\
                      Pss_Anon:  1000 kB\n";
        assert_eq!(parse_pss_kib(rollup), 3120);
        assert_eq!(parse_pss_kib(""), 0);
    }

    #[test]
    fn finds_descendants() {
        let s = |ppid| Stat {
            ppid,
            ticks: 0,
            reaped: 0,
        };
        let stats = HashMap::from([(1, s(0)), (10, s(1)), (11, s(10)), (12, s(11)), (20, s(1))]);
        assert_eq!(tree(&stats, &[10]), HashSet::from([10, 11, 12]));
        assert_eq!(tree(&stats, &[99]), HashSet::new());
    }

    #[tokio::test]
    async fn measures_a_busy_child() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let usage = sample(
            &[pid],
            Duration::from_millis(600),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
        child.kill().await.unwrap();
        assert!(usage.cpu_percent > 20.0, "{usage:?}");
        assert!(usage.rss_mib > 0.0 && usage.samples >= 5, "{usage:?}");
        assert!(
            usage.pss_mib > 0.0 && usage.pss_mib <= usage.rss_mib,
            "{usage:?}"
        );
        assert!(matches!(
            sample(&[u32::MAX], Duration::ZERO, Duration::ZERO).await,
            Err(ProcError::Gone(_))
        ));
    }

    #[tokio::test]
    async fn counts_a_child_that_exited_between_samples_through_its_parent() {
        use tokio::io::AsyncBufReadExt;
        // The root runs a busy child to its end, says so, then sleeps (exec keeps its times).
        let script =
            "sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'; echo done; exec sleep 30";
        let mut root = tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = root.id().unwrap();
        let before = cpu_seconds(&[pid]).unwrap();
        let mut lines = tokio::io::BufReader::new(root.stdout.take().unwrap()).lines();
        let said = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        assert_eq!(said.unwrap().unwrap().as_deref(), Some("done"));
        // The busy child is gone from /proc; its time is in the root's cutime + cstime.
        let after = cpu_seconds(&[pid]).unwrap();
        root.kill().await.unwrap();
        assert!(after - before >= 0.05, "before {before} s, after {after} s");
        assert!(matches!(cpu_seconds(&[u32::MAX]), Err(ProcError::Gone(_))));
        assert!(reaped_children_seconds().unwrap() >= 0.0);
    }
}

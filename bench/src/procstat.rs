//! CPU and memory of process trees, sampled from /proc: `utime + stime` of every process in the
//! trees (roots and all descendants, found through the parent pid of /proc/<pid>/stat) and their
//! `VmRSS` from /proc/<pid>/status.
//!
//! CPU is counted per process as the growth of its ticks between samples, so children that start
//! during the window count from their start and children that exit keep what was seen of them.

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
}

/// Parses /proc/<pid>/stat: the command name is in parentheses and may hold spaces, so the
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
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
    /// Mean over the samples of the summed resident memory.
    pub rss_mib: f64,
    /// The most processes seen in the trees at once.
    pub max_processes: usize,
    pub samples: usize,
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
    let mut last: HashMap<u32, u64> = tree(&first, roots)
        .into_iter()
        .map(|p| (p, first[&p].ticks))
        .collect();
    let started = Instant::now();
    let (mut ticks, mut rss_kib_sum, mut samples, mut max_processes) = (0u64, 0u64, 0usize, 0);
    while started.elapsed() < window {
        tokio::time::sleep(interval).await;
        let stats = all_stats()?;
        let pids = tree(&stats, roots);
        for pid in &pids {
            let now = stats[pid].ticks;
            let before = last.insert(*pid, now).unwrap_or(0);
            ticks += now.saturating_sub(before);
        }
        rss_kib_sum += pids
            .iter()
            .map(|p| {
                std::fs::read_to_string(format!("/proc/{p}/status"))
                    .map(|s| parse_rss_kib(&s))
                    .unwrap_or(0)
            })
            .sum::<u64>();
        samples += 1;
        max_processes = max_processes.max(pids.len());
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(Usage {
        cpu_percent: 100.0 * ticks as f64 / hz / wall,
        rss_mib: rss_kib_sum as f64 / samples.max(1) as f64 / 1024.0,
        max_processes,
        samples,
    })
}

/// The kernel's USER_HZ (`getconf CLK_TCK`; 100 on every Linux this runs on).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_the_name() {
        let line = "1234 (my (odd) name) S 42 1234 1234 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 42,
                ticks: 12
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
    fn finds_descendants() {
        let s = |ppid| Stat { ppid, ticks: 0 };
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
        assert!(matches!(
            sample(&[u32::MAX], Duration::ZERO, Duration::ZERO).await,
            Err(ProcError::Gone(_))
        ));
    }
}

//! The machine a run happened on: cores, memory, CPU model, kernel, load, and the versions of the
//! tools the figures depend on (FFmpeg, nats-server, PostgreSQL, pgbench).

use std::fmt::Write as _;
use std::process::Command;

/// What BENCHMARKS.md says about the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// The 1-minute load average when the run started (other work on a shared machine).
    pub load_at_start: String,
    /// `(tool, first line of its version output)`.
    pub tools: Vec<(String, String)>,
}

impl Machine {
    /// Reads /proc and asks each tool for its version; `postgres` is the server's own
    /// `SELECT version()`.
    pub fn describe(postgres: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mut tools: Vec<(String, String)> = [
            ("ffmpeg", "-version"),
            ("nats-server", "--version"),
            ("pgbench", "--version"),
            ("s3s-fs", "--version"),
        ]
        .into_iter()
        .map(|(program, flag)| (program.to_owned(), version_of(program, flag)))
        .collect();
        tools.insert(2, ("PostgreSQL".to_owned(), postgres.to_owned()));
        Self {
            cpu_model: cpu_model(&cpuinfo),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_gib: mem_total_kib(&meminfo) as f64 / (1024.0 * 1024.0),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            load_at_start: read_trimmed("/proc/loadavg")
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_owned(),
            tools,
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "- CPU: {} ({} cores online)",
            self.cpu_model, self.cores
        );
        let _ = writeln!(out, "- Memory: {:.1} GiB", self.memory_gib);
        let _ = writeln!(out, "- Kernel: Linux {}", self.kernel);
        let _ = writeln!(
            out,
            "- Load average (1 min) at start: {}",
            self.load_at_start
        );
        for (tool, version) in &self.tools {
            let _ = writeln!(out, "- {tool}: {version}");
        }
        out
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// The first `model name` of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `MemTotal` of /proc/meminfo, in KiB.
fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn version_of(program: &str, flag: &str) -> String {
    match Command::new(program).arg(flag).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("?")
                .trim()
                .to_owned()
        }
        Err(e) => format!("not available ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpu = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU @ 2.0GHz\n";
        assert_eq!(cpu_model(cpu), "Example CPU @ 2.0GHz");
        assert_eq!(cpu_model(""), "unknown");
        let mem = "MemTotal:       24683520 kB\nMemFree: 1 kB\n";
        assert_eq!(mem_total_kib(mem), 24_683_520);
    }

    #[test]
    fn describes_this_machine() {
        let m = Machine::describe("PostgreSQL 15");
        assert!(m.cores >= 1);
        let md = m.markdown();
        assert!(md.contains("- CPU: ") && md.contains("- ffmpeg: "), "{md}");
        assert!(md.contains("- PostgreSQL: PostgreSQL 15"), "{md}");
    }
}

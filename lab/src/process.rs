//! One child process of the lab (a service, or the PostgreSQL postmaster): spawned with a
//! parent-death signal so nothing outlives the lab, its output appended to a log file, and
//! stopped with a signal of the caller's choice (`kill -9` for crash faults). Always reaped.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A process that could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open the log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
}

/// A running child process, killed and reaped on drop.
pub struct ChildProcess {
    name: String,
    child: Option<Child>,
}

impl ChildProcess {
    /// Spawns `cmd` with stdin closed, stdout and stderr appended to `log`, and SIGKILL on the
    /// death of this process.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self, ProcessError> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|source| ProcessError::Log {
                    path: log.to_owned(),
                    source,
                })
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(open()?))
            .stderr(Stdio::from(open()?));
        set_parent_death_signal(&mut cmd);
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9`, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal`, waits up to `grace` for the exit, then `kill -9`; reaped either way.
    /// Returns true when the process exited within the grace period.
    pub async fn stop_with(&mut self, signal: Signal, grace: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = kill(Pid::from_raw(c.id() as i32), signal);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(name = %self.name, "did not stop in time, killing");
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pids of the live children of `pid` (from `/proc/*/stat`), e.g. a worker's FFmpegs.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .collect()
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec (after any uid/gid change, so the
    // setting survives it) and only calls prctl(2), which is async-signal-safe; it touches no
    // memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_are_found_and_killed_with_their_parent() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & echo started; wait"]);
        let mut sh = ChildProcess::spawn("sh", cmd, &log).unwrap();
        let pid = sh.pid().unwrap();
        // The child is forked before `echo` runs: wait for both, or SIGTERM may beat the echo.
        let kids = testkit::wait_until(Duration::from_secs(5), "the child of sh", || {
            let kids = children_of(pid);
            let echoed = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started"));
            async move { (!kids.is_empty() && echoed).then_some(kids) }
        })
        .await
        .unwrap();
        assert!(sh.is_running());
        assert!(kids.iter().all(|k| is_alive(*k)));
        assert!(sh.stop_with(Signal::SIGTERM, Duration::from_secs(5)).await);
        assert!(!sh.is_running());
        assert!(std::fs::read_to_string(&log).unwrap().contains("started"));
        for k in kids {
            let _ = kill(Pid::from_raw(k as i32), Signal::SIGKILL);
        }
    }
}

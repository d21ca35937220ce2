//! A child server process that dies with the test: parent-death signal at spawn, SIGTERM or
//! SIGKILL on request, SIGKILL and reaping on drop.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct ServerProcess {
    child: Option<Child>,
    name: String,
}

impl ServerProcess {
    /// Spawns `cmd` with stdin closed, stderr and stdout as given, and SIGKILL on parent death.
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null());
        set_parent_death_signal(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))?;
        Ok(Self {
            child: Some(child),
            name: name.to_owned(),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub(crate) fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// SIGTERM, then SIGKILL after `grace`; reaped.
    pub(crate) fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            tracing::warn!(name = %self.name, "did not stop in time, killing");
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL; reaped.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

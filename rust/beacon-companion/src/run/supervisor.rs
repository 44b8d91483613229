//! Supervise mode: the app runs as the companion's child, in its own process group so a terminal's
//! Ctrl-C (sent to the whole foreground group) reaches only the companion, which deregisters and
//! drains first and then passes the signal on.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::sync::mpsc::Sender;
use std::thread;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::CompanionError;

/// Something the main loop reacts to.
#[derive(Debug)]
pub enum Happening {
    /// A signal arrived.
    Signal(i32),
    /// The app exited.
    AppExited(ExitStatus),
    /// The app passed its readiness check.
    AppReady,
    /// Every reconcile loop has removed the upstream and drained (or given up).
    Drained(Vec<crate::join::leave::LeaveReport>),
}

/// The running app.
#[derive(Debug)]
pub struct App {
    pid: Pid,
}

/// Starts `command` and reports its exit on `events`.
pub fn spawn(command: &[String], events: Sender<Happening>) -> Result<App, CompanionError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| CompanionError::Usage("nothing to run after --".into()))?;
    let mut builder = Command::new(program);
    // The app keeps its own drain delay (caddy-beacon's middleware serves on for 5 s after
    // SIGTERM by default): an HTTP/2 connection that a Caddy reload left on the superseded
    // server still routes to this upstream after it was removed; once the app is gone, Caddy
    // retries those requests elsewhere only with zero-wait `lb_retries` (see the Caddyfile).
    builder.args(args).process_group(0);
    die_with_parent(&mut builder);
    let mut child = builder
        .spawn()
        .map_err(|e| CompanionError::Usage(format!("cannot start {program:?}: {e}")))?;
    let pid = Pid::from_raw(
        i32::try_from(child.id())
            .map_err(|_| CompanionError::Setup("the app's pid is out of range".into()))?,
    );
    thread::Builder::new()
        .name("app-wait".into())
        .spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = events.send(Happening::AppExited(status));
            }
        })
        .map_err(|e| {
            CompanionError::Setup(format!(
                "cannot start the thread that waits for the app: {e}"
            ))
        })?;
    Ok(App { pid })
}

/// If the companion dies without a chance to clean up (SIGKILL, OOM), the app gets SIGTERM
/// instead of running on unsupervised. Linux only; the parent-death signal follows the thread
/// that spawned the child, which is the main thread here and lives as long as the process.
#[allow(unsafe_code)]
fn die_with_parent(builder: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the hook runs in the forked child before exec and only makes two system calls
    // (prctl, getppid), both async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        builder.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "caddy-beacon exited while starting the app",
                ));
            }
            Ok(())
        });
    }
}

impl App {
    /// The app's process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Sends `signal` to the app's main process (gunicorn or uvicorn pass it to their workers).
    pub fn signal(&self, signal: i32) {
        if let Ok(signal) = Signal::try_from(signal) {
            let _ = kill(self.pid, signal);
        }
    }
}

/// The companion's exit code for the app's exit: 0 when the app ended from the stop signal the
/// companion passed on (a clean stop; uvicorn re-raises SIGTERM after shutting down), else the
/// app's own code, or 128 + the signal that killed it, as shells report it.
pub fn exit_code(status: ExitStatus, forwarded: Option<i32>) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) if Some(signal) == forwarded => 0,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_exit_statuses() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8), None), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(0), Some(15)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(15), Some(15)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(9), Some(15)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15), None), 143);
    }
}

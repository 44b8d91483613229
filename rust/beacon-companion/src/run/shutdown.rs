//! The way out, as named stages: from serving, through the drain (out of Caddy's rotation,
//! requests in flight finishing while the app still runs), to the app's stop and the
//! companion's exit. The app gets the stop signal only once Caddy has nothing in flight to it;
//! a second signal skips the wait; an app that exits by itself is taken out of Caddy first.

use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::join::leave::LeaveReport;
use crate::log;
use crate::run::signals;
use crate::run::supervisor::{exit_code, App, Happening};
use crate::state::{Control, Phase};

/// How long the drain may take when the app exited by itself: it serves nothing any more.
const DRAIN_AFTER_APP_EXIT: Duration = Duration::from_secs(5);

/// Where the companion is on its way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Nothing asked it to stop (the app may not be ready yet).
    Serving,
    /// Leaving every Caddy because of `signal`; the app still serves what Caddy has in flight.
    Draining {
        /// SIGTERM or SIGINT: passed on to the app once drained.
        signal: i32,
    },
    /// The app was told to stop with `signal` (drained, or a second signal); waiting for it.
    StoppingApp {
        /// The signal passed on.
        signal: i32,
    },
    /// The app exited on its own; finishing the drain, then exiting with its status.
    FinishingDrain {
        /// How the app ended.
        status: ExitStatus,
    },
}

/// What leaving needs: the memberships to stop and where to say they are done.
pub struct Leave {
    /// The phase every membership follows.
    pub control: Arc<Control>,
    /// Stops the readiness probe.
    pub stop_probing: Arc<AtomicBool>,
    /// One membership thread per Caddy; taken when leaving begins.
    pub memberships: Option<Vec<JoinHandle<LeaveReport>>>,
    /// Where [`Happening::Drained`] goes once every membership has left.
    pub sender: Sender<Happening>,
}

impl Leave {
    /// Tells every membership to leave by `deadline`, and reports when all have.
    fn begin(&mut self, deadline: Instant) {
        self.stop_probing.store(true, Ordering::Relaxed);
        self.control.set(Phase::Leaving { deadline });
        if let Some(handles) = self.memberships.take() {
            let sender = self.sender.clone();
            let _ = thread::Builder::new()
                .name("drain-wait".into())
                .spawn(move || {
                    let reports: Vec<LeaveReport> =
                        handles.into_iter().filter_map(|h| h.join().ok()).collect();
                    let _ = sender.send(Happening::Drained(reports));
                });
        }
    }
}

/// The stages and what moves between them.
pub struct Shutdown {
    stage: Stage,
    app: Option<App>,
    leave: Leave,
    drain_timeout: Duration,
    upstream: String,
}

impl Shutdown {
    /// Serving, with `app` supervised (None: an app that runs elsewhere).
    pub fn new(app: Option<App>, leave: Leave, drain_timeout: Duration, upstream: String) -> Self {
        Shutdown {
            stage: Stage::Serving,
            app,
            leave,
            drain_timeout,
            upstream,
        }
    }

    /// The app, to pass other signals to.
    pub fn app(&self) -> Option<&App> {
        self.app.as_ref()
    }

    /// SIGTERM or SIGINT arrived. Returns the exit code when the companion should exit now.
    pub fn stop_signal(&mut self, signal: i32) -> Option<i32> {
        if self.stage == Stage::Serving {
            log::info(format!(
                "{}: removing {} from Caddy and draining (up to {:.1}s){}",
                signals::name(signal),
                self.upstream,
                self.drain_timeout.as_secs_f64(),
                if self.app.is_some() {
                    " before stopping the app"
                } else {
                    ""
                }
            ));
            self.leave.begin(Instant::now() + self.drain_timeout);
            self.stage = Stage::Draining { signal };
            return None;
        }
        log::warn(format!(
            "second {}: stopping now without waiting for the drain",
            signals::name(signal)
        ));
        match (&self.app, self.stage) {
            (None, _) => Some(1),
            (Some(app), Stage::Draining { .. }) => {
                app.signal(signal);
                self.stage = Stage::StoppingApp { signal };
                None
            }
            // Told already, or gone already.
            (Some(_), _) => None,
        }
    }

    /// The supervised app exited.
    pub fn app_exited(&mut self, status: ExitStatus) -> Option<i32> {
        match self.stage {
            Stage::Serving => {
                log::warn(format!(
                    "the app exited by itself ({status}); removing it from Caddy"
                ));
                self.leave
                    .begin(Instant::now() + self.drain_timeout.min(DRAIN_AFTER_APP_EXIT));
                self.stage = Stage::FinishingDrain { status };
                None
            }
            Stage::Draining { .. } | Stage::FinishingDrain { .. } => {
                self.stage = Stage::FinishingDrain { status };
                None
            }
            Stage::StoppingApp { signal } => Some(exit_code(status, Some(signal))),
        }
    }

    /// Every membership has left (drained, or given up at the deadline).
    pub fn drained(&mut self, reports: &[LeaveReport]) -> Option<i32> {
        match (self.stage, &self.app) {
            (Stage::FinishingDrain { status }, _) => Some(exit_code(status, None)),
            (Stage::Draining { signal }, Some(app)) => {
                log::info(format!("passing {} on to the app", signals::name(signal)));
                app.signal(signal);
                self.stage = Stage::StoppingApp { signal };
                None
            }
            (Stage::Draining { .. }, None) => Some(if reports.iter().all(LeaveReport::is_clean) {
                0
            } else {
                1
            }),
            (Stage::Serving | Stage::StoppingApp { .. }, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::supervisor;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::mpsc::{channel, Receiver};

    /// A Shutdown over `app`, with one membership thread that reports `report` once told to
    /// leave; the happenings it sends come out of the receiver.
    fn stages(
        app: Option<App>,
        report: LeaveReport,
    ) -> (
        Shutdown,
        Arc<Control>,
        Receiver<Happening>,
        Sender<Happening>,
    ) {
        let (sender, happenings) = channel();
        let control = Arc::new(Control::default());
        control.set(Phase::Serving);
        let following = Arc::clone(&control);
        let membership = thread::spawn(move || {
            while matches!(following.wait(Duration::from_millis(50)), Phase::Serving) {}
            report
        });
        let leave = Leave {
            control: Arc::clone(&control),
            stop_probing: Arc::new(AtomicBool::new(false)),
            memberships: Some(vec![membership]),
            sender: sender.clone(),
        };
        (
            Shutdown::new(app, leave, Duration::from_secs(5), "10.0.0.5:8000".into()),
            control,
            happenings,
            sender,
        )
    }

    fn drained(happenings: &Receiver<Happening>) -> Vec<LeaveReport> {
        match happenings.recv_timeout(Duration::from_secs(5)) {
            Ok(Happening::Drained(reports)) => reports,
            other => panic!("expected the drain's end, got {other:?}"),
        }
    }

    fn app(events: &Sender<Happening>) -> App {
        supervisor::spawn(&["sleep".into(), "30".into()], events.clone()).expect("sleep runs")
    }

    #[test]
    fn a_signal_drains_first_then_stops_the_app_then_exits_with_its_status() {
        let (events, app_events) = channel();
        let (mut shutdown, control, happenings, _) =
            stages(Some(app(&events)), LeaveReport::default());
        assert_eq!(shutdown.stop_signal(libc_sigterm()), None);
        assert!(matches!(control.phase(), Phase::Leaving { .. }));
        assert_eq!(
            shutdown.stage,
            Stage::Draining {
                signal: libc_sigterm()
            }
        );
        assert_eq!(
            shutdown.drained(&drained(&happenings)),
            None,
            "the app is told now"
        );
        assert_eq!(
            shutdown.stage,
            Stage::StoppingApp {
                signal: libc_sigterm()
            }
        );
        let Ok(Happening::AppExited(status)) = app_events.recv_timeout(Duration::from_secs(5))
        else {
            panic!("sleep did not stop")
        };
        assert_eq!(
            shutdown.app_exited(status),
            Some(0),
            "stopped by the signal it was passed: a clean stop"
        );
    }

    #[test]
    fn a_second_signal_stops_the_app_without_waiting_for_the_drain() {
        let (events, app_events) = channel();
        let (mut shutdown, _, _, _) = stages(Some(app(&events)), LeaveReport::default());
        shutdown.stop_signal(libc_sigterm());
        assert_eq!(shutdown.stop_signal(libc_sigterm()), None);
        assert_eq!(
            shutdown.stage,
            Stage::StoppingApp {
                signal: libc_sigterm()
            }
        );
        assert!(matches!(
            app_events.recv_timeout(Duration::from_secs(5)),
            Ok(Happening::AppExited(_))
        ));
        assert_eq!(shutdown.stop_signal(libc_sigterm()), None, "told already");
    }

    #[test]
    fn an_app_that_exits_by_itself_is_taken_out_of_caddy_then_its_status_is_the_exit() {
        let (mut shutdown, control, happenings, _) = stages(None, LeaveReport::default());
        assert_eq!(shutdown.app_exited(ExitStatus::from_raw(3 << 8)), None);
        assert!(matches!(control.phase(), Phase::Leaving { .. }));
        assert_eq!(shutdown.drained(&drained(&happenings)), Some(3));
    }

    #[test]
    fn without_an_app_the_exit_says_whether_every_caddy_was_left_cleanly() {
        let (mut shutdown, _, happenings, _) = stages(None, LeaveReport::default());
        shutdown.stop_signal(libc_sigterm());
        assert_eq!(shutdown.drained(&drained(&happenings)), Some(0));
        let unclean = LeaveReport {
            still_in_flight: 2,
            ..LeaveReport::default()
        };
        let (mut shutdown, _, happenings, _) = stages(None, unclean);
        shutdown.stop_signal(libc_sigterm());
        assert_eq!(shutdown.drained(&drained(&happenings)), Some(1));
        let (mut shutdown, _, _, _) = stages(None, LeaveReport::default());
        shutdown.stop_signal(libc_sigterm());
        assert_eq!(
            shutdown.stop_signal(libc_sigterm()),
            Some(1),
            "a second signal with nothing to stop: out now"
        );
    }

    fn libc_sigterm() -> i32 {
        nix::sys::signal::Signal::SIGTERM as i32
    }
}

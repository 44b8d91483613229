//! `caddy-beacon run`: choose how to join each Caddy, supervise the app, and leave on a signal.
//!
//! Threads: one membership per Caddy ([`crate::join`]), the readiness probe ([`readiness`]),
//! signals ([`signals`]), the app's exit ([`supervisor`]) and the `--listen` server. They report
//! [`Happening`]s to the loop here, which owns the decisions: register once the app is ready,
//! and on SIGTERM/SIGINT (or when the app exits) walk the [`shutdown`] stages.

pub mod readiness;
pub mod shutdown;
pub mod signals;
pub mod supervisor;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::admin::{AdminAddress, AdminClient};
use crate::join::leave::LeaveReport;
use crate::join::{join, CaddyLink, JoinMode};
use crate::log;
use crate::state::status_server::{self, Listen, Report};
use crate::state::{CaddyState, Control, Phase};
use crate::upstream::Upstream;
use crate::CompanionError;
use readiness::ReadyProbe;
use shutdown::{Leave, Shutdown};
use supervisor::Happening;

/// Everything `run` needs, validated.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// One or more Admin APIs.
    pub admins: Vec<AdminAddress>,
    /// What Caddy dials.
    pub upstream: Upstream,
    /// How each Caddy is joined.
    pub mode: JoinMode,
    /// The app's readiness.
    pub ready: ReadyProbe,
    /// Bound on the wait for requests in flight at shutdown.
    pub drain_timeout: Duration,
    /// `/status` and `/metrics`; None = off.
    pub listen: Option<Listen>,
    /// The app to supervise (empty: join an app that runs elsewhere).
    pub command: Vec<String>,
}

/// Runs until the companion stops; returns the exit code.
pub fn run(options: RunOptions) -> Result<i32, CompanionError> {
    // Before anything starts: a client that cannot be built is bad usage, exit 64.
    let clients = options
        .admins
        .iter()
        .map(|admin| AdminClient::new(admin.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let (sender, happenings) = channel();
    signals::listen(sender.clone())?;
    supervise(options, clients, sender, happenings)
}

/// `run` once its clients are built and signals arrive on `happenings` (the seam the unit tests
/// drive, with clients of a fake Caddy and signals sent as [`Happening::Signal`]).
fn supervise(
    options: RunOptions,
    clients: Vec<AdminClient>,
    sender: Sender<Happening>,
    happenings: Receiver<Happening>,
) -> Result<i32, CompanionError> {
    let control = Arc::new(Control::default());
    let caddies: Vec<Arc<Mutex<CaddyState>>> = options
        .admins
        .iter()
        .map(|a| {
            Arc::new(Mutex::new(CaddyState {
                admin: a.url(),
                ..Default::default()
            }))
        })
        .collect();
    let report = Arc::new(Report {
        upstream: options.upstream.dial.clone(),
        control: control.clone(),
        app_ready: AtomicBool::new(false),
        started: Instant::now(),
        caddies: caddies.clone(),
    });
    if let Some(listen) = options.listen {
        serve_status(listen, report.clone())?;
    }

    let app = if options.command.is_empty() {
        None
    } else {
        Some(supervisor::spawn(&options.command, sender.clone())?)
    };
    if let Some(app) = &app {
        log::info(format!(
            "started {:?} (pid {})",
            options.command.join(" "),
            app.pid()
        ));
    }
    let started = Instant::now();
    let stop_probing = Arc::new(AtomicBool::new(false));
    readiness::wait_for_readiness(options.ready.clone(), sender.clone(), stop_probing.clone())?;
    let links = clients
        .into_iter()
        .zip(caddies)
        .map(|(client, state)| CaddyLink {
            client,
            state,
            control: control.clone(),
        });
    let memberships = start_memberships(links.collect(), &options)?;

    let leave = Leave {
        control: control.clone(),
        stop_probing,
        memberships: Some(memberships),
        sender,
    };
    let mut shutdown = Shutdown::new(
        app,
        leave,
        options.drain_timeout,
        options.upstream.dial.clone(),
    );
    for happening in happenings.iter() {
        let exit = match happening {
            Happening::AppReady => {
                if control.phase() == Phase::WaitingForApp {
                    report.app_ready.store(true, Ordering::Relaxed);
                    log::info(format!(
                        "the app is ready ({} answered 200 after {:.2}s); registering",
                        options.ready.display,
                        started.elapsed().as_secs_f64()
                    ));
                    control.set(Phase::Serving);
                }
                None
            }
            Happening::Signal(signal) if signals::PASSED_ON.contains(&signal) => {
                if let Some(app) = shutdown.app() {
                    app.signal(signal);
                }
                None
            }
            Happening::Signal(signal) => shutdown.stop_signal(signal),
            Happening::AppExited(status) => shutdown.app_exited(status),
            Happening::Drained(reports) => shutdown.drained(&reports),
        };
        if let Some(code) = exit {
            return Ok(code);
        }
    }
    Ok(1)
}

/// `--listen`: a default port that is taken falls back to a free one (see status_server); an
/// explicit one that cannot be bound is bad usage.
fn serve_status(listen: Listen, report: Arc<Report>) -> Result<(), CompanionError> {
    let listener = status_server::bind(listen).map_err(|e| {
        CompanionError::Usage(format!(
            "--listen {}: {e} (give each companion on a host its own port, or --listen off)",
            listen.address
        ))
    })?;
    let bound = status_server::start(listener, report).map_err(|e| {
        CompanionError::Setup(format!("cannot serve --listen {}: {e}", listen.address))
    })?;
    log::info(format!(
        "status on http://{bound}/status and http://{bound}/metrics"
    ));
    Ok(())
}

/// One membership thread per Caddy.
fn start_memberships(
    links: Vec<CaddyLink>,
    options: &RunOptions,
) -> Result<Vec<JoinHandle<LeaveReport>>, CompanionError> {
    links
        .into_iter()
        .map(|link| {
            let (upstream, mode) = (options.upstream.clone(), options.mode.clone());
            thread::Builder::new()
                .name("membership".into())
                .spawn(move || join(link, &upstream, &mode))
                .map_err(|e| {
                    CompanionError::Setup(format!("cannot start a membership thread: {e}"))
                })
        })
        .collect()
}

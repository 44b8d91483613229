//! `caddy-beacon run`: wait for the app's readiness, keep it registered with every Caddy, and on
//! SIGTERM/SIGINT (or when the app exits) remove it, drain, and only then stop the app.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH};
use signal_hook::iterator::Signals;

use crate::app_probe::ReadyProbe;
use crate::events_sink;
use crate::http_client::Endpoint;
use crate::log;
use crate::registration::{LeaveReport, Reconciler};
use crate::site::Target;
use crate::state::{lock, CaddyState, Control, Phase};
use crate::status_server::{self, Listen, Report};
use crate::pool_member::{has_module, PoolMember};
use crate::backoff::Backoff;
use crate::supervisor::{self, Happening};
use crate::upstream::Upstream;
use crate::{AdminAddress, AdminClient, AgentError};

/// Where Caddy's health events are received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsSetting {
    /// 127.0.0.1 when Caddy is local; the upstream's own address when it is an IP; else off.
    Auto,
    /// Use the health gauge only.
    Off,
    /// Listen here; Caddy dials this address.
    Listen(SocketAddr),
}

/// Everything `run` needs, validated.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// One or more Admin APIs.
    pub admins: Vec<AdminAddress>,
    /// What Caddy dials.
    pub upstream: Upstream,
    /// The proxy to join through config edits (required without a pool).
    pub target: Option<Target>,
    /// The beacon module pool to join, when Caddy has the module.
    pub pool: Option<String>,
    /// The lease asked for in a pool.
    pub lease: Duration,
    /// The app's readiness.
    pub ready: ReadyProbe,
    /// Bound on the wait for requests in flight at shutdown.
    pub drain_timeout: Duration,
    /// `/status` and `/metrics`; None = off.
    pub listen: Option<Listen>,
    /// Health events.
    pub events: EventsSetting,
    /// Reap other companions' entries unhealthy this long; None = never.
    pub reap_after: Option<Duration>,
    /// The app to supervise (empty: join an app that runs elsewhere).
    pub command: Vec<String>,
}

/// Signals passed straight to the app (gunicorn's reload, worker count, log reopen, ...).
const PASSED_ON: [i32; 7] = [SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT, SIGTTIN, SIGTTOU, SIGWINCH];

/// Runs until the companion stops; returns the exit code.
pub fn run(options: RunOptions) -> Result<i32, AgentError> {
    // Before anything starts: a client that cannot be built is bad usage, exit 64.
    let clients = options.admins.iter().map(|admin| AdminClient::new(admin.clone())).collect::<Result<Vec<_>, _>>()?;
    let (sender, events) = channel();
    listen_for_signals(sender.clone())?;
    let control = Arc::new(Control::default());
    let caddies: Vec<Arc<Mutex<CaddyState>>> =
        options.admins.iter().map(|a| Arc::new(Mutex::new(CaddyState { admin: a.url(), ..Default::default() }))).collect();
    let report = Arc::new(Report {
        upstream: options.upstream.dial.clone(),
        control: control.clone(),
        app_ready: AtomicBool::new(false),
        started: Instant::now(),
        caddies: caddies.clone(),
    });
    if let Some(listen) = options.listen {
        let bound = status_server::bind(listen).and_then(|listener| status_server::start(listener, report.clone())).map_err(|e| {
            AgentError::Usage(format!("--listen {}: {e} (give each companion on a host its own port, or --listen off)", listen.address))
        })?;
        log::info(format!("status on http://{bound}/status and http://{bound}/metrics"));
    }
    // Pool members read the module's verdict; an events sink only serves config-edit mode.
    if options.target.is_some() {
        for (admin, state) in options.admins.iter().zip(&caddies) {
            start_events_sink(&options, admin, state, &control);
        }
    }

    let app = if options.command.is_empty() { None } else { Some(supervisor::spawn(&options.command, sender.clone())?) };
    if let Some(app) = &app {
        log::info(format!("started {:?} (pid {})", options.command.join(" "), app.pid()));
    }
    let started = Instant::now();
    let stop_probing = Arc::new(AtomicBool::new(false));
    wait_for_readiness(options.ready.clone(), sender.clone(), stop_probing.clone());

    let loops: Vec<thread::JoinHandle<LeaveReport>> = clients
        .into_iter()
        .zip(&caddies)
        .map(|(client, state)| {
            let events_address = lock(state).events_address.clone();
            let reconciler = options.target.clone().map(|target| Reconciler {
                client: client.clone(),
                upstream: options.upstream.clone(),
                target,
                events_address,
                reap_after: options.reap_after,
                state: state.clone(),
                control: control.clone(),
            });
            let member = options.pool.clone().map(|pool| PoolMember {
                client: client.clone(),
                pool,
                address: options.upstream.dial.clone(),
                lease: options.lease,
                state: state.clone(),
                control: control.clone(),
            });
            let control = control.clone();
            thread::Builder::new().name("reconcile".into()).spawn(move || join_caddy(member, reconciler, &control))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| AgentError::Usage(format!("cannot start a thread: {e}")))?;
    let mut loops = Some(loops);

    let mut stop_signal: Option<i32> = None;
    let mut forwarded: Option<i32> = None;
    let mut app_status = None;
    let mut drained = false;
    let drained_sender = sender.clone();
    let begin_leaving = |loops: &mut Option<Vec<thread::JoinHandle<LeaveReport>>>, deadline: Instant| {
        stop_probing.store(true, Ordering::Relaxed);
        control.set(Phase::Leaving { deadline });
        if let Some(handles) = loops.take() {
            let sender = drained_sender.clone();
            let _ = thread::Builder::new().name("drain-wait".into()).spawn(move || {
                let reports: Vec<LeaveReport> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
                let _ = sender.send(Happening::Drained(reports));
            });
        }
    };

    for happening in events.iter() {
        match happening {
            Happening::AppReady if control.phase() == Phase::WaitingForApp => {
                report.app_ready.store(true, Ordering::Relaxed);
                log::info(format!("the app is ready ({} answered 200 after {:.2}s); registering", options.ready.display, started.elapsed().as_secs_f64()));
                control.set(Phase::Serving);
            }
            Happening::AppReady => {}
            Happening::Signal(signal) if PASSED_ON.contains(&signal) => {
                if let Some(app) = &app {
                    app.signal(signal);
                }
            }
            Happening::Signal(signal) => match stop_signal {
                None => {
                    stop_signal = Some(signal);
                    log::info(format!(
                        "{}: removing {} from Caddy and draining (up to {:.1}s){}",
                        signal_name(signal),
                        options.upstream.dial,
                        options.drain_timeout.as_secs_f64(),
                        if app.is_some() { " before stopping the app" } else { "" }
                    ));
                    begin_leaving(&mut loops, Instant::now() + options.drain_timeout);
                }
                Some(_) => {
                    log::warn(format!("second {}: stopping now without waiting for the drain", signal_name(signal)));
                    match &app {
                        Some(app) if forwarded.is_none() && app_status.is_none() => {
                            forwarded = Some(signal);
                            app.signal(signal);
                        }
                        Some(_) => {}
                        None => return Ok(1),
                    }
                }
            },
            Happening::AppExited(status) => {
                app_status = Some(status);
                if stop_signal.is_none() {
                    log::warn(format!("the app exited by itself ({status}); removing it from Caddy"));
                    stop_signal = Some(0);
                    begin_leaving(&mut loops, Instant::now() + options.drain_timeout.min(Duration::from_secs(5)));
                }
                if drained || forwarded.is_some() {
                    return Ok(supervisor::exit_code(status, forwarded));
                }
            }
            Happening::Drained(reports) => {
                drained = true;
                let clean = reports.iter().all(|r| r.error.is_none() && r.still_in_flight == 0);
                match (&app, app_status) {
                    (_, Some(status)) => return Ok(supervisor::exit_code(status, forwarded)),
                    (Some(app), None) => {
                        if forwarded.is_none() {
                            let signal = stop_signal.filter(|s| *s != 0).unwrap_or(SIGTERM);
                            log::info(format!("passing {} on to the app", signal_name(signal)));
                            forwarded = Some(signal);
                            app.signal(signal);
                        }
                    }
                    (None, None) => return Ok(if clean { 0 } else { 1 }),
                }
            }
        }
    }
    Ok(1)
}

/// Joins one Caddy: its beacon module's pool when it has one and `--pool` was given, else its
/// config (`--site`/`--handler-id`). Returns how leaving went.
fn join_caddy(member: Option<PoolMember>, reconciler: Option<Reconciler>, control: &Control) -> LeaveReport {
    let Some(member) = member else {
        return reconciler.map_or_else(LeaveReport::default, |r| r.run());
    };
    let admin = member.client.address().url();
    let mut backoff = Backoff::new(Duration::from_secs(10));
    let mut said: Option<String> = None;
    loop {
        let message = match has_module(&member.client) {
            Ok(true) => {
                log::info(format!("Caddy at {admin} runs the beacon module: joining pool {} (no config edits)", member.pool));
                return member.run();
            }
            Ok(false) => match reconciler {
                Some(reconciler) => {
                    log::info(format!("Caddy at {admin} has no beacon module (GET /beacon/pools answered 404): joining through its config"));
                    return reconciler.run();
                }
                None => format!(
                    "Caddy at {admin} has no beacon module (GET /beacon/pools answered 404) and no --site or --handler-id was given to join through its config"
                ),
            },
            Err(error) => {
                let message = error.to_string();
                lock(&member.state).note_error(&message);
                message
            }
        };
        lock(&member.state).last_error = Some(message.clone());
        if said.as_deref() != Some(message.as_str()) {
            log::warn(format!("{message}; retrying"));
            said = Some(message);
        }
        if let Phase::Leaving { .. } = control.wait(backoff.next_delay()) {
            return LeaveReport::default();
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        SIGQUIT => "SIGQUIT",
        _ => "signal",
    }
}

fn listen_for_signals(sender: Sender<Happening>) -> Result<(), AgentError> {
    let mut wanted = vec![SIGTERM, SIGINT];
    wanted.extend(PASSED_ON);
    let mut signals = Signals::new(wanted).map_err(|e| AgentError::Usage(format!("cannot handle signals: {e}")))?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if sender.send(Happening::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| AgentError::Usage(format!("cannot start a thread: {e}")))?;
    Ok(())
}

fn wait_for_readiness(probe: ReadyProbe, sender: Sender<Happening>, stop: Arc<AtomicBool>) {
    let _ = thread::Builder::new().name("ready-probe".into()).spawn(move || {
        let started = Instant::now();
        let mut last_said = None::<Instant>;
        let client = match probe.client() {
            Ok(client) => client,
            Err(why) => {
                log::info(format!("cannot probe the app's readiness: {why}"));
                return;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            match probe.check(&client) {
                Ok(()) => {
                    let _ = sender.send(Happening::AppReady);
                    return;
                }
                Err(why) => {
                    if last_said.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        log::info(format!("waiting for the app to be ready ({why}; {:.0}s so far)", started.elapsed().as_secs_f64()));
                        last_said = Some(Instant::now());
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
}

fn start_events_sink(options: &RunOptions, admin: &AdminAddress, state: &Arc<Mutex<CaddyState>>, control: &Arc<Control>) {
    let upstream_host = match &options.upstream.endpoint {
        Endpoint::Tcp(authority) => authority.rsplit_once(':').map(|(host, _)| host.to_owned()),
        Endpoint::Unix(_) => None,
    };
    let bind = match &options.events {
        EventsSetting::Off => return events_sink::explain_off("--events off"),
        EventsSetting::Listen(address) => *address,
        EventsSetting::Auto => match events_sink::default_bind(admin.is_local(), upstream_host.as_deref()) {
            Some(address) => address,
            None => return events_sink::explain_off("Caddy is remote and the upstream is not an IP address; see --events"),
        },
    };
    // Only Caddy may write events: its admin host's addresses (loopback for a local Caddy).
    let allowed: Vec<IpAddr> = match &admin.endpoint {
        Endpoint::Unix(_) => vec![IpAddr::from([127, 0, 0, 1])],
        Endpoint::Tcp(authority) => authority.to_socket_addrs().map(|a| a.map(|s| s.ip()).collect()).unwrap_or_default(),
    };
    match events_sink::start(bind, allowed, options.upstream.dial.clone(), state.clone(), control.clone()) {
        Ok(bound) => lock(state).events_address = Some(format!("tcp/{bound}")),
        Err(error) => events_sink::explain_off(&format!("cannot listen on {bind}: {error}")),
    }
}

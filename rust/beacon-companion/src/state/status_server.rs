//! The companion's own HTTP endpoint (`--listen`, 127.0.0.1:9465 by default): `/status` (JSON)
//! and `/metrics` (Prometheus text) describing the app, its registration with each Caddy, and
//! Caddy's health view of it.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use axum::routing::get;
use axum::Router;
use beacon_base::http_server::{serve, with_fallback, Limits, Response, StatusCode};

use serde_json::{json, Value};

use crate::log;
use crate::state::{lock, CaddyState, Control};

/// What the endpoint reports.
#[derive(Debug)]
pub struct Report {
    /// The upstream's dial address.
    pub upstream: String,
    /// The phase.
    pub control: Arc<Control>,
    /// The app passed its readiness check (at least once).
    pub app_ready: AtomicBool,
    /// When the companion started.
    pub started: Instant,
    /// One entry per Caddy.
    pub caddies: Vec<Arc<Mutex<CaddyState>>>,
}

impl Report {
    /// The `/status` document.
    pub fn status(&self) -> Value {
        let now = Instant::now();
        let caddies: Vec<Value> = self
            .caddies
            .iter()
            .map(|caddy| {
                let state = lock(caddy);
                let reading = state.board.get(&self.upstream);
                json!({
                    "admin": state.admin,
                    "registered": state.registered,
                    "healthy": reading.map(|r| r.healthy),
                    "healthy_for_seconds": reading.map(|r| now.duration_since(r.since).as_secs_f64()),
                    "health_source": reading.map(|r| r.source.name()),
                    "events": state.events_address.is_some(),
                    "in_flight": state.in_flight,
                    "weight": state.weight,
                    "fails": state.fails,
                    "registrations": state.registrations,
                    "reaped": state.reaped,
                    "admin_errors": state.admin_errors,
                    "last_error": state.last_error,
                })
            })
            .collect();
        json!({
            "upstream": self.upstream,
            "phase": self.control.phase().name(),
            "app_ready": self.app_ready.load(Ordering::Relaxed),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "caddies": caddies,
        })
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let upstream = escape(&self.upstream);
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        };
        let ready = f64::from(u8::from(self.app_ready.load(Ordering::Relaxed)));
        family(
            "beacon_companion_app_ready",
            "gauge",
            "1 once the app passed its readiness check.",
            vec![(format!("upstream=\"{upstream}\""), ready)],
        );
        let states: Vec<(String, std::sync::MutexGuard<'_, CaddyState>)> = self
            .caddies
            .iter()
            .map(|c| lock(c))
            .map(|s| {
                (
                    format!("admin=\"{}\",upstream=\"{upstream}\"", escape(&s.admin)),
                    s,
                )
            })
            .collect();
        let per = |f: &dyn Fn(&CaddyState) -> Option<f64>| {
            states
                .iter()
                .filter_map(|(l, s)| f(s).map(|v| (l.clone(), v)))
                .collect::<Vec<_>>()
        };
        family(
            "beacon_companion_registered",
            "gauge",
            "1 while the upstream is in this Caddy's config.",
            per(&|s| Some(f64::from(u8::from(s.registered)))),
        );
        family(
            "beacon_companion_upstream_healthy",
            "gauge",
            "Caddy's active health-check result for the upstream (absent until Caddy reports one).",
            per(&|s| {
                s.board
                    .get(&self.upstream)
                    .map(|r| f64::from(u8::from(r.healthy)))
            }),
        );
        family(
            "beacon_companion_upstream_in_flight",
            "gauge",
            "Requests in flight to the upstream, as Caddy counts them.",
            per(&|s| s.in_flight.map(|v| v as f64)),
        );
        family(
            "beacon_companion_registrations_total",
            "counter",
            "Writes that added the upstream to Caddy's config.",
            per(&|s| Some(s.registrations as f64)),
        );
        let mut transitions = Vec::new();
        for (labels, state) in &states {
            transitions.push((
                format!("{labels},to=\"healthy\""),
                state.became_healthy as f64,
            ));
            transitions.push((
                format!("{labels},to=\"unhealthy\""),
                state.became_unhealthy as f64,
            ));
        }
        family(
            "beacon_companion_health_transitions_total",
            "counter",
            "Changes of Caddy's health verdict on the upstream.",
            transitions,
        );
        family(
            "beacon_companion_admin_errors_total",
            "counter",
            "Failed Admin API requests (unreachable, 5xx, refused changes).",
            per(&|s| Some(s.admin_errors as f64)),
        );
        family(
            "beacon_companion_reaped_total",
            "counter",
            "Entries of vanished companions removed from this Caddy.",
            per(&|s| Some(s.reaped as f64)),
        );
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The routes: `/status` and `/metrics`, both answered from a few locks' worth of state.
pub fn app(report: Arc<Report>) -> Router {
    let (status, metrics) = (report.clone(), report);
    let router = Router::new()
        .route(
            "/status",
            get(move || {
                std::future::ready(Response::new(
                    StatusCode::OK,
                    "application/json",
                    status.status().to_string() + "\n",
                ))
            }),
        )
        .route(
            "/metrics",
            get(move || {
                std::future::ready(Response::new(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.metrics(),
                ))
            }),
        );
    with_fallback(router, "try /status or /metrics")
}

/// Where `--listen` asked to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen {
    /// The address.
    pub address: SocketAddr,
    /// Given by the user (flag or environment); the default may move to a free port instead.
    pub explicit: bool,
}

/// Binds `listen`: an explicit address must be free; the default, when taken (another companion
/// on this host), gives way to a free port on the same IP, said in one line.
pub fn bind(listen: Listen) -> io::Result<TcpListener> {
    match TcpListener::bind(listen.address) {
        Err(error) if error.kind() == io::ErrorKind::AddrInUse && !listen.explicit => {
            let listener = TcpListener::bind(SocketAddr::new(listen.address.ip(), 0))?;
            log::info(format!(
                "{} is taken (another companion on this host?); serving /status on {} instead (--listen sets a fixed port)",
                listen.address,
                listener.local_addr()?
            ));
            Ok(listener)
        }
        other => other,
    }
}

/// Serves `report` on `listener` from a background thread; returns the bound address.
pub fn start(listener: TcpListener, report: Arc<Report>) -> io::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    let app = app(report);
    thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            if let Err(error) = serve(listener, app, Limits::default()) {
                log::warn(format!("the status endpoint on {bound} stopped: {error}"));
            }
        })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status_and_metrics() {
        let caddy = Arc::new(Mutex::new(CaddyState {
            admin: "http://localhost:2019".into(),
            registered: true,
            registrations: 1,
            ..Default::default()
        }));
        let report = Report {
            upstream: "127.0.0.1:8001".into(),
            control: Arc::new(Control::default()),
            app_ready: AtomicBool::new(true),
            started: Instant::now(),
            caddies: vec![caddy],
        };
        let status = report.status();
        assert_eq!(status["phase"], "waiting_for_app");
        assert_eq!(status["caddies"][0]["registered"], true);
        assert_eq!(status["caddies"][0]["healthy"], Value::Null);
        let metrics = report.metrics();
        assert!(metrics.contains("beacon_companion_registered{admin=\"http://localhost:2019\",upstream=\"127.0.0.1:8001\"} 1\n"), "{metrics}");
        assert!(metrics.contains("beacon_companion_health_transitions_total{admin=\"http://localhost:2019\",upstream=\"127.0.0.1:8001\",to=\"unhealthy\"} 0\n"));
        assert!(!metrics.contains("beacon_companion_upstream_healthy{"));
    }
}

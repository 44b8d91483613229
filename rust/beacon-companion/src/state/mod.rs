//! What the companion wants and knows, shared between its threads: the phase every membership
//! follows ([`Control`]), each Caddy's registration and errors ([`CaddyState`]), the health
//! verdicts Caddy gives ([`health`]), and the `--listen` server that reports all of it
//! ([`status_server`]).

pub mod health;
pub mod status_server;

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::log;
use health::{HealthBoard, Transition};

/// What the companion is doing; every Caddy's reconcile loop follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The app is not ready yet: nothing is registered.
    WaitingForApp,
    /// The app is ready: keep it registered with every Caddy.
    Serving,
    /// Shutting down: remove the upstream and drain until the deadline.
    Leaving {
        /// When to give up waiting for requests in flight.
        deadline: Instant,
    },
}

impl Phase {
    /// For `/status`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::WaitingForApp => "waiting_for_app",
            Phase::Serving => "serving",
            Phase::Leaving { .. } => "leaving",
        }
    }
}

/// The phase, and a way to wake every loop when it changes (or when Caddy reports a reload).
#[derive(Debug)]
pub struct Control {
    phase: Mutex<(Phase, u64)>,
    changed: Condvar,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            phase: Mutex::new((Phase::WaitingForApp, 0)),
            changed: Condvar::new(),
        }
    }
}

impl Control {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        lock(&self.phase).0
    }

    /// Moves to `phase` and wakes every loop.
    pub fn set(&self, phase: Phase) {
        let mut guard = lock(&self.phase);
        guard.0 = phase;
        guard.1 += 1;
        self.changed.notify_all();
    }

    /// Wakes every loop without changing the phase (e.g. Caddy reloaded its config).
    pub fn poke(&self) {
        let mut guard = lock(&self.phase);
        guard.1 += 1;
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for a change or a poke; returns the phase.
    pub fn wait(&self, timeout: Duration) -> Phase {
        let guard = lock(&self.phase);
        let seen = guard.1;
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |state| state.1 == seen)
            .unwrap_or_else(|e| e.into_inner());
        guard.0
    }
}

/// What the companion knows about one Caddy.
#[derive(Debug, Default)]
pub struct CaddyState {
    /// The Admin API address as given.
    pub admin: String,
    /// The upstream is in this Caddy's config (last time it was checked).
    pub registered: bool,
    /// Writes that added the upstream (1 normally; more after Caddy restarts or reloads).
    pub registrations: u64,
    /// Admin API requests that failed (transport errors, 5xx, refused changes).
    pub admin_errors: u64,
    /// Entries of vanished companions removed.
    pub reaped: u64,
    /// Health transitions of this companion's upstream, to healthy and to unhealthy.
    pub became_healthy: u64,
    /// See `became_healthy`.
    pub became_unhealthy: u64,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
    /// Requests in flight to the upstream, as Caddy reports them.
    pub in_flight: Option<u64>,
    /// The upstream's weight in this Caddy's pool (pool mode), as Caddy last reported it.
    pub weight: Option<u32>,
    /// Passive-check failures Caddy counts for it.
    pub fails: Option<u64>,
    /// The events sink's address (`tcp/host:port`) when it is on.
    pub events_address: Option<String>,
    /// Health of every upstream this Caddy checks.
    pub board: HealthBoard,
}

impl CaddyState {
    /// Counts a failed Admin API request and keeps its message for `/status`.
    pub fn note_error(&mut self, message: &str) {
        self.admin_errors += 1;
        self.last_error = Some(message.to_owned());
    }

    /// Counts and logs a health transition of the companion's own upstream (`mine`); others'
    /// transitions only update the board.
    pub fn note_transition(&mut self, mine: &str, transition: &Transition, source: &str) {
        let Transition { host, healthy, was } = transition;
        if host != mine {
            return;
        }
        if *healthy {
            self.became_healthy += 1;
        } else {
            self.became_unhealthy += 1;
        }
        let word = if *healthy { "healthy" } else { "UNHEALTHY" };
        let message = format!(
            "Caddy at {} reports {host} {word} (active health check, via its {source})",
            self.admin
        );
        match (healthy, was) {
            (true, Some(false)) | (true, None) => log::info(message),
            _ => log::warn(message),
        }
    }
}

/// Locks, ignoring poisoning: a panicked thread must not take `/status` down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

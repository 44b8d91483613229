//! Leaving a Caddy in config-edit mode: remove the entry (and its log sink) in one write, then
//! wait for Caddy's requests in flight to it, until the drain deadline.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::edits::{remove_id, remove_pointer};
use super::site::locate;
use super::{Attempt, Reconciler, Snapshot};
use crate::admin::config_tree::contains_id;
use crate::admin::proxy_upstreams::wait_until_drained;
use crate::backoff::{jitter, Backoff};
use crate::join::leave::{LeaveReport, Unreachable};
use crate::log;
use crate::state::lock;
use crate::CompanionError;

impl Reconciler {
    /// Removes the upstream entry, then waits for requests in flight to it, until `deadline`.
    pub(super) fn remove_and_drain(&self, deadline: Instant) -> LeaveReport {
        let started = Instant::now();
        let id = self.id();
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let mut error = None;
        let mut warned_outage = false;
        let mut removed = false;
        let mut unreachable = Unreachable::default();
        while Instant::now() < deadline {
            let snapshot = match self.read() {
                Ok(snapshot) => snapshot,
                Err(e) => {
                    self.count_error(&e.to_string());
                    // A Caddy that cannot be reached sends no traffic either: give it a few
                    // seconds (an admin endpoint being replaced by a reload), not the whole
                    // drain timeout.
                    if matches!(e, CompanionError::Unreachable { .. }) && unreachable.given_up() {
                        error = Some(e.to_string());
                        break;
                    }
                    error = Some(e.to_string());
                    thread::sleep(
                        backoff
                            .next_delay()
                            .min(deadline.saturating_duration_since(Instant::now())),
                    );
                    continue;
                }
            };
            if !contains_id(&snapshot.config, &id) {
                removed = true;
                break;
            }
            if !warned_outage {
                warned_outage = true;
                self.warn_if_last_healthy(&snapshot);
            }
            let sink_pointer = format!("/logging/logs/{}", self.log_name());
            let has_sink =
                self.events_address.is_some() && snapshot.config.pointer(&sink_pointer).is_some();
            let mut wanted = snapshot.config.clone();
            remove_id(&mut wanted, &id);
            remove_pointer(&mut wanted, &sink_pointer);
            let targeted = (!has_sink).then(|| ("DELETE", format!("/id/{id}"), None));
            match self.apply(&snapshot, &wanted, targeted) {
                Ok(true) => {
                    log::info(format!(
                        "removed {} from Caddy at {}; draining",
                        self.upstream.dial,
                        self.admin()
                    ));
                    removed = true;
                    break;
                }
                Ok(false) => thread::sleep(jitter(Duration::from_millis(100))),
                Err(Attempt::Blocked { message, .. }) => {
                    error = Some(message);
                    break;
                }
                Err(Attempt::Retry(message)) => {
                    error = Some(message);
                    thread::sleep(
                        backoff
                            .next_delay()
                            .min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
                Err(Attempt::Done) => break,
            }
        }
        lock(&self.caddy.state).registered = false;
        if !removed {
            let error = error.unwrap_or_else(|| "the drain timeout ended first".to_owned());
            log::error(format!(
                "could not remove {} from Caddy at {}: {error}",
                self.upstream.dial,
                self.admin()
            ));
            return LeaveReport {
                admin: self.admin(),
                still_in_flight: 0,
                elapsed: started.elapsed(),
                error: Some(error),
            };
        }
        let still_in_flight = self.drain(deadline);
        let elapsed = started.elapsed();
        if still_in_flight == 0 {
            log::info(format!(
                "{} drained at {} in {:.2}s",
                self.upstream.dial,
                self.admin(),
                elapsed.as_secs_f64()
            ));
        } else {
            log::warn(format!(
                "{still_in_flight} request(s) to {} were still in flight at {} when the drain timeout ended",
                self.upstream.dial,
                self.admin()
            ));
        }
        LeaveReport {
            admin: self.admin(),
            still_in_flight,
            elapsed,
            error: None,
        }
    }

    /// Waits for requests in flight to the removed upstream; returns what is left at `deadline`.
    fn drain(&self, deadline: Instant) -> u64 {
        let running =
            wait_until_drained(&self.caddy.client, &self.upstream.dial, deadline, |error| {
                self.count_error(&error.to_string());
                Ok(())
            })
            .unwrap_or(0);
        lock(&self.caddy.state).in_flight = Some(running);
        running
    }

    fn warn_if_last_healthy(&self, snapshot: &Snapshot) {
        let Ok(located) = locate(&snapshot.config, &self.settings.target) else {
            return;
        };
        let state = lock(&self.caddy.state);
        let others_healthy = located
            .upstreams
            .unwrap_or_default()
            .iter()
            .filter_map(|u| u.get("dial").and_then(Value::as_str))
            .filter(|dial| *dial != self.upstream.dial)
            // No reading means Caddy has no active check result: it routes to it.
            .filter(|dial| state.board.get(dial).is_none_or(|r| r.healthy))
            .count();
        if others_healthy == 0 {
            log::warn(format!(
                "OUTAGE: {} is the last healthy upstream of {} at {}; Caddy answers 502/503 to that site until another registers",
                self.upstream.dial,
                self.settings.target.describe(),
                self.admin()
            ));
        }
    }
}

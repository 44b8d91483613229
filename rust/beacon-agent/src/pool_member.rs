//! Membership of a beacon module pool (`--pool`): registration, lease renewal, the module's
//! health verdict, and leaving drained — all through `/beacon/pools/...` on Caddy's admin API,
//! so Caddy's config never changes and nothing reloads.
//!
//! Register once the app is ready; renew the lease every third of it; read the pool every
//! second (the verdict, requests in flight, and whether Caddy still knows the upstream: a
//! restarted Caddy does not, and the companion registers again at once). On leaving: drain
//! (no new requests), wait until Caddy has nothing in flight to the app (bounded by the drain
//! timeout), remove.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::backoff::Backoff;
use crate::registration::{note_transition, LeaveReport, UNREACHABLE_AT_LEAVE};
use crate::state::{lock, CaddyState, Control, Phase};
use crate::{log, AdminClient, AgentError};

/// How often the pool is read while serving (verdict, in flight, still registered).
const READ_INTERVAL: Duration = Duration::from_secs(1);

/// What the module says about this companion's upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Passing the module's checks.
    pub healthy: bool,
    /// Marked draining.
    pub draining: bool,
    /// Requests Caddy has in flight to it.
    pub in_flight: u64,
}

/// Whether `GET /beacon/pools` answers: the Caddy runs the beacon module.
pub fn has_module(client: &AdminClient) -> Result<bool, AgentError> {
    let response = client.request("GET", "/beacon/pools", None, None)?;
    Ok(response.status == 200)
}

/// Finds `address` in `pool` in a `GET /beacon/pools` answer.
pub fn find(pools: &Value, pool: &str, address: &str) -> Option<Membership> {
    let upstream = pools.pointer(&format!("/pools/{}/upstreams", pool.replace('~', "~0").replace('/', "~1")))?.as_array()?.iter().find(|u| u["address"] == address)?;
    Some(Membership {
        healthy: upstream["healthy"].as_bool().unwrap_or(false),
        draining: upstream["draining"].as_bool().unwrap_or(false),
        in_flight: upstream["in_flight"].as_u64().unwrap_or(0),
    })
}

/// One companion's membership of one pool of one Caddy.
pub struct PoolMember {
    /// The Admin API.
    pub client: AdminClient,
    /// The pool.
    pub pool: String,
    /// What Caddy dials.
    pub address: String,
    /// The lease asked for.
    pub lease: Duration,
    /// Shared with `/status`.
    pub state: Arc<Mutex<CaddyState>>,
    /// The phase every loop follows.
    pub control: Arc<Control>,
}

/// How one admin request went.
enum Outcome {
    Done(Value),
    /// Caddy refused for good (4xx): said once, retried only slowly.
    Refused(String),
    /// Unreachable or 5xx: retried with backoff.
    Failed(String),
    /// 404 for this upstream (not registered, lease ended).
    Unknown,
}

impl PoolMember {
    fn admin(&self) -> String {
        self.client.address().url()
    }

    fn post(&self, action: &str, body: &Value) -> Outcome {
        let path = format!("/beacon/pools/{}/{action}", self.pool);
        match self.client.request("POST", &path, Some(body.to_string().as_bytes()), None) {
            Ok(response) if response.status == 200 => Outcome::Done(serde_json::from_slice(&response.body).unwrap_or(Value::Null)),
            Ok(response) if response.status == 404 && action != "register" => Outcome::Unknown,
            Ok(response) if response.status >= 500 => Outcome::Failed(self.client.api_error("POST", &path, &response).to_string()),
            Ok(response) => Outcome::Refused(self.client.api_error("POST", &path, &response).to_string()),
            Err(error) => Outcome::Failed(error.to_string()),
        }
    }

    fn read(&self) -> Result<Option<Membership>, String> {
        let (pools, _) = self.client.get_json("/beacon/pools").map_err(|e| e.to_string())?;
        Ok(find(&pools, &self.pool, &self.address))
    }

    fn count_error(&self, message: &str) {
        lock(&self.state).note_error(message);
    }

    fn observe(&self, membership: &Membership) {
        let mut state = lock(&self.state);
        state.in_flight = Some(membership.in_flight);
        if let Some(transition) = state.board.apply_module_verdict(&self.address, membership.healthy, Instant::now()) {
            note_transition(&mut state, &self.address, &transition.host, transition.healthy, transition.was, "beacon module");
        }
    }

    fn register(&self) -> Outcome {
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let outcome = self.post("register", &json!({"address": self.address, "lease_ms": lease_ms}));
        if let Outcome::Done(reply) = &outcome {
            let mut state = lock(&self.state);
            state.registered = true;
            state.last_error = None;
            if reply["created"].as_bool().unwrap_or(true) {
                state.registrations += 1;
            }
            drop(state);
            log::info(format!("registered {} in pool {} of Caddy at {} (lease {:.0}s, no config change)", self.address, self.pool, self.admin(), self.lease.as_secs_f64()));
        }
        outcome
    }

    /// The loop: follows the phase until the companion leaves; returns how leaving went.
    pub fn run(&self) -> LeaveReport {
        let mut backoff = Backoff::new(Duration::from_secs(10));
        let mut reported: Option<String> = None;
        let mut last_renewal = Instant::now();
        let mut wait = Duration::ZERO;
        loop {
            let phase = self.control.wait(wait);
            wait = READ_INTERVAL;
            match phase {
                Phase::WaitingForApp => continue,
                Phase::Leaving { deadline } => return self.leave(deadline),
                Phase::Serving => {}
            }
            let registered = lock(&self.state).registered;
            let renewing = registered && last_renewal.elapsed() >= self.lease / 3;
            let outcome = if !registered {
                self.register()
            } else if renewing {
                self.post("renew", &json!({"address": self.address}))
            } else {
                match self.read() {
                    Ok(Some(membership)) => {
                        self.observe(&membership);
                        Outcome::Done(Value::Null)
                    }
                    Ok(None) => Outcome::Unknown,
                    Err(error) => Outcome::Failed(error),
                }
            };
            match outcome {
                Outcome::Done(_) => {
                    if !registered || renewing {
                        last_renewal = Instant::now();
                    }
                    if backoff.failures() > 0 {
                        log::info(format!("Caddy at {} answers again", self.admin()));
                    }
                    backoff.reset();
                    reported = None;
                }
                Outcome::Unknown => {
                    log::warn(format!(
                        "{} is no longer in pool {} of Caddy at {} (Caddy restarted, or the lease ended); registering it again",
                        self.address,
                        self.pool,
                        self.admin()
                    ));
                    lock(&self.state).registered = false;
                    wait = Duration::ZERO;
                }
                Outcome::Refused(message) | Outcome::Failed(message) => {
                    self.count_error(&message);
                    wait = backoff.next_delay();
                    if reported.as_deref() != Some(message.as_str()) {
                        log::warn(format!("{message}; retrying (backing off up to 10s)"));
                        reported = Some(message);
                    }
                }
            }
        }
    }

    /// Drain, wait for requests in flight to end (until `deadline`), remove.
    fn leave(&self, deadline: Instant) -> LeaveReport {
        let started = Instant::now();
        let admin = self.admin();
        let report = |still_in_flight: u64, error: Option<String>| LeaveReport { admin: admin.clone(), still_in_flight, elapsed: started.elapsed(), error };
        if !lock(&self.state).registered {
            return report(0, None);
        }
        let mut unreachable_since: Option<Instant> = None;
        let mut backoff = Backoff::new(Duration::from_secs(1));
        // 1. No new requests.
        loop {
            match self.post("drain", &json!({"address": self.address})) {
                Outcome::Done(_) => break,
                Outcome::Unknown => {
                    lock(&self.state).registered = false;
                    return report(0, None);
                }
                Outcome::Refused(message) => return report(0, Some(message)),
                Outcome::Failed(message) => {
                    self.count_error(&message);
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= UNREACHABLE_AT_LEAVE || Instant::now() >= deadline {
                        log::error(format!("could not drain {} at {admin}: {message}", self.address));
                        lock(&self.state).registered = false;
                        return report(0, Some(message));
                    }
                    thread::sleep(backoff.next_delay().min(deadline.saturating_duration_since(Instant::now())));
                }
            }
        }
        log::info(format!("{} is draining in pool {} of Caddy at {}", self.address, self.pool, admin));
        // 2. Wait for what is in flight.
        let mut in_flight = 0;
        while Instant::now() < deadline {
            match self.read() {
                Ok(Some(membership)) => {
                    in_flight = membership.in_flight;
                    lock(&self.state).in_flight = Some(in_flight);
                    if in_flight == 0 {
                        break;
                    }
                }
                Ok(None) => {
                    in_flight = 0;
                    break;
                }
                Err(error) => self.count_error(&error),
            }
            thread::sleep(Duration::from_millis(50));
        }
        // 3. Gone.
        let removed = self.post("remove", &json!({"address": self.address}));
        lock(&self.state).registered = false;
        let error = match removed {
            Outcome::Done(_) | Outcome::Unknown => None,
            Outcome::Refused(message) | Outcome::Failed(message) => Some(message),
        };
        if in_flight == 0 {
            log::info(format!("{} drained and removed from pool {} at {} in {:.2}s", self.address, self.pool, admin, started.elapsed().as_secs_f64()));
        } else {
            log::warn(format!("{in_flight} request(s) to {} were still in flight at {admin} when the drain timeout ended", self.address));
        }
        report(in_flight, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_upstream_in_the_pools_listing() {
        let pools = json!({"pools": {"api": {"upstreams": [
            {"address": "127.0.0.1:8001", "healthy": true, "draining": false, "in_flight": 2},
            {"address": "127.0.0.1:8002", "healthy": false, "draining": true, "in_flight": 0},
        ]}}});
        assert_eq!(find(&pools, "api", "127.0.0.1:8001"), Some(Membership { healthy: true, draining: false, in_flight: 2 }));
        assert_eq!(find(&pools, "api", "127.0.0.1:8002").map(|m| (m.healthy, m.draining)), Some((false, true)));
        assert_eq!(find(&pools, "api", "127.0.0.1:8003"), None);
        assert_eq!(find(&pools, "other", "127.0.0.1:8001"), None);
    }
}

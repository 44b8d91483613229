//! Pool mode: membership of a beacon module pool (`--pool`) — registration, lease renewal, the
//! module's health verdict, and leaving drained — all through `/beacon/pools/...` on Caddy's
//! admin API, so Caddy's config never changes and nothing reloads.
//!
//! Register once the app is ready; renew the lease every third of it; read the pool every
//! second (the verdict, requests in flight, and whether Caddy still knows the upstream: a
//! restarted Caddy does not, and the companion registers again at once). On leaving: drain
//! (no new requests), wait until Caddy has nothing in flight to the app (bounded by the drain
//! timeout), remove.

use std::thread;
use std::time::{Duration, Instant};

use crate::admin::beacon_api::{ActionError, BeaconApi, Member, PoolAction};
use crate::backoff::Backoff;
use crate::join::leave::{LeaveReport, Unreachable};
use crate::join::{CaddyLink, Membership, Step};
use crate::log;
use crate::state::lock;

/// What pool mode needs from the options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// The pool (`dynamic beacon <pool>` in the Caddyfile).
    pub name: String,
    /// The lease asked for; renewed every third of it.
    pub lease: Duration,
    /// The weight registered with (`--weight`; 0 = standby).
    pub weight: u32,
}

/// One companion's membership of one pool of one Caddy.
#[derive(Debug)]
pub struct PoolMember {
    caddy: CaddyLink,
    pool: PoolSettings,
    /// What Caddy dials.
    address: String,
    last_renewal: Instant,
}

impl PoolMember {
    /// A member that has not registered yet.
    pub fn new(caddy: CaddyLink, pool: PoolSettings, address: String) -> Self {
        PoolMember {
            caddy,
            pool,
            address,
            last_renewal: Instant::now(),
        }
    }

    fn api(&self) -> BeaconApi<'_> {
        BeaconApi(&self.caddy.client)
    }

    fn act(&self, action: PoolAction) -> Result<(), ActionError> {
        self.api().act(&self.pool.name, action, &self.address)
    }

    /// Our entry in the pool: Ok(None) when the module does not list it.
    fn read(&self) -> Result<Option<Member>, String> {
        match self.api().pools() {
            Ok(Some(listing)) => Ok(listing.member(&self.pool.name, &self.address).cloned()),
            Ok(None) => Err(format!(
                "Caddy at {} no longer answers GET /beacon/pools (404)",
                self.caddy.admin()
            )),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Takes in Caddy's view of our entry. A weight changed in Caddy (`caddy-beacon weight`)
    /// becomes the one this companion registers with, so a restarted Caddy gets it back rather
    /// than `--weight`: an operator's canary setting outlives a Caddy restart (not a restart of
    /// this companion, which starts from `--weight` again).
    fn observe(&mut self, member: &Member) {
        if member.weight != self.pool.weight {
            log::info(format!(
                "{} has weight {} in pool {} of Caddy at {} (was {}); registering again after a Caddy restart keeps it",
                self.address,
                member.weight,
                self.pool.name,
                self.caddy.admin(),
                self.pool.weight
            ));
            self.pool.weight = member.weight;
        }
        let mut state = lock(&self.caddy.state);
        state.weight = Some(member.weight);
        state.in_flight = Some(member.in_flight);
        if let Some(transition) =
            state
                .board
                .apply_module_verdict(&self.address, member.healthy, Instant::now())
        {
            state.note_transition(&self.address, &transition, "beacon module");
        }
    }

    fn register(&self) -> Result<(), ActionError> {
        let registered = self.api().register(
            &self.pool.name,
            &self.address,
            self.pool.lease,
            self.pool.weight,
        )?;
        let mut state = lock(&self.caddy.state);
        state.registered = true;
        state.weight = Some(registered.weight);
        state.last_error = None;
        if registered.created {
            state.registrations += 1;
        }
        drop(state);
        log::info(format!(
            "registered {} in pool {} of Caddy at {} (weight {}, lease {:.0}s, no config change)",
            self.address,
            self.pool.name,
            self.caddy.admin(),
            registered.weight,
            self.pool.lease.as_secs_f64()
        ));
        Ok(())
    }

    fn forgotten(&self) -> Step {
        log::warn(format!(
            "{} is no longer in pool {} of Caddy at {} (Caddy restarted, or the lease ended); registering it again",
            self.address,
            self.pool.name,
            self.caddy.admin()
        ));
        lock(&self.caddy.state).registered = false;
        Step::Again
    }

    fn failed(&self, message: String) -> Step {
        self.caddy.note_error(&message);
        Step::Retry(message)
    }
}

impl Membership for PoolMember {
    /// Registers, renews when a third of the lease has passed, or else reads the verdict.
    fn step(&mut self) -> Step {
        let registered = lock(&self.caddy.state).registered;
        let renewing = registered && self.last_renewal.elapsed() >= self.pool.lease / 3;
        let written = if !registered {
            self.register()
        } else if renewing {
            self.act(PoolAction::Renew)
        } else {
            return match self.read() {
                Ok(Some(member)) => {
                    self.observe(&member);
                    Step::Done
                }
                Ok(None) => self.forgotten(),
                Err(message) => self.failed(message),
            };
        };
        match written {
            Ok(()) => {
                self.last_renewal = Instant::now();
                Step::Done
            }
            Err(ActionError::NotFound) => self.forgotten(),
            Err(ActionError::Refused(error)) if renewing => {
                // The module judged our address again (its name now resolves somewhere the pool
                // refuses) and removed it: register again, which says whether it still refuses.
                lock(&self.caddy.state).registered = false;
                self.failed(error.to_string())
            }
            Err(ActionError::Refused(error) | ActionError::Failed(error)) => {
                self.failed(error.to_string())
            }
        }
    }

    /// Drain, wait for requests in flight to end (until `deadline`), remove.
    fn leave(&mut self, deadline: Instant) -> LeaveReport {
        let started = Instant::now();
        let admin = self.caddy.admin();
        let report = |still_in_flight: u64, error: Option<String>| LeaveReport {
            admin: admin.clone(),
            still_in_flight,
            elapsed: started.elapsed(),
            error,
        };
        if !lock(&self.caddy.state).registered {
            return report(0, None);
        }
        // 1. No new requests.
        let mut unreachable = Unreachable::default();
        let mut backoff = Backoff::new(Duration::from_secs(1));
        loop {
            match self.act(PoolAction::Drain) {
                Ok(()) => break,
                Err(ActionError::NotFound) => {
                    lock(&self.caddy.state).registered = false;
                    return report(0, None);
                }
                Err(ActionError::Refused(error)) => return report(0, Some(error.to_string())),
                Err(ActionError::Failed(error)) => {
                    let message = error.to_string();
                    self.caddy.note_error(&message);
                    if unreachable.given_up() || Instant::now() >= deadline {
                        log::error(format!(
                            "could not drain {} at {admin}: {message}",
                            self.address
                        ));
                        lock(&self.caddy.state).registered = false;
                        return report(0, Some(message));
                    }
                    thread::sleep(
                        backoff
                            .next_delay()
                            .min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
            }
        }
        log::info(format!(
            "{} is draining in pool {} of Caddy at {}",
            self.address, self.pool.name, admin
        ));
        // 2. Wait for what is in flight.
        let mut in_flight = 0;
        while Instant::now() < deadline {
            match self.read() {
                Ok(Some(member)) => {
                    in_flight = member.in_flight;
                    lock(&self.caddy.state).in_flight = Some(in_flight);
                    if in_flight == 0 {
                        break;
                    }
                }
                Ok(None) => {
                    in_flight = 0;
                    break;
                }
                Err(error) => self.caddy.note_error(&error),
            }
            thread::sleep(Duration::from_millis(50));
        }
        // 3. Gone.
        let removed = self.act(PoolAction::Remove);
        lock(&self.caddy.state).registered = false;
        let error = match removed {
            Ok(()) | Err(ActionError::NotFound) => None,
            Err(ActionError::Refused(error) | ActionError::Failed(error)) => {
                Some(error.to_string())
            }
        };
        if in_flight == 0 {
            log::info(format!(
                "{} drained and removed from pool {} at {} in {:.2}s",
                self.address,
                self.pool.name,
                admin,
                started.elapsed().as_secs_f64()
            ));
        } else {
            log::warn(format!("{in_flight} request(s) to {} were still in flight at {admin} when the drain timeout ended", self.address));
        }
        report(in_flight, error)
    }
}

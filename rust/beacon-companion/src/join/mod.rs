//! How a companion joins one Caddy and leaves it, in one of two modes chosen once from the
//! options ([`JoinMode`]):
//!
//! - [`pool`]: a member of a beacon module pool, through `/beacon/pools/...`; Caddy's config
//!   never changes and nothing reloads.
//! - [`config_edit`]: an upstream entry the companion owns in a stock Caddy's config, edited
//!   through `/config/` with Caddy's optimistic concurrency.
//!
//! With `--pool` and also `--site`/`--handler-id`, a Caddy that turns out to have no beacon
//! module is joined through its config instead (the fallback the options carry).
//!
//! Each mode is a [`Membership`]: one step at a time while the app serves (register, renew,
//! read Caddy's verdict), and a leave that drains. [`follow`] runs either the same way: it
//! follows the companion's phase, backs off on failures and says each failure once.

pub mod config_edit;
pub mod leave;
pub mod pool;
mod retries;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admin::beacon_api::BeaconApi;
use crate::admin::AdminClient;
use crate::log;
use crate::state::{lock, CaddyState, Control, Phase};
use crate::upstream::Upstream;
use config_edit::{ConfigEditSettings, Reconciler};
use leave::LeaveReport;
use pool::{PoolMember, PoolSettings};
use retries::Retries;

/// How often a membership takes its next step while all is well.
const STEP_INTERVAL: Duration = Duration::from_secs(1);

/// The mode, with only the settings it needs.
#[derive(Clone, Debug)]
pub enum JoinMode {
    /// `--pool`: join the beacon module's pool; `fallback` joins a Caddy without the module
    /// through its config (when `--site` or `--handler-id` was also given).
    Pool {
        /// The pool and the lease.
        pool: PoolSettings,
        /// Config edits for a Caddy without the module.
        fallback: Option<ConfigEditSettings>,
    },
    /// `--site`/`--handler-id` alone: config edits.
    ConfigEdit(ConfigEditSettings),
}

/// One Caddy as a membership sees it.
#[derive(Clone, Debug)]
pub struct CaddyLink {
    /// Its Admin API.
    pub client: AdminClient,
    /// What the companion knows about it (shared with `/status`).
    pub state: Arc<Mutex<CaddyState>>,
    /// The phase every membership follows.
    pub control: Arc<Control>,
}

impl CaddyLink {
    /// The Admin API address, for messages.
    pub fn admin(&self) -> String {
        self.client.address().url()
    }

    /// Counts a failed Admin API request and keeps its message for `/status`.
    pub fn note_error(&self, message: &str) {
        lock(&self.state).note_error(message);
    }
}

/// What one step while serving came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Registered as wanted.
    Done,
    /// Take the next step at once (Caddy forgot the upstream: register again).
    Again,
    /// Failed, maybe for a moment: back off, and say it once.
    Retry(String),
    /// Cannot work with Caddy's config as it is: say it once (this line), try again as usual.
    Blocked(String),
}

/// A way of being one Caddy's upstream.
pub trait Membership: Send {
    /// One step while the app serves.
    fn step(&mut self) -> Step;
    /// Stops new requests, waits for those in flight (until `deadline`), and leaves.
    fn leave(&mut self, deadline: Instant) -> LeaveReport;
}

/// Joins one Caddy in `mode` and keeps it so until the companion leaves; returns how leaving
/// went.
pub fn join(caddy: CaddyLink, upstream: &Upstream, mode: &JoinMode) -> LeaveReport {
    let membership: Box<dyn Membership> = match mode {
        JoinMode::ConfigEdit(settings) => {
            Box::new(Reconciler::start(caddy.clone(), upstream, settings))
        }
        JoinMode::Pool { pool, fallback } => match choose(&caddy, pool, fallback.as_ref()) {
            None => return LeaveReport::default(),
            Some(Chosen::Pool) => Box::new(PoolMember::new(
                caddy.clone(),
                pool.clone(),
                upstream.dial.clone(),
            )),
            Some(Chosen::ConfigEdit(settings)) => {
                Box::new(Reconciler::start(caddy.clone(), upstream, settings))
            }
        },
    };
    follow(&caddy, membership)
}

/// Runs `membership` until the companion leaves.
pub fn follow(caddy: &CaddyLink, mut membership: Box<dyn Membership>) -> LeaveReport {
    let mut retries = Retries::new(caddy.admin());
    let mut wait = Duration::ZERO;
    loop {
        let phase = caddy.control.wait(wait);
        wait = STEP_INTERVAL;
        match phase {
            Phase::WaitingForApp => continue,
            Phase::Leaving { deadline } => return membership.leave(deadline),
            Phase::Serving => {}
        }
        match membership.step() {
            Step::Done => retries.succeeded(),
            Step::Again => wait = Duration::ZERO,
            Step::Retry(message) => wait = retries.failed(&message),
            Step::Blocked(line) => retries.blocked(&line),
        }
    }
}

/// Which way a Caddy is joined in pool mode.
enum Chosen<'a> {
    /// It runs the beacon module.
    Pool,
    /// It does not, and the options say how to join its config.
    ConfigEdit(&'a ConfigEditSettings),
}

/// Asks Caddy whether it runs the beacon module, until it answers (None: the companion left
/// first). Without a fallback, a Caddy lacking the module is an error retried like the others
/// (it may be replaced by one that has it).
fn choose<'a>(
    caddy: &CaddyLink,
    pool: &PoolSettings,
    fallback: Option<&'a ConfigEditSettings>,
) -> Option<Chosen<'a>> {
    let admin = caddy.admin();
    let mut retries = Retries::new(admin.clone());
    loop {
        let message = match BeaconApi(&caddy.client).pools() {
            Ok(Some(_)) => {
                log::info(format!("Caddy at {admin} runs the beacon module: joining pool {} (no config edits)", pool.name));
                return Some(Chosen::Pool);
            }
            Ok(None) => match fallback {
                Some(settings) => {
                    log::info(format!("Caddy at {admin} has no beacon module (GET /beacon/pools answered 404): joining through its config"));
                    return Some(Chosen::ConfigEdit(settings));
                }
                None => format!(
                    "Caddy at {admin} has no beacon module (GET /beacon/pools answered 404) and no --site or --handler-id was given to join through its config"
                ),
            },
            Err(error) => {
                let message = error.to_string();
                caddy.note_error(&message);
                message
            }
        };
        lock(&caddy.state).last_error = Some(message.clone());
        if let Phase::Leaving { .. } = caddy.control.wait(retries.failed(&message)) {
            return None;
        }
    }
}

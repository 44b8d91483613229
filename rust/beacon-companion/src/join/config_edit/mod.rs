//! Config-edit mode: an upstream entry the companion owns in the `reverse_proxy` of a stock
//! Caddy (found by site or handler `@id`, [`site`]), kept true to the companion's wish, one
//! [`Reconciler`] per Caddy: [`register`] adds it (and the log sink that streams Caddy's health
//! events to [`events_sink`]), [`observe`] reads Caddy's verdicts and reaps vanished companions'
//! entries, [`leave`] removes it and drains; [`edits`] are the JSON changes themselves.
//!
//! The rules come from Caddy's Admin API (see caddy-notes): every successful change reloads the
//! whole config, so the companion writes only when the desired state is not there; every change
//! carries `If-Match` with the tag of the config it was computed from and is recomputed after a
//! 412; after a transport error the config is read again instead of repeating the write (Caddy
//! may have applied it); a 4xx other than 412 is permanent for that config version and is
//! reported once; 5xx and unreachable admins are retried with jittered backoff. The only objects
//! it touches carry the companion's `@id` (upstreams) or name prefix (event log sinks).

mod edits;
pub mod events_sink;
mod leave;
mod observe;
mod register;
pub mod site;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::join::leave::LeaveReport;
use crate::join::{CaddyLink, Membership, Step};
use crate::state::lock;
use crate::upstream::{events_log_name, upstream_id, Upstream};
use crate::CompanionError;
use site::Target;

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

/// What config-edit mode needs from the options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEditSettings {
    /// Which reverse_proxy to join (`--site`, `--handler-id`).
    pub target: Target,
    /// Health events (`--events`).
    pub events: EventsSetting,
    /// Reap other companions' entries unhealthy this long (`--reap-after`); None = never.
    pub reap_after: Option<Duration>,
}

/// How often the whole config (log sink, reaping) and Caddy's metrics are read; in between, a
/// cheap `GET /id/...` checks the entry is still there (a Caddy restarted from its Caddyfile has
/// forgotten it).
const FULL_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// One companion's entry in one Caddy's config.
#[derive(Debug)]
pub struct Reconciler {
    caddy: CaddyLink,
    /// What Caddy dials.
    upstream: Upstream,
    settings: ConfigEditSettings,
    /// Where Caddy should stream health events (`tcp/host:port`), when on.
    events_address: Option<String>,
    /// The last refusal and the config version (Etag) it was for.
    blocked: Option<(String, String)>,
    last_full_check: Option<Instant>,
}

/// The outcome of one attempt to reach the desired state.
enum Attempt {
    /// Nothing to do, or done.
    Done,
    /// Try again after a backoff.
    Retry(String),
    /// Will not work for this config version; wait until the config changes.
    Blocked { etag: String, message: String },
}

/// A config read: the whole config and its tag.
struct Snapshot {
    config: Value,
    etag: String,
}

impl Reconciler {
    /// A reconciler that has not looked at Caddy yet.
    pub fn new(
        caddy: CaddyLink,
        upstream: Upstream,
        settings: ConfigEditSettings,
        events_address: Option<String>,
    ) -> Self {
        Reconciler {
            caddy,
            upstream,
            settings,
            events_address,
            blocked: None,
            last_full_check: None,
        }
    }

    /// A reconciler for `caddy`, with the sink that receives this Caddy's health events started
    /// first (when the settings and the addresses allow one): the config it writes names it.
    pub fn start(caddy: CaddyLink, upstream: &Upstream, settings: &ConfigEditSettings) -> Self {
        let events_address = events_sink::start_for(
            &settings.events,
            caddy.client.address(),
            upstream,
            &caddy.state,
            &caddy.control,
        );
        lock(&caddy.state)
            .events_address
            .clone_from(&events_address);
        Reconciler::new(caddy, upstream.clone(), settings.clone(), events_address)
    }

    fn id(&self) -> String {
        upstream_id(&self.upstream.owned_suffix(&self.settings.target.key()))
    }

    fn log_name(&self) -> String {
        events_log_name(&self.upstream.owned_suffix(&self.settings.target.key()))
    }

    fn admin(&self) -> String {
        self.caddy.admin()
    }

    fn read(&self) -> Result<Snapshot, CompanionError> {
        let response = self.caddy.client.request("GET", "/config/", None, None)?;
        let invalid = |message: String| CompanionError::Api {
            admin: self.admin(),
            request: "GET /config/".into(),
            status: response.status,
            message,
        };
        if response.status != 200 {
            return Err(self.caddy.client.api_error("GET", "/config/", &response));
        }
        let config = serde_json::from_slice(&response.body)
            .map_err(|e| invalid(format!("Caddy's config is not JSON: {e}")))?;
        let etag = response
            .etag
            .clone()
            .ok_or_else(|| invalid("Caddy sent no Etag with its config".into()))?;
        Ok(Snapshot { config, etag })
    }

    /// Sends one change computed from `snapshot`. Ok(true) applied, Ok(false) conflict (re-read).
    fn change(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        snapshot: &Snapshot,
    ) -> Result<bool, Attempt> {
        let body = body.map(|b| b.to_string().into_bytes());
        match self
            .caddy
            .client
            .request(method, path, body.as_deref(), Some(&snapshot.etag))
        {
            // The change may or may not have been applied: the next read tells.
            Err(error) => {
                self.count_error(&error.to_string());
                Err(Attempt::Retry(error.to_string()))
            }
            Ok(response) if response.status == 200 => Ok(true),
            Ok(response) => {
                let error = self.caddy.client.api_error(method, path, &response);
                let CompanionError::Api { message, .. } = &error else {
                    unreachable!("api_error builds Api")
                };
                // 412: someone changed the config since our read. 409: an array we wanted to
                // create appeared meanwhile. 404 on DELETE: gone already. "duplicate ID": our
                // entry is there already (a previous attempt landed).
                if response.status == 412
                    || response.status == 409
                    || message.contains("duplicate ID")
                {
                    return Ok(false);
                }
                if method == "DELETE" && response.status == 404 {
                    return Ok(true);
                }
                self.count_error(&error.to_string());
                if response.status >= 500 {
                    Err(Attempt::Retry(error.to_string()))
                } else {
                    Err(Attempt::Blocked {
                        etag: snapshot.etag.clone(),
                        message: error.to_string(),
                    })
                }
            }
        }
    }

    fn count_error(&self, message: &str) {
        lock(&self.caddy.state).note_error(message);
    }

    /// Sends the smallest change that turns `snapshot` into `wanted`: one targeted request when
    /// one object differs, else the whole config in one PATCH (guarded by If-Match like every
    /// change, so nothing but the companion's own objects can differ). Every write reloads all
    /// of Caddy, and each reload can cost clients a connection: one write, not two.
    fn apply(
        &self,
        snapshot: &Snapshot,
        wanted: &Value,
        targeted: Option<(&str, String, Option<Value>)>,
    ) -> Result<bool, Attempt> {
        match targeted {
            Some((method, path, body)) => self.change(method, &path, body.as_ref(), snapshot),
            None => self.change("PATCH", "/config/", Some(wanted), snapshot),
        }
    }
}

impl Membership for Reconciler {
    /// Checks the entry is there (cheaply, or fully every few seconds with Caddy's verdicts and
    /// reaping) and adds what is missing.
    fn step(&mut self) -> Step {
        let full_check_due = self
            .last_full_check
            .is_none_or(|at| at.elapsed() >= FULL_CHECK_INTERVAL);
        let attempt = match self.still_registered() {
            Ok(true) if !full_check_due => Attempt::Done,
            Ok(present) => {
                if !present && lock(&self.caddy.state).registered {
                    lock(&self.caddy.state).registered = false;
                    crate::log::warn(format!(
                        "{} is no longer in the config of Caddy at {} (restarted or reloaded?); registering it again",
                        self.upstream.dial,
                        self.admin()
                    ));
                }
                self.last_full_check = Some(Instant::now());
                self.observe();
                // One read of the config serves reaping and the registration check (a reap
                // only deletes others' entries; a stale tag on a write of ours answers 412
                // and is read again).
                match self.read() {
                    Ok(snapshot) => {
                        if let Some(reap_after) = self.settings.reap_after {
                            self.reap(reap_after, &snapshot);
                        }
                        self.register(Some(snapshot))
                    }
                    Err(error) => {
                        self.count_error(&error.to_string());
                        Attempt::Retry(error.to_string())
                    }
                }
            }
            Err(error) => {
                self.count_error(&error);
                Attempt::Retry(error)
            }
        };
        match attempt {
            Attempt::Done => {
                self.blocked = None;
                Step::Done
            }
            // Permanent for this config: said once, retried only when the config changes.
            Attempt::Blocked { etag, message } => {
                lock(&self.caddy.state).last_error = Some(message.clone());
                let line = format!(
                    "cannot register {} with Caddy at {}: {message}",
                    self.upstream.dial,
                    self.admin()
                );
                self.blocked = Some((etag, message));
                Step::Blocked(line)
            }
            Attempt::Retry(message) => Step::Retry(message),
        }
    }

    fn leave(&mut self, deadline: Instant) -> LeaveReport {
        self.remove_and_drain(deadline)
    }
}

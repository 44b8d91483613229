//! Keeping one Caddy's config true to the companion's wish, one reconcile loop per Caddy.
//!
//! The rules come from Caddy's Admin API (see caddy-notes): every successful change reloads the
//! whole config, so the loop writes only when the desired state is not there; every change
//! carries `If-Match` with the tag of the config it was computed from and is recomputed after a
//! 412; after a transport error the config is read again instead of repeating the write (Caddy
//! may have applied it); a 4xx other than 412 is permanent for that config version and is
//! reported once; 5xx and unreachable admins are retried with jittered backoff. The only objects
//! it touches carry the companion's `@id` (upstreams) or name prefix (event log sinks).

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::backoff::{jitter, Backoff};
use crate::config_tree::contains_id;
use crate::deregister::wait_until_drained;
use crate::health::parse_gauges;
use crate::log;
use crate::site::{locate, Target};
use crate::state::{lock, CaddyState, Control, Phase};
use crate::upstream::{events_log_name, upstream_id, Upstream, EVENTS_LOG_PREFIX, OWNED_ID_PREFIX};
use crate::{AdminClient, AgentError};

/// How often the loop checks that the upstream is still registered (a Caddy restarted from its
/// Caddyfile has forgotten it).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the whole config (log sink, reaping) and Caddy's metrics are read.
const FULL_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long leaving keeps trying a Caddy that cannot be reached at all.
pub(crate) const UNREACHABLE_AT_LEAVE: Duration = Duration::from_secs(3);
/// Attempts at one change before backing off (each 412 means another writer got in first).
const CHANGE_ATTEMPTS: usize = 30;

/// Everything one reconcile loop needs.
#[derive(Debug)]
pub struct Reconciler {
    /// The Admin API.
    pub client: AdminClient,
    /// What Caddy dials.
    pub upstream: Upstream,
    /// Which reverse_proxy to join.
    pub target: Target,
    /// Where Caddy should stream health events (`tcp/host:port`), when on.
    pub events_address: Option<String>,
    /// Remove other companions' entries unhealthy longer than this.
    pub reap_after: Option<Duration>,
    /// Shared with `/status` and the events sink.
    pub state: Arc<Mutex<CaddyState>>,
    /// The phase every loop follows.
    pub control: Arc<Control>,
}

/// How leaving one Caddy went.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LeaveReport {
    /// The Admin API.
    pub admin: String,
    /// Requests still in flight when the wait ended (0 = drained).
    pub still_in_flight: u64,
    /// Time from the start of leaving to drained (or to giving up).
    pub elapsed: Duration,
    /// Why the upstream could not be removed, if it could not.
    pub error: Option<String>,
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
    fn id(&self) -> String {
        upstream_id(&self.upstream.owned_suffix(&self.target.key()))
    }

    fn log_name(&self) -> String {
        events_log_name(&self.upstream.owned_suffix(&self.target.key()))
    }

    fn admin(&self) -> String {
        self.client.address().url()
    }

    fn read(&self) -> Result<Snapshot, AgentError> {
        let response = self.client.request("GET", "/config/", None, None)?;
        let invalid = |message: String| AgentError::Api { admin: self.admin(), request: "GET /config/".into(), status: response.status, message };
        if response.status != 200 {
            return Err(self.client.api_error("GET", "/config/", &response));
        }
        let config = serde_json::from_slice(&response.body).map_err(|e| invalid(format!("Caddy's config is not JSON: {e}")))?;
        let etag = response.etag.clone().ok_or_else(|| invalid("Caddy sent no Etag with its config".into()))?;
        Ok(Snapshot { config, etag })
    }

    /// Sends one change computed from `snapshot`. Ok(true) applied, Ok(false) conflict (re-read).
    fn change(&self, method: &str, path: &str, body: Option<&Value>, snapshot: &Snapshot) -> Result<bool, Attempt> {
        let body = body.map(|b| b.to_string().into_bytes());
        match self.client.request(method, path, body.as_deref(), Some(&snapshot.etag)) {
            // The change may or may not have been applied: the next read tells.
            Err(error) => {
                self.count_error(&error.to_string());
                Err(Attempt::Retry(error.to_string()))
            }
            Ok(response) if response.status == 200 => Ok(true),
            Ok(response) => {
                let error = self.client.api_error(method, path, &response);
                let AgentError::Api { message, .. } = &error else { unreachable!("api_error builds Api") };
                // 412: someone changed the config since our read. 409: an array we wanted to
                // create appeared meanwhile. 404 on DELETE: gone already. "duplicate ID": our
                // entry is there already (a previous attempt landed).
                if response.status == 412 || response.status == 409 || message.contains("duplicate ID") {
                    return Ok(false);
                }
                if method == "DELETE" && response.status == 404 {
                    return Ok(true);
                }
                self.count_error(&error.to_string());
                if response.status >= 500 {
                    Err(Attempt::Retry(error.to_string()))
                } else {
                    Err(Attempt::Blocked { etag: snapshot.etag.clone(), message: error.to_string() })
                }
            }
        }
    }

    fn count_error(&self, message: &str) {
        lock(&self.state).note_error(message);
    }

    /// The events sink this companion wants in Caddy's logging config, if any.
    fn wanted_sink(&self) -> Option<Value> {
        let address = self.events_address.as_ref()?;
        Some(json!({
            "writer": {"output": "net", "address": address, "soft_start": true, "dial_timeout": 1_000_000_000u64},
            "encoder": {"format": "json"},
            "level": "DEBUG",
            "include": ["events"],
        }))
    }

    /// Sends the smallest change that turns `snapshot` into `wanted`: one targeted request when
    /// one object differs, else the whole config in one PATCH (guarded by If-Match like every
    /// change, so nothing but the companion's own objects can differ). Every write reloads all
    /// of Caddy, and each reload can cost clients a connection: one write, not two.
    fn apply(&self, snapshot: &Snapshot, wanted: &Value, targeted: Option<(&str, String, Option<Value>)>) -> Result<bool, Attempt> {
        match targeted {
            Some((method, path, body)) => self.change(method, &path, body.as_ref(), snapshot),
            None => self.change("PATCH", "/config/", Some(wanted), snapshot),
        }
    }

    /// Adds the upstream (and the events sink) where missing. Writes nothing when both are there.
    /// `read` is a config the caller has just read, used for the first look.
    fn register(&self, blocked: Option<&(String, String)>, mut read: Option<Snapshot>) -> Attempt {
        let id = self.id();
        let sink_pointer = format!("/logging/logs/{}", self.log_name());
        for _ in 0..CHANGE_ATTEMPTS {
            let snapshot = match read.take().map_or_else(|| self.read(), Ok) {
                Ok(snapshot) => snapshot,
                Err(error) => {
                    self.count_error(&error.to_string());
                    return Attempt::Retry(error.to_string());
                }
            };
            if let Some((etag, message)) = blocked.filter(|(etag, _)| *etag == snapshot.etag) {
                return Attempt::Blocked { etag: etag.clone(), message: message.clone() };
            }
            let located = match locate(&snapshot.config, &self.target) {
                Ok(located) => located,
                Err(error) => return Attempt::Blocked { etag: snapshot.etag, message: error.to_string() },
            };
            let present = located.upstreams.as_deref().unwrap_or_default().iter().any(|u| u.get("@id").and_then(Value::as_str) == Some(&id));
            // Ours but elsewhere: the site's proxy moved (a new Caddyfile); it goes.
            let stray = !present && contains_id(&snapshot.config, &id);
            let sink = self.wanted_sink();
            let sink_ok = sink.is_none() || snapshot.config.pointer(&sink_pointer) == sink.as_ref();
            if present && sink_ok {
                lock(&self.state).registered = true;
                return Attempt::Done;
            }
            let entry = json!({"@id": id, "dial": self.upstream.dial});
            let mut wanted = snapshot.config.clone();
            if stray {
                remove_id(&mut wanted, &id);
            }
            if !present {
                add_upstream(&mut wanted, &located.path, entry.clone());
            }
            if let (false, Some(sink)) = (sink_ok, &sink) {
                set_pointer(&mut wanted, &sink_pointer, sink.clone());
            }
            let targeted = match (present, sink_ok, stray) {
                // A Caddyfile proxy without static upstreams has no array: create it (PUT
                // answers 409 if someone else just did, and we re-read); otherwise append.
                (false, true, false) => Some(match located.upstreams {
                    Some(_) => ("POST", format!("{}/upstreams", located.path), Some(entry)),
                    None => ("PUT", format!("{}/upstreams", located.path), Some(json!([entry]))),
                }),
                // Only the sink: PUT creates it, PATCH replaces an outdated one (a restarted
                // companion listens on a new port).
                (true, false, false) => {
                    let method = if snapshot.config.pointer(&sink_pointer).is_some() { "PATCH" } else { "PUT" };
                    Some((method, format!("/config{sink_pointer}"), sink.clone()))
                }
                _ => None,
            };
            match self.apply(&snapshot, &wanted, targeted) {
                Ok(true) if !present => {
                    let mut state = lock(&self.state);
                    state.registrations += 1;
                    state.registered = true;
                    state.last_error = None;
                    drop(state);
                    log::info(format!("registered {} with Caddy at {} ({})", self.upstream.dial, self.admin(), self.target.describe()));
                }
                Ok(true) => {}
                Ok(false) => thread::sleep(jitter(Duration::from_millis(200))),
                Err(attempt) => return attempt,
            }
        }
        Attempt::Retry("the config kept changing under every attempt".to_owned())
    }

    /// Removes the upstream entry, then waits for requests in flight to it, until `deadline`.
    fn leave(&self, deadline: Instant) -> LeaveReport {
        let started = Instant::now();
        let id = self.id();
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let mut error = None;
        let mut warned_outage = false;
        let mut removed = false;
        let mut unreachable_since: Option<Instant> = None;
        while Instant::now() < deadline {
            let snapshot = match self.read() {
                Ok(snapshot) => snapshot,
                Err(e) => {
                    self.count_error(&e.to_string());
                    // A Caddy that cannot be reached sends no traffic either: give it a few
                    // seconds (an admin endpoint being replaced by a reload), not the whole
                    // drain timeout.
                    if matches!(e, AgentError::Unreachable { .. }) {
                        let since = *unreachable_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= UNREACHABLE_AT_LEAVE {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                    error = Some(e.to_string());
                    thread::sleep(backoff.next_delay().min(deadline.saturating_duration_since(Instant::now())));
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
            let has_sink = self.events_address.is_some() && snapshot.config.pointer(&sink_pointer).is_some();
            let mut wanted = snapshot.config.clone();
            remove_id(&mut wanted, &id);
            remove_pointer(&mut wanted, &sink_pointer);
            let targeted = (!has_sink).then(|| ("DELETE", format!("/id/{id}"), None));
            match self.apply(&snapshot, &wanted, targeted) {
                Ok(true) => {
                    log::info(format!("removed {} from Caddy at {}; draining", self.upstream.dial, self.admin()));
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
                    thread::sleep(backoff.next_delay().min(deadline.saturating_duration_since(Instant::now())));
                }
                Err(Attempt::Done) => break,
            }
        }
        lock(&self.state).registered = false;
        if !removed {
            let error = error.unwrap_or_else(|| "the drain timeout ended first".to_owned());
            log::error(format!("could not remove {} from Caddy at {}: {error}", self.upstream.dial, self.admin()));
            return LeaveReport { admin: self.admin(), still_in_flight: 0, elapsed: started.elapsed(), error: Some(error) };
        }
        let still_in_flight = self.drain(deadline);
        let elapsed = started.elapsed();
        if still_in_flight == 0 {
            log::info(format!("{} drained at {} in {:.2}s", self.upstream.dial, self.admin(), elapsed.as_secs_f64()));
        } else {
            log::warn(format!(
                "{still_in_flight} request(s) to {} were still in flight at {} when the drain timeout ended",
                self.upstream.dial,
                self.admin()
            ));
        }
        LeaveReport { admin: self.admin(), still_in_flight, elapsed, error: None }
    }

    /// Waits for requests in flight to the removed upstream; returns what is left at `deadline`.
    fn drain(&self, deadline: Instant) -> u64 {
        let running = wait_until_drained(&self.client, &self.upstream.dial, deadline, |error| {
            self.count_error(&error.to_string());
            Ok(())
        })
        .unwrap_or(0);
        lock(&self.state).in_flight = Some(running);
        running
    }

    fn warn_if_last_healthy(&self, snapshot: &Snapshot) {
        let Ok(located) = locate(&snapshot.config, &self.target) else { return };
        let state = lock(&self.state);
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
                self.target.describe(),
                self.admin()
            ));
        }
    }

    /// Reads Caddy's health gauges and in-flight counts.
    fn observe(&self) {
        if let Ok(metrics) = self.client.get_ok("/metrics") {
            let gauges = parse_gauges(&String::from_utf8_lossy(&metrics.body));
            let mut state = lock(&self.state);
            let transitions = state.board.apply_gauges(&gauges, Instant::now());
            for transition in transitions {
                note_transition(&mut state, &self.upstream.dial, &transition.host, transition.healthy, transition.was, "health gauge");
            }
        }
        if let Ok((upstreams, _)) = self.client.get_json("/reverse_proxy/upstreams") {
            let mine = upstreams.as_array().into_iter().flatten().find(|u| u.get("address").and_then(Value::as_str) == Some(&self.upstream.dial));
            let mut state = lock(&self.state);
            state.in_flight = mine.and_then(|u| u.get("num_requests")).and_then(Value::as_u64);
            state.fails = mine.and_then(|u| u.get("fails")).and_then(Value::as_u64);
        }
    }

    /// Removes other companions' entries in the same proxy that Caddy has found unhealthy for
    /// longer than `reap_after` (their companion was killed and could not deregister).
    fn reap(&self, reap_after: Duration, snapshot: &Snapshot) {
        let Ok(located) = locate(&snapshot.config, &self.target) else { return };
        let now = Instant::now();
        let victim = {
            let state = lock(&self.state);
            located.upstreams.unwrap_or_default().into_iter().find_map(|entry| {
                let id = entry.get("@id").and_then(Value::as_str)?.to_owned();
                let dial = entry.get("dial").and_then(Value::as_str)?.to_owned();
                let unhealthy_for = state.board.unhealthy_for(&dial, now)?;
                (id.starts_with(OWNED_ID_PREFIX) && dial != self.upstream.dial && unhealthy_for >= reap_after).then_some((id, dial, unhealthy_for))
            })
        };
        let Some((id, dial, unhealthy_for)) = victim else { return };
        if let Ok(true) = self.change("DELETE", &format!("/id/{id}"), None, snapshot) {
            log::warn(format!(
                "reaped {dial} from Caddy at {}: unhealthy for {:.0}s and registered by a companion that is gone",
                self.admin(),
                unhealthy_for.as_secs_f64()
            ));
            let mut state = lock(&self.state);
            state.reaped += 1;
            state.board.forget(&dial);
            drop(state);
            // Its events sink too, if it had one (same suffix).
            let sink = format!("/config/logging/logs/{EVENTS_LOG_PREFIX}{}", &id[OWNED_ID_PREFIX.len()..]);
            if let Ok(snapshot) = self.read() {
                if snapshot.config.pointer(&sink["/config".len()..]).is_some() {
                    let _ = self.change("DELETE", &sink, None, &snapshot);
                }
            }
        }
    }

    /// Is our entry there? Err when the admin could not say.
    fn still_registered(&self) -> Result<bool, String> {
        let path = format!("/id/{}", self.id());
        match self.client.request("GET", &path, None, None) {
            Ok(response) if response.status == 200 => Ok(true),
            Ok(response) if response.status == 404 => Ok(false),
            Ok(response) => Err(self.client.api_error("GET", &path, &response).to_string()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The loop: follows the phase until the companion leaves; returns how leaving went.
    pub fn run(&self) -> LeaveReport {
        let mut backoff = Backoff::new(Duration::from_secs(10));
        let mut blocked: Option<(String, String)> = None;
        let mut reported: Option<String> = None;
        let mut last_full_check: Option<Instant> = None;
        let mut wait = Duration::ZERO;
        loop {
            let phase = self.control.wait(wait);
            wait = CHECK_INTERVAL;
            match phase {
                Phase::WaitingForApp => continue,
                Phase::Leaving { deadline } => return self.leave(deadline),
                Phase::Serving => {}
            }
            let full_check_due = last_full_check.is_none_or(|at| at.elapsed() >= FULL_CHECK_INTERVAL);
            let attempt = match self.still_registered() {
                Ok(true) if !full_check_due => Attempt::Done,
                Ok(present) => {
                    if !present && lock(&self.state).registered {
                        lock(&self.state).registered = false;
                        log::warn(format!(
                            "{} is no longer in the config of Caddy at {} (restarted or reloaded?); registering it again",
                            self.upstream.dial,
                            self.admin()
                        ));
                    }
                    last_full_check = Some(Instant::now());
                    self.observe();
                    // One read of the config serves reaping and the registration check (a
                    // reap only deletes others' entries; a stale tag on a write of ours
                    // answers 412 and is read again).
                    match self.read() {
                        Ok(snapshot) => {
                            if let Some(reap_after) = self.reap_after {
                                self.reap(reap_after, &snapshot);
                            }
                            self.register(blocked.as_ref(), Some(snapshot))
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
                    blocked = None;
                    if backoff.failures() > 0 {
                        log::info(format!("Caddy at {} answers again", self.admin()));
                    }
                    backoff.reset();
                    reported = None;
                }
                Attempt::Blocked { etag, message } => {
                    // Permanent for this config: said once, retried only when the config changes.
                    if reported.as_deref() != Some(message.as_str()) {
                        log::error(format!("cannot register {} with Caddy at {}: {message}", self.upstream.dial, self.admin()));
                        lock(&self.state).last_error = Some(message.clone());
                        reported = Some(message.clone());
                    }
                    blocked = Some((etag, message));
                }
                Attempt::Retry(message) => {
                    wait = backoff.next_delay();
                    if backoff.failures() == 1 || reported.as_deref() != Some(message.as_str()) {
                        log::warn(format!("{message}; retrying (backing off up to 10s)"));
                        reported = Some(message);
                    }
                }
            }
        }
    }
}

/// Records (and logs, for the companion's own upstream) a health transition.
pub fn note_transition(state: &mut CaddyState, mine: &str, host: &str, healthy: bool, was: Option<bool>, source: &str) {
    if host != mine {
        return;
    }
    if healthy {
        state.became_healthy += 1;
    } else {
        state.became_unhealthy += 1;
    }
    let word = if healthy { "healthy" } else { "UNHEALTHY" };
    let message = format!("Caddy at {} reports {host} {word} (active health check, via its {source})", state.admin);
    match (healthy, was) {
        (true, Some(false)) | (true, None) => log::info(message),
        _ => log::warn(message),
    }
}

/// Removes every object tagged `"@id": id`.
fn remove_id(value: &mut Value, id: &str) {
    match value {
        Value::Object(map) => map.values_mut().for_each(|v| remove_id(v, id)),
        Value::Array(items) => {
            items.retain(|item| item.get("@id").and_then(Value::as_str) != Some(id));
            items.iter_mut().for_each(|v| remove_id(v, id));
        }
        _ => {}
    }
}

/// Appends `entry` to the `upstreams` of the handler at `admin_path` (creating the array).
fn add_upstream(config: &mut Value, admin_path: &str, entry: Value) {
    let pointer = admin_path.strip_prefix("/config").unwrap_or(admin_path);
    if let Some(Value::Object(handler)) = config.pointer_mut(pointer) {
        match handler.entry("upstreams").or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(items) => items.push(entry),
            other => *other = Value::Array(vec![entry]),
        }
    }
}

/// Sets the value at a JSON pointer made of object keys, creating missing objects.
fn set_pointer(config: &mut Value, pointer: &str, value: Value) {
    let mut current = config;
    let keys: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (index, key) in keys.iter().enumerate() {
        if !current.is_object() {
            *current = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = current else { return };
        if index == keys.len() - 1 {
            map.insert((*key).to_owned(), value);
            return;
        }
        current = map.entry((*key).to_owned()).or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

/// Removes the value at a JSON pointer made of object keys, if there.
fn remove_pointer(config: &mut Value, pointer: &str) {
    if let Some((parent, key)) = pointer.rsplit_once('/') {
        if let Some(Value::Object(map)) = config.pointer_mut(parent) {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_only_the_objects_it_is_told_to() {
        let mut config = json!({"apps": {"http": {"h": {"handler": "reverse_proxy"}}},
                                "other": [{"@id": "keep"}, {"@id": "mine", "dial": "a:1"}]});
        let before = config.clone();
        add_upstream(&mut config, "/config/apps/http/h", json!({"@id": "mine2", "dial": "a:1"}));
        add_upstream(&mut config, "/config/apps/http/h", json!({"@id": "mine3", "dial": "a:2"}));
        assert_eq!(config["apps"]["http"]["h"]["upstreams"].as_array().unwrap().len(), 2);
        set_pointer(&mut config, "/logging/logs/caddy-beacon-events-x", json!({"level": "DEBUG"}));
        assert_eq!(config["logging"]["logs"]["caddy-beacon-events-x"]["level"], "DEBUG");
        remove_id(&mut config, "mine");
        assert_eq!(config["other"], json!([{"@id": "keep"}]));
        remove_id(&mut config, "mine2");
        remove_id(&mut config, "mine3");
        remove_pointer(&mut config, "/logging/logs/caddy-beacon-events-x");
        config["apps"]["http"]["h"].as_object_mut().unwrap().remove("upstreams");
        config.as_object_mut().unwrap().remove("logging");
        let mut expected = before;
        expected["other"] = json!([{"@id": "keep"}]);
        assert_eq!(config, expected);
    }
}

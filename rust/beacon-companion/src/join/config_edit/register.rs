//! Adding the companion's upstream entry (and the log sink for Caddy's health events) where
//! missing, in as few writes as possible: every write reloads all of Caddy.

use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use super::edits::{add_upstream, remove_id, set_pointer};
use super::site::locate;
use super::{Attempt, Reconciler, Snapshot};
use crate::admin::config_tree::contains_id;
use crate::backoff::jitter;
use crate::log;
use crate::state::lock;

/// Attempts at one change before backing off (each 412 means another writer got in first).
const CHANGE_ATTEMPTS: usize = 30;

impl Reconciler {
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

    /// Adds the upstream (and the events sink) where missing. Writes nothing when both are there.
    /// `read` is a config the caller has just read, used for the first look.
    pub(super) fn register(&self, mut read: Option<Snapshot>) -> Attempt {
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
            if let Some((etag, message)) = self
                .blocked
                .as_ref()
                .filter(|(etag, _)| *etag == snapshot.etag)
            {
                return Attempt::Blocked {
                    etag: etag.clone(),
                    message: message.clone(),
                };
            }
            let located = match locate(&snapshot.config, &self.settings.target) {
                Ok(located) => located,
                Err(error) => {
                    return Attempt::Blocked {
                        etag: snapshot.etag,
                        message: error.to_string(),
                    }
                }
            };
            let present = located
                .upstreams
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|u| u.get("@id").and_then(Value::as_str) == Some(&id));
            // Ours but elsewhere: the site's proxy moved (a new Caddyfile); it goes.
            let stray = !present && contains_id(&snapshot.config, &id);
            let sink = self.wanted_sink();
            let sink_ok = sink.is_none() || snapshot.config.pointer(&sink_pointer) == sink.as_ref();
            if present && sink_ok {
                lock(&self.caddy.state).registered = true;
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
                    None => (
                        "PUT",
                        format!("{}/upstreams", located.path),
                        Some(json!([entry])),
                    ),
                }),
                // Only the sink: PUT creates it, PATCH replaces an outdated one (a restarted
                // companion listens on a new port).
                (true, false, false) => {
                    let method = if snapshot.config.pointer(&sink_pointer).is_some() {
                        "PATCH"
                    } else {
                        "PUT"
                    };
                    Some((method, format!("/config{sink_pointer}"), sink.clone()))
                }
                _ => None,
            };
            match self.apply(&snapshot, &wanted, targeted) {
                Ok(true) if !present => {
                    let mut state = lock(&self.caddy.state);
                    state.registrations += 1;
                    state.registered = true;
                    state.last_error = None;
                    drop(state);
                    log::info(format!(
                        "registered {} with Caddy at {} ({})",
                        self.upstream.dial,
                        self.admin(),
                        self.settings.target.describe()
                    ));
                }
                Ok(true) => {}
                Ok(false) => thread::sleep(jitter(Duration::from_millis(200))),
                Err(attempt) => return attempt,
            }
        }
        Attempt::Retry("the config kept changing under every attempt".to_owned())
    }
}

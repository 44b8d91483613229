//! What config-edit mode reads while serving: Caddy's health gauges and in-flight counts, whether
//! its entry is still there, and other companions' entries left behind (reaped once Caddy has
//! found them unhealthy for `--reap-after`).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::site::locate;
use super::{Reconciler, Snapshot};
use crate::admin::proxy_upstreams::proxy_upstreams;
use crate::log;
use crate::state::health::parse_gauges;
use crate::state::lock;
use crate::upstream::{EVENTS_LOG_PREFIX, OWNED_ID_PREFIX};

impl Reconciler {
    /// Reads Caddy's health gauges and in-flight counts.
    pub(super) fn observe(&self) {
        if let Ok(metrics) = self.caddy.client.get_ok("/metrics") {
            let gauges = parse_gauges(&String::from_utf8_lossy(&metrics.body));
            let mut state = lock(&self.caddy.state);
            let transitions = state.board.apply_gauges(&gauges, Instant::now());
            for transition in transitions {
                state.note_transition(&self.upstream.dial, &transition, "health gauge");
            }
        }
        if let Ok(upstreams) = proxy_upstreams(&self.caddy.client) {
            let mine = upstreams.iter().find(|u| u.address == self.upstream.dial);
            let mut state = lock(&self.caddy.state);
            state.in_flight = mine.map(|u| u.num_requests);
            state.fails = mine.map(|u| u.fails);
        }
    }

    /// Removes other companions' entries in the same proxy that Caddy has found unhealthy for
    /// longer than `reap_after` (their companion was killed and could not deregister).
    pub(super) fn reap(&self, reap_after: Duration, snapshot: &Snapshot) {
        let Ok(located) = locate(&snapshot.config, &self.settings.target) else {
            return;
        };
        let now = Instant::now();
        let victim = {
            let state = lock(&self.caddy.state);
            located
                .upstreams
                .unwrap_or_default()
                .into_iter()
                .find_map(|entry| {
                    let id = entry.get("@id").and_then(Value::as_str)?.to_owned();
                    let dial = entry.get("dial").and_then(Value::as_str)?.to_owned();
                    let unhealthy_for = state.board.unhealthy_for(&dial, now)?;
                    (id.starts_with(OWNED_ID_PREFIX)
                        && dial != self.upstream.dial
                        && unhealthy_for >= reap_after)
                        .then_some((id, dial, unhealthy_for))
                })
        };
        let Some((id, dial, unhealthy_for)) = victim else {
            return;
        };
        if let Ok(true) = self.change("DELETE", &format!("/id/{id}"), None, snapshot) {
            log::warn(format!(
                "reaped {dial} from Caddy at {}: unhealthy for {:.0}s and registered by a companion that is gone",
                self.admin(),
                unhealthy_for.as_secs_f64()
            ));
            let mut state = lock(&self.caddy.state);
            state.reaped += 1;
            state.board.forget(&dial);
            drop(state);
            // Its events sink too, if it had one (same suffix).
            let sink = format!(
                "/config/logging/logs/{EVENTS_LOG_PREFIX}{}",
                &id[OWNED_ID_PREFIX.len()..]
            );
            if let Ok(snapshot) = self.read() {
                if snapshot.config.pointer(&sink["/config".len()..]).is_some() {
                    let _ = self.change("DELETE", &sink, None, &snapshot);
                }
            }
        }
    }

    /// Is our entry there? Err when the admin could not say.
    pub(super) fn still_registered(&self) -> Result<bool, String> {
        let path = format!("/id/{}", self.id());
        match self.caddy.client.request("GET", &path, None, None) {
            Ok(response) if response.status == 200 => Ok(true),
            Ok(response) if response.status == 404 => Ok(false),
            Ok(response) => Err(self
                .caddy
                .client
                .api_error("GET", &path, &response)
                .to_string()),
            Err(error) => Err(error.to_string()),
        }
    }
}

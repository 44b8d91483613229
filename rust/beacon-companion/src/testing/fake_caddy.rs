//! An in-memory Admin API for the memberships' unit tests: what the companion's state machines
//! are driven through (an `AdminTransport`), so that each transition is tested in milliseconds
//! rather than only end to end through a real Caddy, which the Python tests still do.
//!
//! - The beacon module's routes run the real registry (`beacon-registry`, the logic the module
//!   runs as WebAssembly), with a clock the test moves; `GET /beacon/pools` adds `in_flight`
//!   as the Go host does, from what the test sets.
//! - Config edits follow Caddy's rules as caddy-notes records them: `GET /config/` with an
//!   `Etag`, changes guarded by `If-Match` (412 when stale), `POST` appends to an array, `PUT`
//!   creates (409 when there), `PATCH` replaces, `/id/<id>` finds an object by its `@id`.
//! - Faults: the next answers can be scripted (a status, or a transport error); every request
//!   is recorded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use beacon_registry::{Command, Registry};
use serde_json::{json, Value};

use crate::admin::client::AdminTransport;
use crate::admin::{AdminAddress, AdminClient, AdminResponse};

/// A scripted answer, served before the normal ones.
#[derive(Clone, Debug)]
pub enum Fault {
    /// This status, with Caddy's `{"error": ...}`.
    Status(u16),
    /// No answer: a refused connection.
    Unreachable,
}

#[derive(Debug, Default)]
struct State {
    /// None: a Caddy without the beacon module (its routes answer 404).
    registry: Option<Registry>,
    now_ms: u64,
    in_flight: BTreeMap<String, u64>,
    healthy: BTreeMap<String, bool>,
    config: Value,
    version: u64,
    faults: VecDeque<(String, Fault)>,
    requests: Vec<String>,
}

/// One fake Caddy; clones share it.
#[derive(Clone, Debug, Default)]
pub struct FakeCaddy(Arc<Mutex<State>>);

impl FakeCaddy {
    /// A Caddy with the beacon module and pool `pool` declared.
    pub fn with_pool(pool: &str) -> FakeCaddy {
        let caddy = FakeCaddy::default();
        caddy.restart_with_pool(pool);
        caddy
    }

    /// A stock Caddy running `config`.
    pub fn stock(config: Value) -> FakeCaddy {
        let caddy = FakeCaddy::default();
        caddy.state().config = config;
        caddy
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A client of this Caddy.
    pub fn client(&self) -> AdminClient {
        let address = AdminAddress::parse("http://fake-caddy:2019", None).expect("an address");
        AdminClient::with_transport(address, Arc::new(self.clone()))
    }

    /// Caddy restarted: the module's registrations are gone, the pool declared again.
    pub fn restart_with_pool(&self, pool: &str) {
        let mut registry = Registry::default();
        for command in [
            json!({"op": "configure", "pool": pool, "claim": 1}),
            json!({"op": "commit", "claim": 1}),
        ] {
            assert_eq!(
                registry.handle_json(command.to_string().as_bytes()).status,
                200
            );
        }
        self.state().registry = Some(registry);
    }

    /// Moves the module's clock (leases end when it passes them).
    pub fn advance(&self, by: Duration) {
        let mut state = self.state();
        state.now_ms += u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let now_ms = state.now_ms;
        if let Some(registry) = state.registry.as_mut() {
            registry.handle(Command::Tick { now_ms });
        }
    }

    /// Requests in flight to `address`, as Caddy would count them.
    pub fn set_in_flight(&self, address: &str, requests: u64) {
        self.state().in_flight.insert(address.to_owned(), requests);
    }

    /// Caddy's health verdict on `address`, as its `caddy_reverse_proxy_upstreams_healthy` gauge
    /// says it on `/metrics`.
    pub fn set_healthy(&self, address: &str, healthy: bool) {
        self.state().healthy.insert(address.to_owned(), healthy);
    }

    /// Sets a member's weight as an operator would (`caddy-beacon weight`).
    pub fn set_weight(&self, pool: &str, address: &str, weight: u32) {
        let mut state = self.state();
        let now_ms = state.now_ms;
        let registry = state.registry.as_mut().expect("the module");
        let reply = registry.handle(Command::Weight {
            pool: pool.into(),
            address: address.into(),
            weight,
            now_ms,
        });
        assert_eq!(reply.status, 200, "{reply:?}");
    }

    /// Answers the next request whose `method path` starts with `prefix` with `fault`.
    pub fn fail_next(&self, prefix: &str, fault: Fault) {
        self.state().faults.push_back((prefix.to_owned(), fault));
    }

    /// Every request so far, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// The module's view of the pool's members: (address, draining, weight).
    pub fn members(&self, pool: &str) -> Vec<(String, bool, u64)> {
        let (_, body) = self.state().pools_view();
        let view: Value = serde_json::from_slice(&body).expect("JSON");
        view["pools"][pool]["upstreams"]
            .as_array()
            .map(|upstreams| {
                upstreams
                    .iter()
                    .map(|u| {
                        (
                            u["address"].as_str().unwrap_or_default().to_owned(),
                            u["draining"] == json!(true),
                            u["weight"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The stock Caddy's config now.
    pub fn config(&self) -> Value {
        self.state().config.clone()
    }

    /// Caddy runs `config` now (restarted from its Caddyfile, or reloaded with another).
    pub fn replace_config(&self, config: Value) {
        let mut state = self.state();
        state.config = config;
        state.version += 1;
    }
}

fn answer(status: u16, body: Value) -> AdminResponse {
    AdminResponse {
        status,
        etag: None,
        body: body.to_string().into_bytes(),
    }
}

fn error(status: u16, message: &str) -> AdminResponse {
    answer(status, json!({ "error": message }))
}

impl State {
    fn pools_view(&mut self) -> (u16, Vec<u8>) {
        let now_ms = self.now_ms;
        let Some(registry) = self.registry.as_mut() else {
            return (404, b"404 page not found".to_vec());
        };
        let mut data = registry.handle(Command::Pools { now_ms }).data;
        if let Some(pools) = data["pools"].as_object_mut() {
            for pool in pools.values_mut() {
                for upstream in pool["upstreams"].as_array_mut().into_iter().flatten() {
                    let address = upstream["address"].as_str().unwrap_or_default().to_owned();
                    upstream["in_flight"] =
                        json!(self.in_flight.get(&address).copied().unwrap_or(0));
                }
            }
        }
        (200, data.to_string().into_bytes())
    }

    fn beacon(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> AdminResponse {
        if path == "/beacon/pools" {
            let (status, body) = self.pools_view();
            return AdminResponse {
                status,
                etag: None,
                body,
            };
        }
        let Some(registry) = self.registry.as_mut() else {
            return error(404, "404 page not found");
        };
        let rest = path.trim_start_matches("/beacon/pools/");
        let (pool, op) = rest.split_once('/').unwrap_or((rest, ""));
        if method != "POST" {
            return error(405, "use POST");
        }
        let Ok(mut command) = serde_json::from_slice::<Value>(body.unwrap_or_default()) else {
            return error(400, "malformed JSON");
        };
        command["op"] = json!(op);
        command["pool"] = json!(pool);
        if op != "drain" && op != "remove" {
            command["now_ms"] = json!(self.now_ms);
        }
        let reply = registry.handle_json(command.to_string().as_bytes());
        if reply.status != 200 {
            return error(reply.status, reply.error.as_deref().unwrap_or_default());
        }
        answer(
            200,
            if reply.data.is_null() {
                json!({})
            } else {
                reply.data
            },
        )
    }

    fn etag(&self) -> String {
        format!("\"v{}\"", self.version)
    }

    fn config_change(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        if_match: Option<&str>,
    ) -> AdminResponse {
        if if_match.is_some_and(|tag| tag != self.etag()) {
            return error(412, "If-Match header did not match current config hash");
        }
        let value: Option<Value> = match body.map(serde_json::from_slice).transpose() {
            Ok(value) => value,
            Err(_) => return error(400, "malformed JSON"),
        };
        let mut config = self.config.clone();
        let outcome = if let Some(id) = path.strip_prefix("/id/") {
            match method {
                "DELETE" => remove_by_id(&mut config, id)
                    .then_some(())
                    .ok_or((404, "unknown object ID")),
                _ => Err((405, "method not allowed")),
            }
        } else {
            let pointer = path.trim_start_matches("/config").trim_end_matches('/');
            edit(&mut config, method, pointer, value)
        };
        match outcome {
            Ok(()) => {
                if config != self.config {
                    self.config = config;
                    self.version += 1;
                }
                answer(200, json!(null))
            }
            Err((status, message)) => error(status, message),
        }
    }

    fn get(&mut self, path: &str) -> AdminResponse {
        if let Some(id) = path.strip_prefix("/id/") {
            return match find_by_id(&self.config, id) {
                Some(found) => answer(200, found.clone()),
                None => error(404, "unknown object ID"),
            };
        }
        if path == "/reverse_proxy/upstreams" {
            let list: Vec<Value> = self
                .in_flight
                .iter()
                .map(|(address, n)| json!({"address": address, "num_requests": n, "fails": 0}))
                .collect();
            return answer(200, json!(list));
        }
        if path == "/metrics" {
            let gauges: String = self
                .healthy
                .iter()
                .map(|(address, healthy)| {
                    format!(
                        "caddy_reverse_proxy_upstreams_healthy{{upstream=\"{address}\"}} {}\n",
                        u8::from(*healthy)
                    )
                })
                .collect();
            return AdminResponse {
                status: 200,
                etag: None,
                body: gauges.into_bytes(),
            };
        }
        let pointer = path.trim_start_matches("/config").trim_end_matches('/');
        match self.config.pointer(pointer) {
            Some(value) => AdminResponse {
                status: 200,
                etag: Some(self.etag()),
                body: value.to_string().into_bytes(),
            },
            None => error(404, "invalid traversal path"),
        }
    }
}

/// Applies a `/config/` change at `pointer`, the way Caddy's admin does.
fn edit(
    config: &mut Value,
    method: &str,
    pointer: &str,
    value: Option<Value>,
) -> Result<(), (u16, &'static str)> {
    let value = value.ok_or((400, "no body"));
    if pointer.is_empty() {
        return match method {
            "PATCH" | "POST" => {
                *config = value?;
                Ok(())
            }
            _ => Err((405, "method not allowed")),
        };
    }
    let (parent_pointer, key) = pointer.rsplit_once('/').ok_or((400, "bad path"))?;
    if method == "DELETE" {
        let parent = config
            .pointer_mut(parent_pointer)
            .ok_or((404, "invalid traversal path"))?;
        return match parent {
            Value::Object(map) => map.remove(key).map(|_| ()).ok_or((404, "unknown key")),
            _ => Err((400, "not an object")),
        };
    }
    let value = value?;
    match method {
        "POST" => match config.pointer_mut(pointer) {
            Some(Value::Array(items)) => {
                match value {
                    Value::Array(more) => items.extend(more),
                    one => items.push(one),
                }
                Ok(())
            }
            _ => Err((400, "POST appends to an array")),
        },
        "PUT" | "PATCH" => {
            let parent = config
                .pointer_mut(parent_pointer)
                .ok_or((404, "invalid traversal path"))?;
            let Value::Object(map) = parent else {
                return Err((400, "not an object"));
            };
            match (method, map.contains_key(key)) {
                ("PUT", true) => Err((409, "key already exists")),
                ("PATCH", false) => Err((404, "key does not exist")),
                _ => {
                    map.insert(key.to_owned(), value);
                    Ok(())
                }
            }
        }
        _ => Err((405, "method not allowed")),
    }
}

fn find_by_id<'a>(value: &'a Value, id: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) if map.get("@id").and_then(Value::as_str) == Some(id) => Some(value),
        Value::Object(map) => map.values().find_map(|v| find_by_id(v, id)),
        Value::Array(items) => items.iter().find_map(|v| find_by_id(v, id)),
        _ => None,
    }
}

fn remove_by_id(value: &mut Value, id: &str) -> bool {
    let is_it = |v: &Value| v.get("@id").and_then(Value::as_str) == Some(id);
    match value {
        Value::Array(items) => {
            let before = items.len();
            items.retain(|v| !is_it(v));
            items.len() != before || items.iter_mut().any(|v| remove_by_id(v, id))
        }
        Value::Object(map) => {
            if let Some(key) = map.iter().find(|(_, v)| is_it(v)).map(|(k, _)| k.clone()) {
                map.remove(&key);
                return true;
            }
            map.values_mut().any(|v| remove_by_id(v, id))
        }
        _ => false,
    }
}

impl AdminTransport for FakeCaddy {
    fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        _timeout: Duration,
    ) -> Result<AdminResponse, String> {
        let mut state = self.state();
        let request = format!("{method} {path}");
        state.requests.push(request.clone());
        if let Some(index) = state
            .faults
            .iter()
            .position(|(prefix, _)| request.starts_with(prefix.as_str()))
        {
            return match state.faults.remove(index).map(|(_, fault)| fault) {
                Some(Fault::Status(status)) => Ok(error(status, "scripted failure")),
                _ => Err("connection refused (scripted)".into()),
            };
        }
        let if_match = headers
            .iter()
            .find(|(name, _)| *name == "If-Match")
            .map(|(_, value)| *value);
        Ok(match (method, path) {
            (_, p) if p.starts_with("/beacon/") => state.beacon(method, path, body),
            ("GET", _) => state.get(path),
            _ => state.config_change(method, path, body, if_match),
        })
    }
}

//! Every pool, and the commands the host sends: one JSON object in, one JSON object out. The
//! host passes the time (`now_ms`) with each command that needs it, so the logic has no clock
//! and no I/O, and behaves the same natively and inside Caddy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use std::net::IpAddr;

use crate::address::{check_dial_address, check_pool_name};
use crate::admission::{Admission, Listeners};
use crate::health::{HealthPolicy, ProbeResult};
use crate::pool::{Pool, DEFAULT_LEASE_MS};

/// Most pools one registry keeps (a Caddy config declares a handful; this bounds the memory a
/// host that configures pools without end could make the guest take).
pub const MAX_POOLS: usize = 1024;
use crate::{Change, RegistryError};

/// A command from the host. Fields are the JSON keys: `pool`, `address` (a dial address),
/// `lease_ms`, `now_ms` (the host's clock), `passes`/`fails` (thresholds), `result` (a probe),
/// `weight`, `slow_start_ms`, `allow` (the admission list), `listeners` (where Caddy's admin API
/// listens, `ip:port` or `unix//path`), `resolved` (what a DNS name resolved to).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// A config load declares `pool` with these settings (creates it, or updates them; members
    /// the new admission policy refuses are removed).
    Configure {
        pool: String,
        passes: Option<u32>,
        fails: Option<u32>,
        #[serde(default)]
        slow_start_ms: u64,
        #[serde(default)]
        allow: Vec<String>,
    },
    /// A companion registers (or re-registers) `address`.
    Register {
        pool: String,
        address: String,
        lease_ms: Option<u64>,
        weight: Option<u32>,
        #[serde(default)]
        resolved: Vec<IpAddr>,
        #[serde(default)]
        listeners: Vec<String>,
        now_ms: u64,
    },
    /// A companion renews its lease.
    Renew { pool: String, address: String, now_ms: u64 },
    /// Someone changes the weight of `address` (0: standby).
    Weight { pool: String, address: String, weight: u32, now_ms: u64 },
    /// A companion is stopping: no new requests for `address`.
    Drain { pool: String, address: String },
    /// A companion is gone: forget `address`.
    Remove { pool: String, address: String },
    /// The host probed `address`.
    Probed { pool: String, address: String, now_ms: u64, result: ProbeResult },
    /// Time passed: end expired leases.
    Tick { now_ms: u64 },
    /// The members to offer for `pool` now, in order, with their weights.
    Offer { pool: String, now_ms: u64 },
    /// Everything, for `GET /beacon/pools` and for probing.
    Pools { now_ms: u64 },
}

/// Something that happened to an upstream, for Caddy's events and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `healthy`, `unhealthy`, `registered`, `draining`, `removed` or `expired`.
    pub name: &'static str,
    /// The pool.
    pub pool: String,
    /// The upstream.
    pub address: String,
    /// Why, when there is more to say (the failed probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to a command.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reply {
    /// HTTP-like status: 200, or the error's.
    pub status: u16,
    /// The error, when status is not 200.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Pools whose list of upstreams to offer changed: the host rebuilds their snapshot.
    pub changed: Vec<String>,
    /// What happened.
    pub events: Vec<Event>,
    /// The command's result.
    pub data: Value,
}

/// All pools.
#[derive(Debug, Default)]
pub struct Registry {
    pools: BTreeMap<String, Pool>,
}

impl Registry {
    /// Runs a command given as JSON; always answers (a malformed command gets status 400).
    pub fn handle_json(&mut self, input: &[u8]) -> Reply {
        match serde_json::from_slice::<Command>(input) {
            Ok(command) => self.handle(command),
            Err(error) => failure(&RegistryError::BadCommand(error.to_string())),
        }
    }

    /// Runs a command.
    pub fn handle(&mut self, command: Command) -> Reply {
        let mut reply = Reply { status: 200, error: None, changed: Vec::new(), events: Vec::new(), data: Value::Null };
        if let Err(error) = self.apply(command, &mut reply) {
            return failure(&error);
        }
        reply
    }

    fn pool(&mut self, name: &str) -> Result<&mut Pool, RegistryError> {
        check_pool_name(name)?;
        self.pools.get_mut(name).ok_or_else(|| RegistryError::UnknownPool(name.to_owned()))
    }

    fn apply(&mut self, command: Command, reply: &mut Reply) -> Result<(), RegistryError> {
        let event = |name: &'static str, pool: &str, address: &str| Event { name, pool: pool.to_owned(), address: address.to_owned(), reason: None };
        match command {
            Command::Configure { pool, passes, fails, slow_start_ms, allow } => {
                check_pool_name(&pool)?;
                let admission = Admission::new(&allow)?;
                if !self.pools.contains_key(&pool) && self.pools.len() >= MAX_POOLS {
                    return Err(RegistryError::TooManyPools(MAX_POOLS));
                }
                let defaults = HealthPolicy::default();
                let entry = self.pools.entry(pool.clone()).or_default();
                entry.policy = HealthPolicy { passes: passes.unwrap_or(defaults.passes).max(1), fails: fails.unwrap_or(defaults.fails).max(1) };
                entry.slow_start_ms = slow_start_ms;
                entry.admission = admission;
                // A stricter policy takes effect on the members it refuses (a DNS name was judged
                // by what it resolved to when it registered, and is kept).
                let refused: Vec<String> = entry
                    .upstreams
                    .iter()
                    .filter(|u| entry.admission.admit(&u.address, &[], &Listeners::default()).is_err_and(|e| e.status() == 403))
                    .map(|u| u.address.clone())
                    .collect();
                for address in refused {
                    entry.remove(&address)?;
                    reply.changed.push(pool.clone());
                    reply.events.push(event("removed", &pool, &address));
                }
                reply.data = json!({ "pool": pool, "upstreams": entry.upstreams.len() });
            }
            Command::Register { pool, address, lease_ms, weight, resolved, listeners, now_ms } => {
                check_dial_address(&address)?;
                let listeners = Listeners::parse(&listeners)?;
                let target = self.pool(&pool)?;
                let known = target.upstreams.iter().any(|u| u.address == address);
                if !known {
                    target.admission.admit(&address, &resolved, &listeners)?;
                }
                if target.register(&address, lease_ms.unwrap_or(DEFAULT_LEASE_MS), weight, now_ms)? == Change::Offer {
                    reply.changed.push(pool.clone());
                }
                if !known {
                    reply.events.push(event("registered", &pool, &address));
                }
                let upstream = target.upstreams.iter().find(|u| u.address == address);
                reply.data = upstream.map_or(Value::Null, |u| json!({"lease_ms": u.lease_ms, "weight": u.weight, "created": !known}));
            }
            Command::Weight { pool, address, weight, now_ms } => {
                let target = self.pool(&pool)?;
                if target.set_weight(&address, weight, now_ms)? == Change::Offer {
                    reply.changed.push(pool.clone());
                }
                reply.data = json!({ "weight": weight });
            }
            Command::Renew { pool, address, now_ms } => self.pool(&pool)?.renew(&address, now_ms)?,
            Command::Drain { pool, address } => {
                if self.pool(&pool)?.drain(&address)? == Change::Offer {
                    reply.changed.push(pool.clone());
                    reply.events.push(event("draining", &pool, &address));
                }
            }
            Command::Remove { pool, address } => {
                self.pool(&pool)?.remove(&address)?;
                reply.changed.push(pool.clone());
                reply.events.push(event("removed", &pool, &address));
            }
            Command::Probed { pool, address, now_ms, result } => {
                let target = self.pool(&pool)?;
                if let Some(healthy) = target.probed(&address, &result, now_ms)? {
                    let reason = target.upstreams.iter().find(|u| u.address == address).and_then(|u| u.last_error.clone());
                    reply.changed.push(pool.clone());
                    reply.events.push(Event { reason, ..event(if healthy { "healthy" } else { "unhealthy" }, &pool, &address) });
                }
            }
            Command::Tick { now_ms } => {
                for (name, pool) in &mut self.pools {
                    let gone = pool.expire(now_ms);
                    if !gone.is_empty() {
                        reply.changed.push(name.clone());
                    }
                    reply.events.extend(gone.iter().map(|address| event("expired", name, address)));
                }
            }
            Command::Offer { pool, now_ms } => reply.data = json!(self.pool(&pool)?.offer(now_ms)),
            Command::Pools { now_ms } => reply.data = self.describe(now_ms),
        }
        Ok(())
    }

    fn describe(&self, now_ms: u64) -> Value {
        let pools: serde_json::Map<String, Value> = self
            .pools
            .iter()
            .map(|(name, pool)| {
                let upstreams: Vec<Value> = pool
                    .upstreams
                    .iter()
                    .map(|u| {
                        let mut value = serde_json::to_value(u).unwrap_or(Value::Null);
                        value["lease_expires_in_ms"] = json!(u.lease_expires_ms.saturating_sub(now_ms));
                        value["effective_weight"] = json!(if u.eligible() { pool.effective_weight(u, now_ms) } else { 0 });
                        value["slow_start_until_ms"] = json!(pool.ramp_until(u, now_ms));
                        value
                    })
                    .collect();
                let pool_view = json!({
                    "health_passes": pool.policy.passes,
                    "health_fails": pool.policy.fails,
                    "slow_start_ms": pool.slow_start_ms,
                    "allow": pool.admission.allow_list(),
                    "upstreams": upstreams,
                });
                (name.clone(), pool_view)
            })
            .collect();
        json!({ "pools": pools })
    }
}

fn failure(error: &RegistryError) -> Reply {
    Reply { status: error.status(), error: Some(error.to_string()), changed: Vec::new(), events: Vec::new(), data: Value::Null }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(registry: &mut Registry, command: Value) -> Reply {
        registry.handle_json(command.to_string().as_bytes())
    }

    fn offered(registry: &mut Registry) -> Value {
        let offer = run(registry, json!({"op": "offer", "pool": "api", "now_ms": 0})).data;
        json!(offer["upstreams"].as_array().unwrap().iter().map(|u| u["address"].clone()).collect::<Vec<_>>())
    }

    #[test]
    fn a_companion_lifecycle_through_json() {
        let mut registry = Registry::default();
        assert_eq!(run(&mut registry, json!({"op": "register", "pool": "api", "address": "127.0.0.1:8001", "now_ms": 0})).status, 404, "pool not declared yet");
        assert_eq!(run(&mut registry, json!({"op": "configure", "pool": "api", "passes": 1, "fails": 2})).status, 200);
        let registered = run(&mut registry, json!({"op": "register", "pool": "api", "address": "127.0.0.1:8001", "lease_ms": 5000, "now_ms": 0}));
        assert_eq!((registered.status, registered.changed.clone()), (200, vec!["api".to_owned()]));
        assert_eq!(registered.events[0].name, "registered");
        assert_eq!(offered(&mut registry), json!(["127.0.0.1:8001"]));
        let again = run(&mut registry, json!({"op": "register", "pool": "api", "address": "127.0.0.1:8001", "now_ms": 10}));
        assert!(again.changed.is_empty() && again.events.is_empty(), "re-registering is a renewal: {again:?}");

        let probe = |ok: bool| json!({"op": "probed", "pool": "api", "address": "127.0.0.1:8001", "now_ms": 20,
            "result": if ok { json!({"status": 200, "body": "{\"status\":\"pass\"}"}) } else { json!({"status": 503, "body": "{\"status\":\"fail\"}"}) }});
        assert!(run(&mut registry, probe(false)).events.is_empty(), "fails: 2");
        let down = run(&mut registry, probe(false));
        assert_eq!((down.events[0].name, down.events[0].reason.as_deref()), ("unhealthy", Some("answered 503")));
        assert_eq!(offered(&mut registry), json!([]));
        assert_eq!(run(&mut registry, probe(true)).events[0].name, "healthy");

        let pools = run(&mut registry, json!({"op": "pools", "now_ms": 1000})).data;
        let upstream = &pools["pools"]["api"]["upstreams"][0];
        assert_eq!((upstream["address"].as_str(), upstream["healthy"].as_bool(), upstream["draining"].as_bool()), (Some("127.0.0.1:8001"), Some(true), Some(false)));
        // Re-registered at 10 ms with the default 15 s lease.
        assert_eq!(upstream["lease_expires_in_ms"], json!(14010));

        assert_eq!(run(&mut registry, json!({"op": "drain", "pool": "api", "address": "127.0.0.1:8001"})).events[0].name, "draining");
        assert_eq!(offered(&mut registry), json!([]));
        assert_eq!(run(&mut registry, json!({"op": "remove", "pool": "api", "address": "127.0.0.1:8001"})).changed, ["api"]);
        assert_eq!(run(&mut registry, json!({"op": "remove", "pool": "api", "address": "127.0.0.1:8001"})).status, 404);
    }

    #[test]
    fn the_number_of_pools_is_bounded() {
        let mut registry = Registry::default();
        for i in 0..MAX_POOLS {
            assert_eq!(run(&mut registry, json!({"op": "configure", "pool": format!("p{i}")})).status, 200);
        }
        assert_eq!(run(&mut registry, json!({"op": "configure", "pool": "one-more"})).status, 409);
        assert_eq!(run(&mut registry, json!({"op": "configure", "pool": "p7", "passes": 3})).status, 200, "a known pool is reconfigured");
    }

    #[test]
    fn expired_leases_leave_every_pool() {
        let mut registry = Registry::default();
        for pool in ["a", "b"] {
            run(&mut registry, json!({"op": "configure", "pool": pool}));
            run(&mut registry, json!({"op": "register", "pool": pool, "address": "10.0.0.1:80", "lease_ms": 2000, "now_ms": 0}));
        }
        run(&mut registry, json!({"op": "renew", "pool": "a", "address": "10.0.0.1:80", "now_ms": 1500}));
        let tick = run(&mut registry, json!({"op": "tick", "now_ms": 2500}));
        assert_eq!(tick.changed, ["b"]);
        assert_eq!((tick.events[0].name, tick.events[0].pool.as_str()), ("expired", "b"));
        assert_eq!(run(&mut registry, json!({"op": "renew", "pool": "b", "address": "10.0.0.1:80", "now_ms": 2600})).status, 404);
    }

    #[test]
    fn bad_input_gets_a_clear_error() {
        let mut registry = Registry::default();
        run(&mut registry, json!({"op": "configure", "pool": "api"}));
        for (input, status) in [
            (&b"not json"[..], 400),
            (br#"{"op":"explode"}"#, 400),
            (br#"{"op":"register","pool":"api","address":"nope","now_ms":0}"#, 400),
            (br#"{"op":"register","pool":"api","address":"10.0.0.1:80","now_ms":0,"extra":1}"#, 400),
            (br#"{"op":"register","pool":"../x","address":"10.0.0.1:80","now_ms":0}"#, 400),
            (br#"{"op":"drain","pool":"api","address":"10.0.0.9:80"}"#, 404),
        ] {
            let reply = registry.handle_json(input);
            assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(input));
            assert!(reply.error.is_some_and(|e| !e.is_empty()));
        }
    }
}

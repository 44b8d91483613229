//! Every pool, and the commands the host sends: one JSON object in, one JSON object out. The
//! host passes the time (`now_ms`) with each command that needs it, so the logic has no clock
//! and no I/O, and behaves the same natively and inside Caddy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::address::{check_dial_address, check_pool_name};
use crate::health::{HealthPolicy, ProbeResult};
use crate::pool::{Pool, DEFAULT_LEASE_MS};
use crate::{Change, RegistryError};

/// A command from the host. Fields are the JSON keys: `pool`, `address` (a dial address),
/// `lease_ms`, `now_ms` (the host's clock), `passes`/`fails` (thresholds), `result` (a probe).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// A config load declares `pool` with these thresholds (creates it, or updates them).
    Configure { pool: String, passes: Option<u32>, fails: Option<u32> },
    /// A companion registers (or re-registers) `address`.
    Register { pool: String, address: String, lease_ms: Option<u64>, now_ms: u64 },
    /// A companion renews its lease.
    Renew { pool: String, address: String, now_ms: u64 },
    /// A companion is stopping: no new requests for `address`.
    Drain { pool: String, address: String },
    /// A companion is gone: forget `address`.
    Remove { pool: String, address: String },
    /// The host probed `address`.
    Probed { pool: String, address: String, now_ms: u64, result: ProbeResult },
    /// Time passed: end expired leases.
    Tick { now_ms: u64 },
    /// The addresses to offer for `pool`, in order.
    Offer { pool: String },
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
            Command::Configure { pool, passes, fails } => {
                check_pool_name(&pool)?;
                let defaults = HealthPolicy::default();
                let entry = self.pools.entry(pool.clone()).or_default();
                entry.policy = HealthPolicy { passes: passes.unwrap_or(defaults.passes).max(1), fails: fails.unwrap_or(defaults.fails).max(1) };
                reply.data = json!({ "pool": pool, "upstreams": entry.upstreams.len() });
            }
            Command::Register { pool, address, lease_ms, now_ms } => {
                check_dial_address(&address)?;
                let target = self.pool(&pool)?;
                let known = target.upstreams.iter().any(|u| u.address == address);
                if target.register(&address, lease_ms.unwrap_or(DEFAULT_LEASE_MS), now_ms)? == Change::Offer {
                    reply.changed.push(pool.clone());
                }
                if !known {
                    reply.events.push(event("registered", &pool, &address));
                }
                let upstream = target.upstreams.iter().find(|u| u.address == address).map(|u| json!({"lease_ms": u.lease_ms, "created": !known}));
                reply.data = upstream.unwrap_or(Value::Null);
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
            Command::Offer { pool } => reply.data = json!(self.pool(&pool)?.offer()),
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
                        value
                    })
                    .collect();
                (name.clone(), json!({ "health_passes": pool.policy.passes, "health_fails": pool.policy.fails, "upstreams": upstreams }))
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

    #[test]
    fn a_companion_lifecycle_through_json() {
        let mut registry = Registry::default();
        assert_eq!(run(&mut registry, json!({"op": "register", "pool": "api", "address": "127.0.0.1:8001", "now_ms": 0})).status, 404, "pool not declared yet");
        assert_eq!(run(&mut registry, json!({"op": "configure", "pool": "api", "passes": 1, "fails": 2})).status, 200);
        let registered = run(&mut registry, json!({"op": "register", "pool": "api", "address": "127.0.0.1:8001", "lease_ms": 5000, "now_ms": 0}));
        assert_eq!((registered.status, registered.changed.clone()), (200, vec!["api".to_owned()]));
        assert_eq!(registered.events[0].name, "registered");
        assert_eq!(run(&mut registry, json!({"op": "offer", "pool": "api"})).data, json!(["127.0.0.1:8001"]));
        let again = run(&mut registry, json!({"op": "register", "pool": "api", "address": "127.0.0.1:8001", "now_ms": 10}));
        assert!(again.changed.is_empty() && again.events.is_empty(), "re-registering is a renewal: {again:?}");

        let probe = |ok: bool| json!({"op": "probed", "pool": "api", "address": "127.0.0.1:8001", "now_ms": 20,
            "result": if ok { json!({"status": 200, "body": "{\"status\":\"pass\"}"}) } else { json!({"status": 503, "body": "{\"status\":\"fail\"}"}) }});
        assert!(run(&mut registry, probe(false)).events.is_empty(), "fails: 2");
        let down = run(&mut registry, probe(false));
        assert_eq!((down.events[0].name, down.events[0].reason.as_deref()), ("unhealthy", Some("answered 503")));
        assert_eq!(run(&mut registry, json!({"op": "offer", "pool": "api"})).data, json!([]));
        assert_eq!(run(&mut registry, probe(true)).events[0].name, "healthy");

        let pools = run(&mut registry, json!({"op": "pools", "now_ms": 1000})).data;
        let upstream = &pools["pools"]["api"]["upstreams"][0];
        assert_eq!((upstream["address"].as_str(), upstream["healthy"].as_bool(), upstream["draining"].as_bool()), (Some("127.0.0.1:8001"), Some(true), Some(false)));
        // Re-registered at 10 ms with the default 15 s lease.
        assert_eq!(upstream["lease_expires_in_ms"], json!(14010));

        assert_eq!(run(&mut registry, json!({"op": "drain", "pool": "api", "address": "127.0.0.1:8001"})).events[0].name, "draining");
        assert_eq!(run(&mut registry, json!({"op": "offer", "pool": "api"})).data, json!([]));
        assert_eq!(run(&mut registry, json!({"op": "remove", "pool": "api", "address": "127.0.0.1:8001"})).changed, ["api"]);
        assert_eq!(run(&mut registry, json!({"op": "remove", "pool": "api", "address": "127.0.0.1:8001"})).status, 404);
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

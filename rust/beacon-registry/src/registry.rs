//! Every pool, and the commands the host sends: one JSON object in, one JSON object out. The
//! host passes the time (`now_ms`) with each command that needs it, so the logic has no clock
//! and no I/O, and behaves the same natively and inside Caddy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::address::{check_dial_address, check_pool_name};
use crate::admission::{Admission, OwnSockets};
use crate::declarations::{Declarations, PoolSettings};
use crate::health::{judge, HealthPolicy, ProbeResult};
use crate::load_weights::{LoadPolicy, MemberLoad};
use crate::outlier::{Outcome, OutlierPolicy};
use crate::pool::{Pool, DEFAULT_LEASE_MS};
use crate::sources::{Endpoint, Sources};
use crate::{Change, RegistryError};

/// A command from the host. Fields are the JSON keys: `pool`, `address` (a dial address),
/// `lease_ms`, `now_ms` (the host's clock), `claim` (a config's declaration of a pool, see
/// declarations.rs), `passes`/`fails` (thresholds), `result` (a probe), `weight`,
/// `slow_start_ms`, `allow` (the admission list), `listeners` (sockets this Caddy listens on,
/// `ip:port` or `unix//path`), `local_addresses` (this host's), `resolved` (what a DNS name
/// resolved to).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// A config being loaded declares `pool` with these settings: staged as `claim`, checked,
    /// and nothing else changes until the config runs (`commit`).
    Configure {
        pool: String,
        claim: u64,
        passes: Option<u32>,
        fails: Option<u32>,
        #[serde(default)]
        slow_start_ms: u64,
        #[serde(default)]
        allow: Vec<String>,
        /// Outlier ejection's settings (absent: off).
        outlier: Option<OutlierPolicy>,
        /// Load-aware weights' settings (absent: off).
        load: Option<LoadPolicy>,
    },
    /// The config that staged `claim` runs: its pool exists with its settings (members the
    /// pool's admission policy now refuses are removed).
    Commit { claim: u64 },
    /// The config that staged `claim` is unloaded (replaced, refused, validated only): a pool
    /// no other claim holds is gone with its members.
    Release { claim: u64 },
    /// Where this Caddy listens and the host's addresses, as the host found them now; members
    /// that reach Caddy itself under the new facts are removed.
    Host {
        #[serde(default)]
        listeners: Vec<String>,
        #[serde(default)]
        local_addresses: Vec<IpAddr>,
    },
    /// A companion registers (or re-registers) `address`; `listeners` adds the sockets the
    /// request itself came in on.
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
    /// What `source` (a Kubernetes Service, say) lists for `pool` now, whole: its members
    /// follow (see sources.rs).
    Sync {
        pool: String,
        source: String,
        endpoints: Vec<Endpoint>,
        now_ms: u64,
    },
    /// A companion renews its lease; `resolved`, for a name, is what it resolves to now.
    Renew {
        pool: String,
        address: String,
        #[serde(default)]
        resolved: Vec<IpAddr>,
        now_ms: u64,
    },
    /// Someone changes the weight of `address` (0: standby).
    Weight {
        pool: String,
        address: String,
        weight: u32,
        now_ms: u64,
    },
    /// A companion is stopping: no new requests for `address`.
    Drain { pool: String, address: String },
    /// A companion is gone: forget `address`.
    Remove { pool: String, address: String },
    /// The host probed `address`.
    Probed {
        pool: String,
        address: String,
        now_ms: u64,
        result: ProbeResult,
    },
    /// The host saw `address` fail the pool's `consecutive_failures` times in a row.
    Failing {
        pool: String,
        address: String,
        now_ms: u64,
    },
    /// What the host measured of `pool`'s members over the last second, with their latest load
    /// reports: their load-aware weights follow.
    Loads {
        pool: String,
        members: Vec<MemberLoad>,
        now_ms: u64,
    },
    /// Time passed: end expired leases, bring back members whose ejection is over.
    Tick { now_ms: u64 },
    /// The members to offer for `pool` now, in order, with their weights.
    Offer { pool: String, now_ms: u64 },
    /// Everything, for `GET /beacon/pools` and for probing.
    Pools { now_ms: u64 },
}

/// Something that happened to an upstream, for Caddy's events and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `healthy`, `unhealthy`, `registered`, `draining`, `removed`, `expired`, `refused` (an
    /// endpoint a source lists that the pool's admission policy refuses, said once),
    /// `ejected` and `returned` (outlier ejection), `ejection_capped` (failing, but as many
    /// members as the pool may lose are out already).
    pub name: &'static str,
    /// The pool.
    pub pool: String,
    /// The upstream.
    pub address: String,
    /// Why, when there is more to say (the failed probe, the refusal).
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
    /// What happened (also when the command was refused: a member whose renewal is refused
    /// is removed).
    pub events: Vec<Event>,
    /// The command's result.
    pub data: Value,
}

/// All pools.
#[derive(Debug, Default)]
pub struct Registry {
    pools: BTreeMap<String, Pool>,
    declared: Declarations,
    own: OwnSockets,
    sources: Sources,
}

fn event(name: &'static str, pool: &str, address: &str) -> Event {
    Event {
        name,
        pool: pool.to_owned(),
        address: address.to_owned(),
        reason: None,
    }
}

impl Registry {
    /// Runs a command given as JSON; always answers (a malformed command gets status 400).
    pub fn handle_json(&mut self, input: &[u8]) -> Reply {
        match serde_json::from_slice::<Command>(input) {
            Ok(command) => self.handle(command),
            Err(error) => failure(
                &RegistryError::BadCommand(error.to_string()),
                Reply::default(),
            ),
        }
    }

    /// Runs a command.
    pub fn handle(&mut self, command: Command) -> Reply {
        let mut reply = Reply::default();
        match self.apply(command, &mut reply) {
            Ok(()) => reply,
            Err(error) => failure(&error, reply),
        }
    }

    fn pool(&mut self, name: &str) -> Result<&mut Pool, RegistryError> {
        check_pool_name(name)?;
        self.pools
            .get_mut(name)
            .ok_or_else(|| RegistryError::UnknownPool(name.to_owned()))
    }

    fn apply(&mut self, command: Command, reply: &mut Reply) -> Result<(), RegistryError> {
        match command {
            Command::Configure {
                pool,
                claim,
                passes,
                fails,
                slow_start_ms,
                allow,
                outlier,
                load,
            } => {
                check_pool_name(&pool)?;
                let defaults = HealthPolicy::default();
                let policy = HealthPolicy {
                    passes: passes.unwrap_or(defaults.passes),
                    fails: fails.unwrap_or(defaults.fails),
                };
                let settings = PoolSettings {
                    policy,
                    slow_start_ms,
                    outlier: outlier.map(OutlierPolicy::checked).transpose()?,
                    load: load.map(LoadPolicy::checked).transpose()?,
                    admission: Admission::new(&allow)?,
                };
                self.declared.stage(claim, &pool, settings)?;
                reply.data = json!({ "pool": pool, "claim": claim });
            }
            Command::Commit { claim } => {
                let pool = self.declared.commit(claim)?;
                let created = !self.pools.contains_key(&pool);
                self.pools.entry(pool.clone()).or_default();
                self.take_settings(&pool, reply);
                reply.data = json!({ "pool": pool, "created": created });
            }
            Command::Release { claim } => {
                let pool = self.declared.release(claim)?;
                let gone = !self.declared.claimed(&pool) && self.pools.contains_key(&pool);
                if gone {
                    for upstream in self
                        .pools
                        .remove(&pool)
                        .map(|p| p.upstreams)
                        .unwrap_or_default()
                    {
                        let reason =
                            Some("no running config declares its pool any more".to_owned());
                        reply.events.push(Event {
                            reason,
                            ..event("removed", &pool, &upstream.address)
                        });
                    }
                    self.sources.forget_pool(&pool);
                } else {
                    self.take_settings(&pool, reply);
                }
                reply.data = json!({ "pool": pool, "gone": gone });
            }
            Command::Host {
                listeners,
                local_addresses,
            } => {
                self.own = OwnSockets::parse(&listeners, &local_addresses)?;
                let names: Vec<String> = self.pools.keys().cloned().collect();
                for name in names {
                    self.remove_refused(&name, reply);
                }
            }
            Command::Register {
                pool,
                address,
                lease_ms,
                weight,
                resolved,
                listeners,
                now_ms,
            } => {
                check_dial_address(&address)?;
                let own = self.own.merged(&OwnSockets::parse(&listeners, &[])?);
                let target = self.pool(&pool)?;
                let known = target.upstreams.iter().any(|u| u.address == address);
                // Judged every time: a name re-registered may resolve somewhere else now.
                if let Err(refusal) = target.admission.admit(&address, &resolved, &own) {
                    if known && refusal.status() == 403 {
                        target.remove(&address)?;
                        reply.changed.push(pool.clone());
                        reply.events.push(Event {
                            reason: Some(refusal.to_string()),
                            ..event("removed", &pool, &address)
                        });
                    }
                    return Err(refusal);
                }
                if target.register(
                    &address,
                    &resolved,
                    lease_ms.unwrap_or(DEFAULT_LEASE_MS),
                    weight,
                    now_ms,
                )? == Change::Offer
                {
                    reply.changed.push(pool.clone());
                }
                if !known {
                    reply.events.push(event("registered", &pool, &address));
                }
                let upstream = target.upstreams.iter().find(|u| u.address == address);
                reply.data = upstream.map_or(Value::Null, |u| json!({"lease_ms": u.lease_ms, "weight": u.weight, "created": !known, "dial": u.dial()}));
            }
            Command::Sync {
                pool,
                source,
                endpoints,
                now_ms,
            } => {
                check_pool_name(&pool)?;
                let target = self
                    .pools
                    .get_mut(&pool)
                    .ok_or_else(|| RegistryError::UnknownPool(pool.clone()))?;
                let synced = self
                    .sources
                    .sync(&pool, target, &source, &endpoints, &self.own, now_ms)?;
                if synced.changed {
                    reply.changed.push(pool.clone());
                }
                for (name, address, reason) in synced.events {
                    reply.events.push(Event {
                        reason,
                        ..event(name, &pool, &address)
                    });
                }
                reply.data = json!({ "members": target_members(&self.pools[&pool]) });
            }
            Command::Renew {
                pool,
                address,
                resolved,
                now_ms,
            } => {
                let own = self.own.clone();
                let target = self.pool(&pool)?;
                if !resolved.is_empty() && target.upstreams.iter().any(|u| u.address == address) {
                    if let Err(refusal) = target.admission.admit(&address, &resolved, &own) {
                        target.remove(&address)?;
                        reply.changed.push(pool.clone());
                        reply.events.push(Event {
                            reason: Some(refusal.to_string()),
                            ..event("removed", &pool, &address)
                        });
                        return Err(refusal);
                    }
                }
                if target.renew(&address, &resolved, now_ms)? == Change::Offer {
                    reply.changed.push(pool.clone());
                }
            }
            Command::Weight {
                pool,
                address,
                weight,
                now_ms,
            } => {
                let target = self.pool(&pool)?;
                if target.set_weight(&address, weight, now_ms)? == Change::Offer {
                    reply.changed.push(pool.clone());
                }
                reply.data = json!({ "weight": weight });
            }
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
            Command::Probed {
                pool,
                address,
                now_ms,
                result,
            } => {
                let target = self.pool(&pool)?;
                let early =
                    target.outlier.is_some_and(|p| p.uneject_on_pass) && judge(&result).is_ok();
                if early && !target.return_ejected(now_ms, Some(&address)).is_empty() {
                    reply.changed.push(pool.clone());
                    reply.events.push(Event {
                        reason: Some("an active check passed".to_owned()),
                        ..event("returned", &pool, &address)
                    });
                }
                let target = self.pool(&pool)?;
                if let Some(healthy) = target.probed(&address, &result, now_ms)? {
                    let reason = target
                        .upstreams
                        .iter()
                        .find(|u| u.address == address)
                        .and_then(|u| u.last_error.clone());
                    reply.changed.push(pool.clone());
                    reply.events.push(Event {
                        reason,
                        ..event(
                            if healthy { "healthy" } else { "unhealthy" },
                            &pool,
                            &address,
                        )
                    });
                }
            }
            Command::Failing {
                pool,
                address,
                now_ms,
            } => {
                let target = self.pool(&pool)?;
                let failures = target.outlier.map_or(0, |p| p.consecutive_failures);
                let outcome = target.failing(&address, now_ms)?;
                reply.data = match outcome {
                    Outcome::Ejected { until_ms, times } => {
                        reply.changed.push(pool.clone());
                        reply.events.push(Event {
                            reason: Some(format!(
                                "{failures} failures in a row: out for {} s (ejection {times})",
                                until_ms.saturating_sub(now_ms) / 1000
                            )),
                            ..event("ejected", &pool, &address)
                        });
                        json!({ "ejected": true, "until_ms": until_ms, "times": times })
                    }
                    Outcome::Capped { ejected, allowed } => {
                        reply.events.push(Event {
                            reason: Some(format!(
                                "{ejected} member(s) out already, at most {allowed} at once"
                            )),
                            ..event("ejection_capped", &pool, &address)
                        });
                        json!({ "ejected": false, "out": ejected, "allowed": allowed })
                    }
                    Outcome::Ignored => json!({ "ejected": false }),
                };
            }
            Command::Loads {
                pool,
                members,
                now_ms,
            } => {
                if self.pool(&pool)?.loads(&members, now_ms) == Change::Offer {
                    reply.changed.push(pool);
                }
            }
            Command::Tick { now_ms } => {
                for (name, pool) in &mut self.pools {
                    let gone = pool.expire(now_ms);
                    let back = pool.return_ejected(now_ms, None);
                    if !gone.is_empty() || !back.is_empty() {
                        reply.changed.push(name.clone());
                    }
                    reply
                        .events
                        .extend(gone.iter().map(|address| event("expired", name, address)));
                    reply.events.extend(back.iter().map(|address| Event {
                        reason: Some("its ejection is over".to_owned()),
                        ..event("returned", name, address)
                    }));
                }
            }
            Command::Offer { pool, now_ms } => reply.data = json!(self.pool(&pool)?.offer(now_ms)),
            Command::Pools { now_ms } => reply.data = self.describe(now_ms),
        }
        Ok(())
    }

    /// Gives `pool` the settings of its newest committed claim, and removes the members they
    /// refuse.
    fn take_settings(&mut self, name: &str, reply: &mut Reply) {
        let (Some(settings), Some(pool)) = (self.declared.active(name), self.pools.get_mut(name))
        else {
            return;
        };
        pool.configure(settings);
        self.remove_refused(name, reply);
    }

    /// Removes the members of `name` that its admission policy refuses now.
    fn remove_refused(&mut self, name: &str, reply: &mut Reply) {
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        for (address, why) in pool.refused_members(&self.own) {
            if pool.remove(&address).is_ok() {
                reply.changed.push(name.to_owned());
                reply.events.push(Event {
                    reason: Some(why),
                    ..event("removed", name, &address)
                });
            }
        }
        reply.changed.dedup();
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
                        value["dial"] = json!(u.dial());
                        value["lease_expires_in_ms"] =
                            json!(u.lease_expires_ms.saturating_sub(now_ms));
                        value["effective_weight"] = json!(if u.eligible() {
                            pool.effective_weight(u, now_ms)
                        } else {
                            0
                        });
                        value["slow_start_until_ms"] = json!(pool.ramp_until(u, now_ms));
                        value["load_factor"] =
                            json!(u.load.factor_permille.map(|f| f as f64 / 1000.0));
                        value
                    })
                    .collect();
                let pool_view = json!({
                    "health_passes": pool.policy.passes,
                    "health_fails": pool.policy.fails,
                    "slow_start_ms": pool.slow_start_ms,
                    "outlier": pool.outlier,
                    "load_reports": pool.load,
                    "allow": pool.admission.allow_list(),
                    "upstreams": upstreams,
                });
                (name.clone(), pool_view)
            })
            .collect();
        json!({ "pools": pools })
    }
}

/// How many members a pool holds, for replies.
fn target_members(pool: &Pool) -> usize {
    pool.upstreams.len()
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            status: 200,
            error: None,
            changed: Vec::new(),
            events: Vec::new(),
            data: Value::Null,
        }
    }
}

/// The reply to a refused command, with whatever it changed before it was refused.
fn failure(error: &RegistryError, done: Reply) -> Reply {
    Reply {
        status: error.status(),
        error: Some(error.to_string()),
        data: Value::Null,
        ..done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declarations::MAX_POOLS;

    fn run(registry: &mut Registry, command: Value) -> Reply {
        registry.handle_json(command.to_string().as_bytes())
    }

    /// Stages a claim (the next number) with `settings` (a configure command without its op and
    /// claim) and commits it, as a config that loads; the reply of whichever step refused, or
    /// the commit's.
    fn declare(registry: &mut Registry, mut settings: Value) -> Reply {
        static CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let claim = CLAIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        settings["op"] = json!("configure");
        settings["claim"] = json!(claim);
        let staged = run(registry, settings);
        if staged.status != 200 {
            return staged;
        }
        run(registry, json!({"op": "commit", "claim": claim}))
    }

    fn offered(registry: &mut Registry) -> Value {
        let offer = run(registry, json!({"op": "offer", "pool": "api", "now_ms": 0})).data;
        json!(offer["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["address"].clone())
            .collect::<Vec<_>>())
    }

    #[test]
    fn a_companion_lifecycle_through_json() {
        let mut registry = Registry::default();
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "register", "pool": "api", "address": "127.0.0.1:8001", "now_ms": 0})
            )
            .status,
            404,
            "pool not declared yet"
        );
        assert_eq!(
            declare(
                &mut registry,
                json!({"pool": "api", "passes": 1, "fails": 2})
            )
            .status,
            200
        );
        let registered = run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "127.0.0.1:8001", "lease_ms": 5000, "now_ms": 0}),
        );
        assert_eq!(
            (registered.status, registered.changed.clone()),
            (200, vec!["api".to_owned()])
        );
        assert_eq!(registered.events[0].name, "registered");
        assert_eq!(offered(&mut registry), json!(["127.0.0.1:8001"]));
        let again = run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "127.0.0.1:8001", "now_ms": 10}),
        );
        assert!(
            again.changed.is_empty() && again.events.is_empty(),
            "re-registering is a renewal: {again:?}"
        );

        let probe = |ok: bool| {
            json!({"op": "probed", "pool": "api", "address": "127.0.0.1:8001", "now_ms": 20,
            "result": if ok { json!({"status": 200, "body": "{\"status\":\"pass\"}"}) } else { json!({"status": 503, "body": "{\"status\":\"fail\"}"}) }})
        };
        assert!(
            run(&mut registry, probe(false)).events.is_empty(),
            "fails: 2"
        );
        let down = run(&mut registry, probe(false));
        assert_eq!(
            (down.events[0].name, down.events[0].reason.as_deref()),
            ("unhealthy", Some("answered 503"))
        );
        assert_eq!(offered(&mut registry), json!([]));
        assert_eq!(run(&mut registry, probe(true)).events[0].name, "healthy");

        let pools = run(&mut registry, json!({"op": "pools", "now_ms": 1000})).data;
        let upstream = &pools["pools"]["api"]["upstreams"][0];
        assert_eq!(
            (
                upstream["address"].as_str(),
                upstream["healthy"].as_bool(),
                upstream["draining"].as_bool()
            ),
            (Some("127.0.0.1:8001"), Some(true), Some(false))
        );
        // Re-registered at 10 ms with the default 15 s lease.
        assert_eq!(upstream["lease_expires_in_ms"], json!(14010));

        assert_eq!(
            run(
                &mut registry,
                json!({"op": "drain", "pool": "api", "address": "127.0.0.1:8001"})
            )
            .events[0]
                .name,
            "draining"
        );
        assert_eq!(offered(&mut registry), json!([]));
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "remove", "pool": "api", "address": "127.0.0.1:8001"})
            )
            .changed,
            ["api"]
        );
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "remove", "pool": "api", "address": "127.0.0.1:8001"})
            )
            .status,
            404
        );
    }

    #[test]
    fn the_number_of_pools_is_bounded() {
        let mut registry = Registry::default();
        for i in 0..MAX_POOLS {
            assert_eq!(
                declare(&mut registry, json!({"pool": format!("p{i}")})).status,
                200
            );
        }
        assert_eq!(
            declare(&mut registry, json!({"pool": "one-more"})).status,
            409
        );
        assert_eq!(
            declare(&mut registry, json!({"pool": "p7", "passes": 3})).status,
            200,
            "a known pool is reconfigured"
        );
    }

    #[test]
    fn a_refused_config_changes_nothing() {
        let mut registry = Registry::default();
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "configure", "pool": "api", "claim": 1, "allow": ["10.0.0.0/8"]})
            )
            .status,
            200
        );
        run(&mut registry, json!({"op": "commit", "claim": 1}));
        run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "10.0.0.5:80", "now_ms": 0}),
        );
        // A config declaring 1,030 pools, one of them a stricter api: refused at the 1,025th.
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "configure", "pool": "api", "claim": 2, "allow": ["192.168.0.0/16"]})
            )
            .status,
            200
        );
        let refused = (0..1030)
            .map(|i| {
                run(
                    &mut registry,
                    json!({"op": "configure", "pool": format!("p{i}"), "claim": 100 + i}),
                )
            })
            .position(|r| r.status == 409);
        assert_eq!(refused, Some(MAX_POOLS - 1), "api counts too");
        assert_eq!(
            offered(&mut registry),
            json!(["10.0.0.5:80"]),
            "staged settings do not run"
        );
        // Caddy unloads it: every claim it staged is released.
        for claim in std::iter::once(2).chain(100..100 + MAX_POOLS as u64 - 1) {
            assert_eq!(
                run(&mut registry, json!({"op": "release", "claim": claim})).status,
                200
            );
        }
        assert_eq!(
            run(&mut registry, json!({"op": "pools", "now_ms": 0})).data["pools"]
                .as_object()
                .map(|p| p.len()),
            Some(1)
        );
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "register", "pool": "p3", "address": "10.0.0.6:80", "now_ms": 0})
            )
            .status,
            404
        );
        assert_eq!(offered(&mut registry), json!(["10.0.0.5:80"]));
        assert_eq!(
            declare(&mut registry, json!({"pool": "new-one"})).status,
            200,
            "a later config declares new pools"
        );
    }

    #[test]
    fn a_pool_lives_as_long_as_a_running_config_declares_it() {
        let mut registry = Registry::default();
        run(
            &mut registry,
            json!({"op": "configure", "pool": "api", "claim": 1}),
        );
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "register", "pool": "api", "address": "10.0.0.5:80", "now_ms": 0})
            )
            .status,
            404,
            "staged only"
        );
        run(&mut registry, json!({"op": "commit", "claim": 1}));
        run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "10.0.0.5:80", "now_ms": 0}),
        );
        // A reload: the new config's claim commits before the old one is released.
        run(
            &mut registry,
            json!({"op": "configure", "pool": "api", "claim": 2, "slow_start_ms": 5000}),
        );
        run(&mut registry, json!({"op": "commit", "claim": 2}));
        let released = run(&mut registry, json!({"op": "release", "claim": 1}));
        assert_eq!(released.data, json!({"pool": "api", "gone": false}));
        assert_eq!(
            offered(&mut registry),
            json!(["10.0.0.5:80"]),
            "members outlive a reload"
        );
        assert_eq!(
            run(&mut registry, json!({"op": "pools", "now_ms": 0})).data["pools"]["api"]
                ["slow_start_ms"],
            5000
        );
        // A config without the pool replaces it.
        let gone = run(&mut registry, json!({"op": "release", "claim": 2}));
        assert_eq!(
            (
                gone.data["gone"].as_bool(),
                gone.events[0].name,
                gone.changed.len()
            ),
            (Some(true), "removed", 0)
        );
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "offer", "pool": "api", "now_ms": 0})
            )
            .status,
            404
        );
        assert_eq!(
            run(&mut registry, json!({"op": "release", "claim": 2})).status,
            404
        );
    }

    #[test]
    fn a_name_that_moves_somewhere_refused_is_removed_at_its_renewal() {
        let mut registry = Registry::default();
        declare(&mut registry, json!({"pool": "api"}));
        run(
            &mut registry,
            json!({"op": "host", "listeners": ["127.0.0.1:2019"], "local_addresses": ["10.0.0.9"]}),
        );
        let registered = run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "app.test:2019", "resolved": ["10.0.0.5"], "now_ms": 0}),
        );
        assert_eq!(
            (registered.status, registered.data["dial"].as_str()),
            (200, Some("10.0.0.5:2019"))
        );
        let moved = run(
            &mut registry,
            json!({"op": "renew", "pool": "api", "address": "app.test:2019", "resolved": ["127.0.0.2"], "now_ms": 10}),
        );
        assert_eq!(
            (moved.status, moved.changed.clone(), moved.events[0].name),
            (403, vec!["api".to_owned()], "removed")
        );
        assert!(
            moved.events[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("reaches this Caddy itself")),
            "{moved:?}"
        );
        assert_eq!(offered(&mut registry), json!([]));
        let again = run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "app.test:2019", "resolved": ["169.254.169.254"], "now_ms": 20}),
        );
        assert_eq!(
            (again.status, again.events.len()),
            (403, 0),
            "refused, and nothing to remove"
        );
        // Re-registering a known member is judged too.
        run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "app.test:2019", "resolved": ["10.0.0.5"], "now_ms": 30}),
        );
        let rebound = run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "app.test:2019", "resolved": ["169.254.169.254"], "now_ms": 40}),
        );
        assert_eq!((rebound.status, rebound.events[0].name), (403, "removed"));
    }

    #[test]
    fn a_member_that_reaches_caddy_under_new_facts_is_removed() {
        let mut registry = Registry::default();
        declare(&mut registry, json!({"pool": "api"}));
        run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "10.0.0.9:2999", "now_ms": 0}),
        );
        run(
            &mut registry,
            json!({"op": "register", "pool": "api", "address": "10.0.0.5:2999", "now_ms": 0}),
        );
        // A reload moved the admin API onto all interfaces at port 2999; this host is 10.0.0.9.
        let moved = run(
            &mut registry,
            json!({"op": "host", "listeners": ["0.0.0.0:2999"], "local_addresses": ["10.0.0.9"]}),
        );
        assert_eq!(
            (
                moved.changed.clone(),
                moved.events.len(),
                moved.events[0].address.as_str()
            ),
            (vec!["api".to_owned()], 1, "10.0.0.9:2999")
        );
        assert_eq!(offered(&mut registry), json!(["10.0.0.5:2999"]));
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "host", "listeners": ["localhost:2019"]})
            )
            .status,
            400
        );
    }

    #[test]
    fn expired_leases_leave_every_pool() {
        let mut registry = Registry::default();
        for pool in ["a", "b"] {
            declare(&mut registry, json!({"pool": pool}));
            run(
                &mut registry,
                json!({"op": "register", "pool": pool, "address": "10.0.0.1:80", "lease_ms": 2000, "now_ms": 0}),
            );
        }
        run(
            &mut registry,
            json!({"op": "renew", "pool": "a", "address": "10.0.0.1:80", "now_ms": 1500}),
        );
        let tick = run(&mut registry, json!({"op": "tick", "now_ms": 2500}));
        assert_eq!(tick.changed, ["b"]);
        assert_eq!(
            (tick.events[0].name, tick.events[0].pool.as_str()),
            ("expired", "b")
        );
        assert_eq!(
            run(
                &mut registry,
                json!({"op": "renew", "pool": "b", "address": "10.0.0.1:80", "now_ms": 2600})
            )
            .status,
            404
        );
    }

    #[test]
    fn bad_input_gets_a_clear_error() {
        let mut registry = Registry::default();
        declare(&mut registry, json!({"pool": "api"}));
        for (input, status) in [
            (&b"not json"[..], 400),
            (br#"{"op":"explode"}"#, 400),
            (
                br#"{"op":"register","pool":"api","address":"nope","now_ms":0}"#,
                400,
            ),
            (
                br#"{"op":"register","pool":"api","address":"10.0.0.1:80","now_ms":0,"extra":1}"#,
                400,
            ),
            (
                br#"{"op":"register","pool":"../x","address":"10.0.0.1:80","now_ms":0}"#,
                400,
            ),
            (
                br#"{"op":"drain","pool":"api","address":"10.0.0.9:80"}"#,
                404,
            ),
        ] {
            let reply = registry.handle_json(input);
            assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(input));
            assert!(reply.error.is_some_and(|e| !e.is_empty()));
        }
    }
}

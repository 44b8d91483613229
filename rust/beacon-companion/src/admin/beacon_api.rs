//! The beacon module's admin routes as the companion uses them, typed: `GET /beacon/pools`
//! (pool mode's verdicts and in-flight counts, `status`, `deregister`) and
//! `POST /beacon/pools/<pool>/{register,renew,weight,drain,remove}`.
//!
//! The shapes are the module's (caddy/admin.go and the registry's `pools` answer); the shared
//! test vectors under rust/beacon-registry/vectors/ hold real answers, and this crate's tests
//! read them with these types, so a field renamed on either side fails a test. Fields the
//! companion does not read are ignored: a newer module may add some.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin::AdminClient;
use crate::CompanionError;

/// `GET /beacon/pools`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PoolsListing {
    /// Every pool by name.
    pub pools: BTreeMap<String, PoolListing>,
}

/// One pool in the listing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PoolListing {
    /// Its members, in registration order.
    pub upstreams: Vec<Member>,
}

/// One member of a pool, as the module reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Member {
    /// The dial address it was registered with.
    pub address: String,
    /// Passing the module's active checks.
    pub healthy: bool,
    /// Takes no new requests.
    pub draining: bool,
    /// Requests Caddy has in flight to it.
    pub in_flight: u64,
    /// Time left on its lease.
    pub lease_expires_in_ms: u64,
    /// Its weight (0: standby).
    pub weight: u32,
    /// The weight it gets now: less while slow start ramps it up, 0 when not offered.
    pub effective_weight: u32,
}

/// The answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Registered {
    /// False when the address was a member already (a renewal, or un-draining).
    pub created: bool,
    /// The lease granted.
    pub lease_ms: u64,
    /// Its weight now.
    pub weight: u32,
}

/// The body of every pool action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberRequest<'a> {
    /// The dial address.
    pub address: &'a str,
    /// Registration only: the lease asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Registration and weight changes: the weight (0 = standby).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// What a companion asks of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolAction {
    /// Join, or re-join.
    Register,
    /// Extend the lease.
    Renew,
    /// Change the weight.
    Weight,
    /// Take no new requests.
    Drain,
    /// Leave.
    Remove,
}

impl PoolAction {
    /// The last segment of the route.
    pub fn segment(self) -> &'static str {
        match self {
            PoolAction::Register => "register",
            PoolAction::Renew => "renew",
            PoolAction::Weight => "weight",
            PoolAction::Drain => "drain",
            PoolAction::Remove => "remove",
        }
    }
}

/// Why a pool action did not happen; the others hold the one-line error.
#[derive(Debug)]
pub enum ActionError {
    /// 404: the pool does not know the address (never registered, its lease ended, Caddy restarted).
    NotFound,
    /// Another 4xx: will not work as asked (an unknown pool, an address the module refuses).
    Refused(CompanionError),
    /// Unreachable, 5xx, or an answer that is not the module's: worth retrying.
    Failed(CompanionError),
}

impl PoolsListing {
    /// `address` in `pool`, if it is a member.
    pub fn member(&self, pool: &str, address: &str) -> Option<&Member> {
        self.pools
            .get(pool)?
            .upstreams
            .iter()
            .find(|member| member.address == address)
    }

    /// The pools that hold `address`.
    pub fn pools_holding(&self, address: &str) -> Vec<String> {
        self.pools
            .iter()
            .filter(|(_, pool)| pool.upstreams.iter().any(|m| m.address == address))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The beacon routes of one Admin API.
#[derive(Clone, Copy, Debug)]
pub struct BeaconApi<'a>(pub &'a AdminClient);

impl BeaconApi<'_> {
    /// `GET /beacon/pools`; None when this Caddy has no beacon module (the route answers 404).
    pub fn pools(&self) -> Result<Option<PoolsListing>, CompanionError> {
        const PATH: &str = "/beacon/pools";
        let response = self.0.request("GET", PATH, None, None)?;
        match response.status {
            404 => Ok(None),
            200 => serde_json::from_slice(&response.body)
                .map(Some)
                .map_err(|e| self.not_the_module("GET", PATH, response.status, &e)),
            _ => Err(self.0.api_error("GET", PATH, &response)),
        }
    }

    /// Registers (or re-registers) `address` in `pool` for `lease`, with `weight`.
    pub fn register(
        &self,
        pool: &str,
        address: &str,
        lease: Duration,
        weight: u32,
    ) -> Result<Registered, ActionError> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let body = self.post(
            pool,
            PoolAction::Register,
            &MemberRequest {
                address,
                lease_ms: Some(lease_ms),
                weight: Some(weight),
            },
        )?;
        let path = route(pool, PoolAction::Register);
        serde_json::from_slice(&body)
            .map_err(|e| ActionError::Failed(self.not_the_module("POST", &path, 200, &e)))
    }

    /// Renews, drains or removes `address` in `pool`.
    pub fn act(&self, pool: &str, action: PoolAction, address: &str) -> Result<(), ActionError> {
        self.post(
            pool,
            action,
            &MemberRequest {
                address,
                lease_ms: None,
                weight: None,
            },
        )
        .map(drop)
    }

    /// Gives `address` in `pool` a new weight (0: standby), without registering it again.
    pub fn set_weight(&self, pool: &str, address: &str, weight: u32) -> Result<(), ActionError> {
        self.post(
            pool,
            PoolAction::Weight,
            &MemberRequest {
                address,
                lease_ms: None,
                weight: Some(weight),
            },
        )
        .map(drop)
    }

    fn post(
        &self,
        pool: &str,
        action: PoolAction,
        request: &MemberRequest<'_>,
    ) -> Result<Vec<u8>, ActionError> {
        let path = route(pool, action);
        let body = serde_json::to_vec(request).expect("a MemberRequest always serializes");
        let response = self
            .0
            .request("POST", &path, Some(&body), None)
            .map_err(ActionError::Failed)?;
        match response.status {
            200 => Ok(response.body),
            // Registering in a pool Caddy does not have is a refusal, not a lost membership.
            404 if action != PoolAction::Register => Err(ActionError::NotFound),
            status if status >= 500 => Err(ActionError::Failed(
                self.0.api_error("POST", &path, &response),
            )),
            _ => Err(ActionError::Refused(
                self.0.api_error("POST", &path, &response),
            )),
        }
    }

    fn not_the_module(
        &self,
        method: &str,
        path: &str,
        status: u16,
        error: &serde_json::Error,
    ) -> CompanionError {
        CompanionError::Api {
            admin: self.0.address().url(),
            request: format!("{method} {path}"),
            status,
            message: format!("the answer is not the beacon module's: {error}"),
        }
    }
}

fn route(pool: &str, action: PoolAction) -> String {
    format!("/beacon/pools/{pool}/{}", action.segment())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The admin routes' shared vectors (rust/beacon-registry/vectors/admin_api.json): what the
    /// Go host answered to each request, with a fixed clock.
    fn admin_vectors() -> Vec<Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../beacon-registry/vectors/admin_api.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let vector: Value = serde_json::from_str(&text).expect("admin_api.json is JSON");
        vector["steps"].as_array().expect("steps").clone()
    }

    #[test]
    fn builds_every_request_the_module_reads_and_reads_every_answer_it_gives() {
        let steps = admin_vectors();
        assert!(steps.len() >= 8);
        let (mut registrations, mut listings, mut refusals) = (0, 0, 0);
        for step in &steps {
            let (request, response) = (&step["request"], &step["response"]);
            let (status, body) = (
                response["status"].as_u64().expect("a status"),
                &response["body"],
            );
            let path = request["path"].as_str().expect("a path");
            if request["method"] == "GET" {
                let listing: PoolsListing = serde_json::from_value(body.clone())
                    .expect("the companion reads GET /beacon/pools");
                let member = listing
                    .member("vectors", "10.0.0.5:8000")
                    .expect("the registered member is listed");
                let written = &body["pools"]["vectors"]["upstreams"][0];
                assert_eq!(
                    (member.healthy, member.draining, member.in_flight),
                    (written["healthy"] == true, written["draining"] == true, 0)
                );
                assert_eq!(
                    member.lease_expires_in_ms,
                    written["lease_expires_in_ms"].as_u64().unwrap()
                );
                assert_eq!(
                    (member.weight, member.effective_weight),
                    (10, if member.draining { 0 } else { 10 }),
                    "the weight set before listing"
                );
                assert_eq!(listing.pools_holding("10.0.0.5:8000"), ["vectors"]);
                listings += 1;
                continue;
            }
            // The request the companion itself would send for this route (it never sends a
            // weight out of range, or a weight change without one: those steps pin the
            // module's refusals, which the companion only has to pass on).
            let action = [
                PoolAction::Register,
                PoolAction::Renew,
                PoolAction::Weight,
                PoolAction::Drain,
                PoolAction::Remove,
            ]
            .into_iter()
            .find(|action| path.ends_with(&format!("/{}", action.segment())))
            .expect("a pool action");
            let pool = path
                .trim_start_matches("/beacon/pools/")
                .split('/')
                .next()
                .unwrap();
            assert_eq!(path, route(pool, action));
            let address = request["body"]["address"].as_str().unwrap();
            let lease_ms = request["body"]["lease_ms"].as_u64();
            let weight = request["body"]["weight"]
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .filter(|w| *w <= 10_000);
            let sendable = request["body"]
                .get("weight")
                .is_none_or(|_| weight.is_some())
                && (action != PoolAction::Weight || weight.is_some());
            if sendable {
                assert_eq!(
                    action == PoolAction::Register,
                    lease_ms.is_some(),
                    "a lease is asked for on registration only"
                );
                assert_eq!(
                    serde_json::to_value(MemberRequest {
                        address,
                        lease_ms,
                        weight
                    })
                    .unwrap(),
                    request["body"]
                );
            }
            match (status, action) {
                (200, PoolAction::Register) => {
                    let registered: Registered = serde_json::from_value(body.clone())
                        .expect("the companion reads the registration");
                    assert_eq!(registered.lease_ms, lease_ms.unwrap());
                    registrations += 1;
                }
                (200, PoolAction::Weight) => assert_eq!(body, &json!({"weight": weight.unwrap()})),
                (200, _) => assert_eq!(body, &json!({})),
                // Refusals: Caddy's admin error, whose text the companion passes on.
                _ => {
                    assert!(
                        body["error"].as_str().is_some_and(|e| !e.is_empty()),
                        "{body}"
                    );
                    refusals += 1;
                }
            }
        }
        assert_eq!((registrations, listings), (2, 2));
        assert!(refusals >= 3);
    }

    #[test]
    fn a_listing_without_a_field_the_companion_reads_is_an_error() {
        let listing = json!({"pools": {"api": {"upstreams": [{"address": "10.0.0.5:8000", "healthy": true, "draining": false, "in_flight": 0, "weight": 100, "effective_weight": 100}]}}});
        let error = serde_json::from_value::<PoolsListing>(listing).unwrap_err();
        assert!(error.to_string().contains("lease_expires_in_ms"), "{error}");
    }
}

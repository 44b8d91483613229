//! One pool: its upstreams in registration order, each with a lease, a health verdict and a
//! draining flag.

use serde::Serialize;

use crate::health::{judge, HealthCount, HealthPolicy, ProbeResult};
use crate::{Change, RegistryError};

/// Most upstreams in one pool.
pub const MAX_UPSTREAMS: usize = 1024;
/// Shortest and longest lease a companion may ask for, in milliseconds.
pub const LEASE_RANGE_MS: (u64, u64) = (1_000, 300_000);
/// The lease when none is asked for.
pub const DEFAULT_LEASE_MS: u64 = 15_000;

/// One registered upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// What Caddy dials.
    pub address: String,
    /// Passing its health checks (new registrations start healthy: their companion registers
    /// them only once their own readiness passed).
    pub healthy: bool,
    /// Getting no new requests; stays known until its companion removes it or its lease ends.
    pub draining: bool,
    /// The lease's length, renewed by the companion.
    pub lease_ms: u64,
    /// When the lease ends (host clock, ms).
    pub lease_expires_ms: u64,
    /// When it was registered (host clock, ms).
    pub registered_ms: u64,
    /// Probe counts toward the thresholds.
    #[serde(flatten)]
    pub count: HealthCount,
    /// Why the last probe failed, if it did.
    pub last_error: Option<String>,
    /// When it was last probed (host clock, ms).
    pub last_probe_ms: Option<u64>,
}

/// A pool of upstreams, as one or more `dynamic beacon <pool>` blocks declare it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// Health thresholds.
    pub policy: HealthPolicy,
    /// Upstreams, in registration order.
    pub upstreams: Vec<Upstream>,
}

impl Pool {
    fn find(&mut self, address: &str) -> Option<&mut Upstream> {
        self.upstreams.iter_mut().find(|u| u.address == address)
    }

    /// Registers `address`, or renews it (a new registration of a draining upstream means its
    /// companion started again: it is served again).
    pub fn register(&mut self, address: &str, lease_ms: u64, now_ms: u64) -> Result<Change, RegistryError> {
        let lease_ms = lease_ms.clamp(LEASE_RANGE_MS.0, LEASE_RANGE_MS.1);
        if let Some(upstream) = self.find(address) {
            upstream.lease_ms = lease_ms;
            upstream.lease_expires_ms = now_ms.saturating_add(lease_ms);
            let was_draining = std::mem::take(&mut upstream.draining);
            return Ok(if was_draining { Change::Offer } else { Change::None });
        }
        if self.upstreams.len() >= MAX_UPSTREAMS {
            return Err(RegistryError::Full(MAX_UPSTREAMS));
        }
        self.upstreams.push(Upstream {
            address: address.to_owned(),
            healthy: true,
            draining: false,
            lease_ms,
            lease_expires_ms: now_ms.saturating_add(lease_ms),
            registered_ms: now_ms,
            count: HealthCount::default(),
            last_error: None,
            last_probe_ms: None,
        });
        Ok(Change::Offer)
    }

    /// Extends the lease of a known upstream.
    pub fn renew(&mut self, address: &str, now_ms: u64) -> Result<(), RegistryError> {
        let upstream = self.find(address).ok_or_else(|| RegistryError::UnknownUpstream(address.to_owned()))?;
        upstream.lease_expires_ms = now_ms.saturating_add(upstream.lease_ms);
        Ok(())
    }

    /// Stops offering `address` to new requests.
    pub fn drain(&mut self, address: &str) -> Result<Change, RegistryError> {
        let upstream = self.find(address).ok_or_else(|| RegistryError::UnknownUpstream(address.to_owned()))?;
        Ok(if std::mem::replace(&mut upstream.draining, true) { Change::None } else { Change::Offer })
    }

    /// Forgets `address`.
    pub fn remove(&mut self, address: &str) -> Result<Change, RegistryError> {
        let before = self.upstreams.len();
        self.upstreams.retain(|u| u.address != address);
        if self.upstreams.len() == before {
            return Err(RegistryError::UnknownUpstream(address.to_owned()));
        }
        Ok(Change::Offer)
    }

    /// Counts one probe of `address`; Some(new verdict) when it changed.
    pub fn probed(&mut self, address: &str, probe: &ProbeResult, now_ms: u64) -> Result<Option<bool>, RegistryError> {
        let policy = self.policy;
        let upstream = self.find(address).ok_or_else(|| RegistryError::UnknownUpstream(address.to_owned()))?;
        let verdict = judge(probe);
        upstream.last_probe_ms = Some(now_ms);
        upstream.last_error = verdict.clone().err();
        let changed = upstream.count.count(verdict.is_ok(), upstream.healthy, policy);
        if let Some(healthy) = changed {
            upstream.healthy = healthy;
        }
        Ok(changed)
    }

    /// Removes upstreams whose lease ended; returns their addresses.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let mut gone = Vec::new();
        self.upstreams.retain(|u| {
            let alive = u.lease_expires_ms > now_ms;
            if !alive {
                gone.push(u.address.clone());
            }
            alive
        });
        gone
    }

    /// The addresses to offer Caddy, in registration order: healthy and not draining.
    pub fn offer(&self) -> Vec<String> {
        self.upstreams.iter().filter(|u| u.healthy && !u.draining).map(|u| u.address.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool { policy: HealthPolicy { passes: 2, fails: 2 }, upstreams: Vec::new() }
    }

    fn refused() -> ProbeResult {
        ProbeResult { status: None, body: String::new(), error: Some("connection refused".into()) }
    }

    fn ok() -> ProbeResult {
        ProbeResult { status: Some(200), body: r#"{"status":"pass"}"#.into(), error: None }
    }

    #[test]
    fn registration_is_idempotent_and_ordered() {
        let mut pool = pool();
        assert_eq!(pool.register("b:1", 10_000, 0).unwrap(), Change::Offer);
        assert_eq!(pool.register("a:1", 10_000, 0).unwrap(), Change::Offer);
        assert_eq!(pool.register("b:1", 10_000, 5).unwrap(), Change::None, "a second registration renews");
        assert_eq!(pool.offer(), ["b:1", "a:1"]);
        assert_eq!(pool.upstreams[0].lease_expires_ms, 10_005);
    }

    #[test]
    fn leases_end_unless_renewed() {
        let mut pool = pool();
        pool.register("a:1", 2_000, 0).unwrap();
        pool.register("b:1", 2_000, 0).unwrap();
        pool.renew("a:1", 1_500).unwrap();
        assert_eq!(pool.expire(2_000), ["b:1"]);
        assert_eq!(pool.offer(), ["a:1"]);
        assert_eq!(pool.expire(3_500), ["a:1"]);
        assert!(matches!(pool.renew("a:1", 3_600), Err(RegistryError::UnknownUpstream(_))));
        // Leases are clamped to a sane range.
        pool.register("c:1", 5, 0).unwrap();
        assert_eq!(pool.upstreams[0].lease_ms, LEASE_RANGE_MS.0);
    }

    #[test]
    fn draining_stops_offers_but_keeps_the_upstream() {
        let mut pool = pool();
        pool.register("a:1", 10_000, 0).unwrap();
        pool.register("b:1", 10_000, 0).unwrap();
        assert_eq!(pool.drain("a:1").unwrap(), Change::Offer);
        assert_eq!(pool.drain("a:1").unwrap(), Change::None);
        assert_eq!(pool.offer(), ["b:1"]);
        assert_eq!(pool.upstreams.len(), 2);
        // Its companion started again: served again.
        assert_eq!(pool.register("a:1", 10_000, 1).unwrap(), Change::Offer);
        assert_eq!(pool.offer(), ["a:1", "b:1"]);
        assert_eq!(pool.remove("a:1").unwrap(), Change::Offer);
        assert!(pool.remove("a:1").is_err());
    }

    #[test]
    fn probes_move_upstreams_out_and_back_in() {
        let mut pool = pool();
        pool.register("a:1", 10_000, 0).unwrap();
        assert_eq!(pool.probed("a:1", &refused(), 1).unwrap(), None);
        assert_eq!(pool.probed("a:1", &refused(), 2).unwrap(), Some(false));
        assert_eq!(pool.offer(), Vec::<String>::new());
        assert_eq!(pool.upstreams[0].last_error.as_deref(), Some("connection refused"));
        assert_eq!(pool.probed("a:1", &ok(), 3).unwrap(), None);
        assert_eq!(pool.probed("a:1", &ok(), 4).unwrap(), Some(true));
        assert_eq!(pool.offer(), ["a:1"]);
    }

    #[test]
    fn a_pool_has_a_cap() {
        let mut pool = pool();
        for i in 0..MAX_UPSTREAMS {
            pool.register(&format!("10.0.{}.{}:80", i / 256, i % 256), 10_000, 0).unwrap();
        }
        assert!(matches!(pool.register("10.9.9.9:80", 10_000, 0), Err(RegistryError::Full(_))));
    }
}

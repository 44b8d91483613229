//! Which loaded configs declare each pool, so that a config Caddy refuses changes nothing and a
//! pool lives exactly as long as a running config declares it.
//!
//! Every `dynamic beacon <pool>` module of a config load is one claim, numbered by the host in
//! the order modules are provisioned. Provisioning stages the claim: its settings are checked
//! (a bad `allow`, one pool too many: the load fails with the reason) and nothing else changes.
//! Once Caddy has started the whole config, the host commits its claims: the pool exists from
//! then on, with the settings of its newest committed claim. When a config is unloaded —
//! replaced, refused, or only validated — the host releases its claims; a pool that no claim
//! holds any more is gone with its members, and one whose newest claim left falls back to the
//! next newest (a reload that failed after it committed).

use std::collections::{BTreeMap, BTreeSet};

use crate::admission::Admission;
use crate::health::HealthPolicy;
use crate::load_weights::LoadPolicy;
use crate::outlier::OutlierPolicy;
use crate::RegistryError;

/// Most pools the registry keeps declared (a Caddy config declares a handful; this bounds the
/// memory a host that declares pools without end could make the guest take).
pub const MAX_POOLS: usize = 1024;

/// A pool's settings, as one `dynamic beacon` block gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSettings {
    /// Health thresholds.
    pub policy: HealthPolicy,
    /// Slow start's window (0: off).
    pub slow_start_ms: u64,
    /// Outlier ejection (None: off).
    pub outlier: Option<OutlierPolicy>,
    /// Load-aware weights (None: off).
    pub load: Option<LoadPolicy>,
    /// Which addresses may register.
    pub admission: Admission,
}

#[derive(Debug)]
struct Claim {
    pool: String,
    settings: PoolSettings,
    committed: bool,
}

/// Every claim the host has staged and not released.
#[derive(Debug, Default)]
pub struct Declarations {
    claims: BTreeMap<u64, Claim>,
}

impl Declarations {
    /// Stages claim `id` on `pool`. A pool no claim names yet counts toward [`MAX_POOLS`].
    pub fn stage(
        &mut self,
        id: u64,
        pool: &str,
        settings: PoolSettings,
    ) -> Result<(), RegistryError> {
        if self.claims.contains_key(&id) {
            return Err(RegistryError::BadRequest(format!(
                "claim {id} is staged already"
            )));
        }
        if !self.claimed(pool) && self.pools().len() >= MAX_POOLS {
            return Err(RegistryError::TooManyPools(MAX_POOLS));
        }
        self.claims.insert(
            id,
            Claim {
                pool: pool.to_owned(),
                settings,
                committed: false,
            },
        );
        Ok(())
    }

    /// Commits claim `id`; returns its pool.
    pub fn commit(&mut self, id: u64) -> Result<String, RegistryError> {
        let claim = self
            .claims
            .get_mut(&id)
            .ok_or(RegistryError::UnknownClaim(id))?;
        claim.committed = true;
        Ok(claim.pool.clone())
    }

    /// Releases claim `id`; returns its pool.
    pub fn release(&mut self, id: u64) -> Result<String, RegistryError> {
        self.claims
            .remove(&id)
            .map(|claim| claim.pool)
            .ok_or(RegistryError::UnknownClaim(id))
    }

    /// Whether any claim, staged or committed, names `pool`.
    pub fn claimed(&self, pool: &str) -> bool {
        self.claims.values().any(|claim| claim.pool == pool)
    }

    /// The settings of `pool`'s newest committed claim: what it runs with; None while no
    /// running config declares it.
    pub fn active(&self, pool: &str) -> Option<&PoolSettings> {
        self.claims
            .values()
            .rev()
            .find(|claim| claim.committed && claim.pool == pool)
            .map(|claim| &claim.settings)
    }

    fn pools(&self) -> BTreeSet<&str> {
        self.claims
            .values()
            .map(|claim| claim.pool.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(slow_start_ms: u64) -> PoolSettings {
        PoolSettings {
            slow_start_ms,
            ..PoolSettings::default()
        }
    }

    #[test]
    fn a_staged_claim_is_not_running_until_committed_and_the_newest_wins() {
        let mut declared = Declarations::default();
        declared.stage(1, "api", settings(10)).unwrap();
        assert_eq!(declared.active("api"), None, "staged only");
        assert_eq!(declared.commit(1).unwrap(), "api");
        declared.stage(2, "api", settings(20)).unwrap();
        assert_eq!(
            declared.active("api").unwrap().slow_start_ms,
            10,
            "the reload has not started yet"
        );
        declared.commit(2).unwrap();
        assert_eq!(declared.active("api").unwrap().slow_start_ms, 20);
        declared.release(2).unwrap();
        assert_eq!(
            declared.active("api").unwrap().slow_start_ms,
            10,
            "back to the config still running"
        );
        declared.release(1).unwrap();
        assert!(!declared.claimed("api") && declared.active("api").is_none());
        assert_eq!(declared.release(1), Err(RegistryError::UnknownClaim(1)));
        assert_eq!(declared.commit(7), Err(RegistryError::UnknownClaim(7)));
    }

    #[test]
    fn pools_are_bounded_and_a_released_claim_frees_its_place() {
        let mut declared = Declarations::default();
        for id in 0..MAX_POOLS as u64 {
            declared.stage(id, &format!("p{id}"), settings(0)).unwrap();
        }
        assert_eq!(
            declared.stage(9_999, "one-more", settings(0)),
            Err(RegistryError::TooManyPools(MAX_POOLS))
        );
        declared
            .stage(10_000, "p7", settings(0))
            .expect("a pool already declared takes more claims");
        assert!(
            declared.stage(10_000, "p8", settings(0)).is_err(),
            "a claim is staged once"
        );
        declared.release(3).unwrap();
        declared.stage(10_001, "one-more", settings(0)).unwrap();
    }
}

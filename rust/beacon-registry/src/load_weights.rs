//! Load-aware weights, as gRPC's weighted round robin computes them (proposal A58): each member's
//! weight is `qps / (utilization + eps / qps × error_penalty)`, from the requests and errors per
//! second this Caddy sent it (measured by the host) and the utilization the member reports
//! itself (its load reports). A member's weight counts only once it has reported for
//! `blackout` (a fresh member's first figures are noise), and stops counting when its reports
//! are older than `expire`; members without a weight that counts get the mean of those with
//! one. Opt-in per pool (`load_reports { ... }`).
//!
//! The result is a factor on each member's own weight (the configured one, slow start's ramp
//! included): the mean member keeps its weight, one twice as loaded per request gets half.
//! The host refreshes the figures every second and serves the weights through the pool's
//! smooth weighted round robin and `choices`, as any weight.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pool::Pool;
use crate::{Change, RegistryError};

/// The factor's bounds, in thousandths: a member is never starved below a hundredth of its
/// weight (so its reports keep coming) nor lifted past a hundred times it.
const FACTOR_RANGE_PERMILLE: (u64, u64) = (10, 100_000);

/// The pool's `load_reports { ... }` settings (a field left out takes its default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadPolicy {
    /// How long a member must have reported before its weight counts.
    pub blackout_ms: u64,
    /// Reports older than this no longer count.
    pub expire_ms: u64,
    /// How much an error per request weighs against utilization, in thousandths (1000: 1.0).
    pub error_penalty_milli: u32,
}

impl Default for LoadPolicy {
    /// gRPC's defaults: 10 s blackout, 3 min expiry, error penalty 1.0.
    fn default() -> Self {
        LoadPolicy {
            blackout_ms: 10_000,
            expire_ms: 180_000,
            error_penalty_milli: 1_000,
        }
    }
}

impl LoadPolicy {
    /// Checks the settings a config gives.
    pub fn checked(self) -> Result<Self, RegistryError> {
        if self.expire_ms == 0 || self.expire_ms <= self.blackout_ms {
            return Err(RegistryError::BadRequest(
                "load_reports: expire must be longer than blackout".to_owned(),
            ));
        }
        Ok(self)
    }
}

/// What the host measured of one member over the last second, with its latest report.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberLoad {
    /// The member.
    pub address: String,
    /// Requests per second this Caddy sent it (answered ones).
    pub qps: f64,
    /// Of those, 5xx answers per second.
    pub eps: f64,
    /// The utilization it last reported (0 to 1), if it ever did.
    pub utilization: Option<f64>,
    /// When that report came (host clock, ms).
    pub reported_ms: Option<u64>,
}

/// A member's load-aware state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoadState {
    /// The factor on its weight, in thousandths (None: no load-aware weight, its own counts).
    #[serde(skip)]
    pub factor_permille: Option<u64>,
    /// Since when it has reported without a gap longer than `expire` (for the blackout).
    #[serde(skip)]
    pub reporting_since_ms: Option<u64>,
}

impl LoadState {
    /// Applies the factor to a weight.
    pub fn apply(&self, weight: u32) -> u32 {
        match self.factor_permille {
            Some(factor) => u32::try_from((u64::from(weight) * factor).div_ceil(1000))
                .unwrap_or(u32::MAX)
                .max(1),
            None => weight,
        }
    }
}

/// A58's weight from one member's figures; None when they give none (no traffic, or a
/// utilization of 0: nothing to divide by).
fn a58_weight(load: &MemberLoad, utilization: f64, penalty: f64) -> Option<f64> {
    let qps = sane(load.qps)?;
    let eps = sane(load.eps).unwrap_or(0.0);
    if qps <= 0.0 {
        return None;
    }
    let denominator = utilization + eps / qps * penalty;
    (denominator > 0.0).then(|| qps / denominator)
}

/// A finite, non-negative figure.
fn sane(value: f64) -> Option<f64> {
    (value.is_finite() && value >= 0.0).then_some(value)
}

impl Pool {
    /// Takes the host's figures for this second and computes every member's factor. Members
    /// the host did not list keep no factor.
    pub fn loads(&mut self, figures: &[MemberLoad], now_ms: u64) -> Change {
        let Some(policy) = self.load else {
            return Change::None;
        };
        let penalty = f64::from(policy.error_penalty_milli) / 1000.0;
        // By address: a pool of a thousand members is looked up a thousand times a second
        // (reversed, so that a listed address's first figure counts, as a search would find).
        let by_address: BTreeMap<&str, &MemberLoad> = figures
            .iter()
            .rev()
            .map(|f| (f.address.as_str(), f))
            .collect();
        let mut weights: Vec<Option<f64>> = Vec::with_capacity(self.upstreams.len());
        for upstream in &mut self.upstreams {
            let figure = by_address.get(upstream.address.as_str()).copied();
            let fresh = figure.and_then(|f| {
                let reported = f.reported_ms?;
                let utilization = sane(f.utilization?)?.min(1.0);
                (now_ms.saturating_sub(reported) < policy.expire_ms).then_some((f, utilization))
            });
            let Some((figure, utilization)) = fresh else {
                upstream.load.reporting_since_ms = None;
                weights.push(None);
                continue;
            };
            let since = *upstream.load.reporting_since_ms.get_or_insert(now_ms);
            let counted = now_ms.saturating_sub(since) >= policy.blackout_ms;
            weights.push(if counted {
                a58_weight(figure, utilization, penalty)
            } else {
                None
            });
        }
        let known: Vec<f64> = weights.iter().flatten().copied().collect();
        let mean = known.iter().sum::<f64>() / known.len().max(1) as f64;
        let mut change = Change::None;
        for (upstream, weight) in self.upstreams.iter_mut().zip(weights) {
            let factor = (!known.is_empty() && mean > 0.0).then(|| {
                let ratio = weight.unwrap_or(mean) / mean;
                ((ratio * 1000.0).round() as u64)
                    .clamp(FACTOR_RANGE_PERMILLE.0, FACTOR_RANGE_PERMILLE.1)
            });
            if upstream.load.factor_permille != factor {
                upstream.load.factor_permille = factor;
                if upstream.eligible() {
                    change = Change::Offer;
                }
            }
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(members: usize) -> Pool {
        let mut pool = Pool {
            load: Some(LoadPolicy {
                blackout_ms: 1_000,
                expire_ms: 5_000,
                error_penalty_milli: 1_000,
            }),
            ..Pool::default()
        };
        for i in 0..members {
            pool.register(&address(i), &[], 60_000, None, 0).unwrap();
        }
        pool
    }

    fn address(i: usize) -> String {
        format!("10.0.0.{}:80", i + 1)
    }

    fn figure(i: usize, qps: f64, eps: f64, utilization: f64, reported_ms: u64) -> MemberLoad {
        MemberLoad {
            address: address(i),
            qps,
            eps,
            utilization: Some(utilization),
            reported_ms: Some(reported_ms),
        }
    }

    fn weights(pool: &Pool, now_ms: u64) -> Vec<u32> {
        pool.offer(now_ms)
            .upstreams
            .iter()
            .map(|o| o.weight)
            .collect()
    }

    #[test]
    fn a_member_twice_as_loaded_per_request_gets_half_the_weight_after_the_blackout() {
        let mut pool = pool(2);
        // Same traffic; the second is twice as busy for it (a noisy neighbour, a slow query).
        let report = |now| {
            [
                figure(0, 100.0, 0.0, 0.3, now),
                figure(1, 100.0, 0.0, 0.6, now),
            ]
        };
        assert_eq!(pool.loads(&report(0), 0), Change::None, "blackout");
        assert_eq!(weights(&pool, 0), [100, 100]);
        assert_eq!(pool.loads(&report(1_000), 1_000), Change::Offer);
        // 100/0.3 = 333, 100/0.6 = 167; mean 250: factors 1.333 and 0.667.
        assert_eq!(weights(&pool, 1_000), [134, 67]);
        // Reports stop: after expire it falls back to its own weight.
        pool.loads(&[figure(0, 100.0, 0.0, 0.3, 6_000)], 6_000);
        assert_eq!(
            weights(&pool, 6_000),
            [100, 100],
            "one weight left: the mean"
        );
    }

    #[test]
    fn errors_weigh_like_utilization_and_nonsense_is_clamped_never_a_crash() {
        let mut pool = pool(3);
        let figures = [
            figure(0, 100.0, 0.0, 0.5, 0),
            // Half its answers are errors: 0.5 + 0.5 × 1.0.
            figure(1, 100.0, 50.0, 0.5, 0),
            // Nonsense: NaN utilization (no weight: the mean), negative rates.
            MemberLoad {
                utilization: Some(f64::NAN),
                ..figure(2, -5.0, f64::INFINITY, 0.0, 0)
            },
        ];
        pool.loads(&figures, 0);
        pool.loads(&figures, 2_000);
        // Weights 200 and 100, mean 150; the third gets the mean.
        assert_eq!(weights(&pool, 2_000), [134, 67, 100]);
        // A huge utilization is read as 1; a zero one gives no weight (nothing to divide by).
        let extreme = [
            figure(0, 100.0, 0.0, 1e9, 2_000),
            figure(1, 100.0, 0.0, 0.0, 2_000),
        ];
        pool.loads(&extreme, 3_000);
        let got = weights(&pool, 3_000);
        assert!(got.iter().all(|w| *w >= 1), "{got:?}");
    }

    #[test]
    fn off_without_settings_and_the_factor_multiplies_slow_start() {
        let mut off = pool(2);
        off.load = None;
        assert_eq!(
            off.loads(&[figure(0, 1.0, 0.0, 1.0, 0)], 5_000),
            Change::None
        );
        assert_eq!(weights(&off, 5_000), [100, 100]);
        let state = LoadState {
            factor_permille: Some(500),
            reporting_since_ms: None,
        };
        assert_eq!(state.apply(5), 3, "half of a twentieth, rounded up");
        assert_eq!(state.apply(1), 1, "never below 1");
        assert!(LoadPolicy {
            blackout_ms: 5_000,
            expire_ms: 5_000,
            error_penalty_milli: 0
        }
        .checked()
        .is_err());
    }
}

//! Outlier ejection, as Envoy does it: a member whose requests fail several times in a row (a
//! 5xx, a refused dial, a timeout, a connection closed before the answer) is taken out of the
//! offer for a while, longer each time it is ejected again, never more than a share of the pool
//! at once and never the last member. It comes back by itself when its time is up (ramping
//! again under slow start), or earlier after a passing active check if the pool says so.
//!
//! The host counts the failures in a row per member on the request path (it sees every
//! attempt; a call into the registry per request would cost more than the request's choice)
//! and reports a member when its count reaches the pool's `consecutive_failures`; what happens
//! then is decided here.

use serde::{Deserialize, Serialize};

use crate::pool::Pool;
use crate::RegistryError;

/// The pool's `outlier { ... }` settings (a field left out takes its default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierPolicy {
    /// Failures in a row that eject a member.
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times this.
    pub eject_ms: u64,
    /// The longest ejection.
    pub max_eject_ms: u64,
    /// At most this share of the pool's members is ejected at once (at least one member may
    /// be, and never the last one).
    pub max_percent: u32,
    /// A passing active check ends an ejection early.
    pub uneject_on_pass: bool,
}

impl Default for OutlierPolicy {
    /// Envoy's defaults: 5 in a row, 30 s growing to at most 300 s, 10 % of the pool.
    fn default() -> Self {
        OutlierPolicy {
            consecutive_failures: 5,
            eject_ms: 30_000,
            max_eject_ms: 300_000,
            max_percent: 10,
            uneject_on_pass: false,
        }
    }
}

impl OutlierPolicy {
    /// Checks the settings a config gives.
    pub fn checked(self) -> Result<Self, RegistryError> {
        let bad = |why: &str| Err(RegistryError::BadRequest(format!("outlier: {why}")));
        if self.consecutive_failures == 0 {
            return bad("consecutive_failures must be at least 1");
        }
        if self.eject_ms == 0 || self.max_eject_ms < self.eject_ms {
            return bad("eject must be above 0 and max_eject at least eject");
        }
        if self.max_percent == 0 || self.max_percent > 100 {
            return bad("max_percent must be 1 to 100");
        }
        Ok(self)
    }
}

/// A member's ejection state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ejection {
    /// Out of the offer until then (host clock, ms).
    pub ejected_until_ms: Option<u64>,
    /// How many times in a row it was ejected: the next ejection lasts one more `eject`. One
    /// is forgiven for each `eject` spent in the offer since.
    pub ejections: u32,
    /// Since when it has been back (or since its last forgiveness).
    #[serde(skip)]
    pub calm_since_ms: u64,
}

/// What a report of failures in a row did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ejected.
    Ejected {
        /// Out of the offer until then.
        until_ms: u64,
        /// Its n-th ejection in a row.
        times: u32,
    },
    /// Not ejected: the pool already has as many members out as it may (or only this one).
    Capped {
        /// Members out now.
        ejected: usize,
        /// Members that may be out at once.
        allowed: usize,
    },
    /// Not ejected: the pool has no outlier settings, or the member is not offered anyway.
    Ignored,
}

impl Pool {
    /// The host saw `address` fail the pool's `consecutive_failures` times in a row.
    pub fn failing(&mut self, address: &str, now_ms: u64) -> Result<Outcome, RegistryError> {
        let index = self
            .upstreams
            .iter()
            .position(|u| u.address == address)
            .ok_or_else(|| RegistryError::UnknownUpstream(address.to_owned()))?;
        let Some(policy) = self.outlier else {
            return Ok(Outcome::Ignored);
        };
        if !self.upstreams[index].eligible() {
            return Ok(Outcome::Ignored);
        }
        // Members that would be offered but for an ejection, and those ejected among them.
        let in_play = self.upstreams.iter().filter(|u| u.offerable()).count();
        let ejected = self
            .upstreams
            .iter()
            .filter(|u| u.offerable() && u.ejection.ejected_until_ms.is_some())
            .count();
        let share = in_play * policy.max_percent as usize / 100;
        let allowed = share.max(1).min(in_play.saturating_sub(1));
        if ejected >= allowed {
            return Ok(Outcome::Capped { ejected, allowed });
        }
        let upstream = &mut self.upstreams[index];
        upstream.ejection.ejections = upstream.ejection.ejections.saturating_add(1);
        let times = upstream.ejection.ejections;
        let length = policy
            .eject_ms
            .saturating_mul(u64::from(times))
            .min(policy.max_eject_ms);
        let until_ms = now_ms.saturating_add(length);
        upstream.ejection.ejected_until_ms = Some(until_ms);
        self.eligibility_changed(index, true, now_ms);
        Ok(Outcome::Ejected { until_ms, times })
    }

    /// Brings back members whose ejection is over (or every ejected one of `only`, early), and
    /// forgives one ejection for each `eject` a member spent in the offer. Returns the members
    /// that came back.
    pub fn return_ejected(&mut self, now_ms: u64, only: Option<&str>) -> Vec<String> {
        let eject_ms = self.outlier.map_or(0, |p| p.eject_ms);
        let mut back = Vec::new();
        for index in 0..self.upstreams.len() {
            let upstream = &mut self.upstreams[index];
            let due = match only {
                Some(address) => upstream.address == address,
                None => upstream
                    .ejection
                    .ejected_until_ms
                    .is_some_and(|until| until <= now_ms),
            };
            if upstream.ejection.ejected_until_ms.is_some() && due {
                let was = upstream.eligible();
                upstream.ejection.ejected_until_ms = None;
                upstream.ejection.calm_since_ms = now_ms;
                back.push(upstream.address.clone());
                self.eligibility_changed(index, was, now_ms);
            } else if upstream.ejection.ejected_until_ms.is_none()
                && upstream.ejection.ejections > 0
                && eject_ms > 0
                && now_ms.saturating_sub(upstream.ejection.calm_since_ms) >= eject_ms
            {
                upstream.ejection.ejections -= 1;
                upstream.ejection.calm_since_ms = now_ms;
            }
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthPolicy;

    fn pool_with(members: usize, policy: OutlierPolicy) -> Pool {
        let mut pool = Pool {
            policy: HealthPolicy::default(),
            outlier: Some(policy),
            ..Pool::default()
        };
        for i in 0..members {
            pool.register(&format!("10.0.0.{}:80", i + 1), &[], 15_000, None, 0)
                .unwrap();
        }
        pool
    }

    fn address(i: usize) -> String {
        format!("10.0.0.{}:80", i + 1)
    }

    #[test]
    fn an_ejection_grows_with_each_one_up_to_the_maximum_and_is_forgiven_over_time() {
        let policy = OutlierPolicy {
            max_percent: 50,
            ..OutlierPolicy::default()
        };
        let mut pool = pool_with(4, policy);
        let a = address(0);
        let mut now = 1_000;
        let mut lengths = Vec::new();
        for _ in 0..12 {
            let Outcome::Ejected { until_ms, .. } = pool.failing(&a, now).unwrap() else {
                panic!("not ejected");
            };
            lengths.push((until_ms - now) / 1000);
            assert!(!pool.offered_addresses(now).contains(&a));
            // Still out a moment before its time, back at it.
            assert!(pool.return_ejected(until_ms - 1, None).is_empty());
            assert_eq!(pool.return_ejected(until_ms, None), vec![a.clone()]);
            assert!(pool.offered_addresses(until_ms).contains(&a));
            now = until_ms;
        }
        assert_eq!(
            lengths,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
        // Back and well for three ejection lengths: three ejections forgiven.
        for step in 1..=3 {
            pool.return_ejected(now + step * 30_000, None);
        }
        assert_eq!(pool.upstreams[0].ejection.ejections, 9);
    }

    #[test]
    fn never_more_than_the_share_and_never_the_last_member() {
        // 10 % of 20 members is 2.
        let mut pool = pool_with(20, OutlierPolicy::default());
        assert!(matches!(
            pool.failing(&address(0), 0),
            Ok(Outcome::Ejected { .. })
        ));
        assert!(matches!(
            pool.failing(&address(1), 0),
            Ok(Outcome::Ejected { .. })
        ));
        assert_eq!(
            pool.failing(&address(2), 0),
            Ok(Outcome::Capped {
                ejected: 2,
                allowed: 2
            })
        );
        // A small pool may still eject one member (10 % of 4 rounds down to 0)...
        let mut small = pool_of(4);
        assert!(matches!(
            small.failing(&address(0), 0),
            Ok(Outcome::Ejected { .. })
        ));
        assert!(matches!(
            small.failing(&address(1), 0),
            Ok(Outcome::Capped { .. })
        ));
        // ...but a pool of one never ejects it: a bad deploy keeps serving.
        let mut single = pool_of(1);
        assert_eq!(
            single.failing(&address(0), 0),
            Ok(Outcome::Capped {
                ejected: 0,
                allowed: 0
            })
        );
        assert_eq!(single.offered_addresses(0), vec![address(0)]);
        // Every member failing at once (a bad deploy): at most max_percent out.
        let mut all = pool_with(10, OutlierPolicy::default());
        let ejected = (0..10)
            .filter(|i| matches!(all.failing(&address(*i), 0), Ok(Outcome::Ejected { .. })))
            .count();
        assert_eq!(ejected, 1);
        assert_eq!(all.offered_addresses(0).len(), 9);
    }

    fn pool_of(members: usize) -> Pool {
        pool_with(members, OutlierPolicy::default())
    }

    #[test]
    fn without_settings_or_for_a_member_not_offered_nothing_happens() {
        let mut off = pool_of(3);
        off.outlier = None;
        assert_eq!(off.failing(&address(0), 0), Ok(Outcome::Ignored));
        let mut pool = pool_of(3);
        pool.drain(&address(0)).unwrap();
        assert_eq!(pool.failing(&address(0), 0), Ok(Outcome::Ignored));
        assert!(matches!(
            pool.failing("10.9.9.9:80", 0),
            Err(RegistryError::UnknownUpstream(_))
        ));
    }

    #[test]
    fn an_ejected_member_comes_back_through_slow_start() {
        let mut pool = pool_with(
            3,
            OutlierPolicy {
                max_percent: 50,
                ..OutlierPolicy::default()
            },
        );
        pool.slow_start_ms = 10_000;
        // Settled members serve from the start.
        let settled_at = 20_000;
        let Outcome::Ejected { until_ms, .. } = pool.failing(&address(0), settled_at).unwrap()
        else {
            panic!("not ejected");
        };
        pool.return_ejected(until_ms, None);
        let offer = pool.offer(until_ms);
        assert_eq!(offer.upstreams[0].weight, 5, "a twentieth of 100 at first");
        assert_eq!(pool.offer(until_ms + 10_000).upstreams[0].weight, 100);
    }

    #[test]
    fn early_return_of_one_member() {
        let mut pool = pool_with(
            3,
            OutlierPolicy {
                max_percent: 50,
                ..OutlierPolicy::default()
            },
        );
        pool.failing(&address(1), 0).unwrap();
        assert_eq!(pool.return_ejected(1, Some(&address(1))), vec![address(1)]);
        assert_eq!(pool.offered_addresses(1).len(), 3);
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            OutlierPolicy {
                consecutive_failures: 0,
                ..OutlierPolicy::default()
            },
            OutlierPolicy {
                eject_ms: 0,
                ..OutlierPolicy::default()
            },
            OutlierPolicy {
                max_eject_ms: 1,
                ..OutlierPolicy::default()
            },
            OutlierPolicy {
                max_percent: 101,
                ..OutlierPolicy::default()
            },
        ] {
            assert!(bad.checked().is_err(), "{bad:?}");
        }
        assert!(OutlierPolicy::default().checked().is_ok());
    }
}

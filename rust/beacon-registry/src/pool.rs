//! One pool: its upstreams in registration order, each with a lease, a health verdict, a
//! draining flag and a weight; the pool's admission policy; and slow start, which ramps a member
//! that becomes eligible while settled members already serve from a twentieth of its weight to
//! all of it over the pool's window (a fresh deployment, where no member is settled yet, is not
//! throttled).

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::admission::{Admission, OwnSockets};
use crate::declarations::PoolSettings;
use crate::health::{judge, HealthCount, HealthPolicy, ProbeResult};
use crate::load_weights::{LoadPolicy, LoadState};
use crate::outlier::{Ejection, OutlierPolicy};
use crate::{Change, RegistryError};

/// Most upstreams in one pool.
pub const MAX_UPSTREAMS: usize = 1024;
/// Shortest and longest lease a companion may ask for, in milliseconds.
pub const LEASE_RANGE_MS: (u64, u64) = (1_000, 300_000);
/// The lease when none is asked for.
pub const DEFAULT_LEASE_MS: u64 = 15_000;
/// The weight when none is given; 0 keeps a member on standby (registered, checked, not offered).
pub const DEFAULT_WEIGHT: u32 = 100;
/// The largest weight.
pub const MAX_WEIGHT: u32 = 10_000;
/// Where slow start begins: this fraction of the member's weight.
const SLOW_START_FLOOR: u64 = 20;
/// How often the host asks for the offer again while a member ramps.
pub const RAMP_REFRESH_MS: u64 = 100;

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
    /// Its share relative to the others' (0 = standby).
    pub weight: u32,
    /// What its DNS name resolved to when it was last judged (empty for an IP address or a
    /// Unix socket): Caddy dials the first of these, never the name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<IpAddr>,
    /// Since when it has been offered (healthy, not draining, weight above 0).
    #[serde(skip)]
    pub eligible_since_ms: Option<u64>,
    /// When its slow start began, while it lasts.
    #[serde(skip)]
    pub ramp_from_ms: Option<u64>,
    /// Outlier ejection (outlier.rs).
    #[serde(flatten)]
    pub ejection: Ejection,
    /// Its load-aware weight (load_weights.rs).
    #[serde(flatten)]
    pub load: LoadState,
}

impl Upstream {
    /// Offered to Caddy: healthy, not draining, not on standby, not ejected.
    pub fn eligible(&self) -> bool {
        self.offerable() && self.ejection.ejected_until_ms.is_none()
    }

    /// Would be offered but for an ejection: healthy, not draining, not on standby.
    pub fn offerable(&self) -> bool {
        self.healthy && !self.draining && self.weight > 0
    }

    /// What Caddy and the health checks dial: the address admitted. A member registered by
    /// name is dialled at the first address the name resolved to when it was judged; dialling
    /// the name would resolve it again, to wherever it points by then (DNS rebinding).
    pub fn dial(&self) -> String {
        let port = self
            .address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        match (self.resolved.first(), port) {
            (Some(ip), Some(port)) => SocketAddr::new(*ip, port).to_string(),
            _ => self.address.clone(),
        }
    }
}

/// A pool of upstreams, as one or more `dynamic beacon <pool>` blocks declare it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// Health thresholds.
    pub policy: HealthPolicy,
    /// Slow start's window (0: off).
    pub slow_start_ms: u64,
    /// Outlier ejection (None: off).
    pub outlier: Option<OutlierPolicy>,
    /// Load-aware weights from load reports (None: off).
    pub load: Option<LoadPolicy>,
    /// Which addresses may register.
    #[serde(skip)]
    pub admission: Admission,
    /// Upstreams, in registration order.
    pub upstreams: Vec<Upstream>,
}

/// One member as offered, with the weight it gets now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Offered {
    /// The member, as registered.
    pub address: String,
    /// What Caddy dials (see [`Upstream::dial`]).
    pub dial: String,
    /// Its weight now: the configured one, or less while it ramps.
    pub weight: u32,
}

/// What the host offers Caddy for a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Offer {
    /// Eligible members in registration order.
    pub upstreams: Vec<Offered>,
    /// Ask again after this long: a member is ramping (None: only on the next change).
    pub refresh_in_ms: Option<u64>,
}

impl Pool {
    /// Takes on a config's settings. Members the new admission policy refuses are not removed
    /// here: see [`Pool::refused_members`].
    pub fn configure(&mut self, settings: &PoolSettings) {
        self.policy = HealthPolicy {
            passes: settings.policy.passes.max(1),
            fails: settings.policy.fails.max(1),
        };
        self.slow_start_ms = settings.slow_start_ms;
        self.outlier = settings.outlier;
        self.load = settings.load;
        self.admission = settings.admission.clone();
    }

    /// The members the pool's admission policy refuses now (a stricter `allow`, or this Caddy
    /// listening somewhere new), each with why; judged by the addresses they were admitted at.
    pub fn refused_members(&self, own: &OwnSockets) -> Vec<(String, String)> {
        self.upstreams
            .iter()
            .filter_map(
                |u| match self.admission.admit(&u.address, &u.resolved, own) {
                    Err(error) if error.status() == 403 => {
                        Some((u.address.clone(), error.to_string()))
                    }
                    _ => None,
                },
            )
            .collect()
    }

    fn find(&mut self, address: &str) -> Option<&mut Upstream> {
        self.upstreams.iter_mut().find(|u| u.address == address)
    }

    /// Registers `address` (with `weight`, or the default), or renews it (a new registration of
    /// a draining upstream means its companion started again: it is served again; a weight
    /// given replaces the one it had). `resolved` is what its name resolved to, judged already.
    pub fn register(
        &mut self,
        address: &str,
        resolved: &[IpAddr],
        lease_ms: u64,
        weight: Option<u32>,
        now_ms: u64,
    ) -> Result<Change, RegistryError> {
        let lease_ms = lease_ms.clamp(LEASE_RANGE_MS.0, LEASE_RANGE_MS.1);
        let weight = weight.map(check_weight).transpose()?;
        if let Some(index) = self.index(address) {
            let upstream = &mut self.upstreams[index];
            let before = (upstream.eligible(), upstream.weight, upstream.dial());
            upstream.resolved = resolved.to_vec();
            upstream.lease_ms = lease_ms;
            upstream.lease_expires_ms = now_ms.saturating_add(lease_ms);
            upstream.draining = false;
            upstream.weight = weight.unwrap_or(upstream.weight);
            self.eligibility_changed(index, before.0, now_ms);
            let upstream = &self.upstreams[index];
            return Ok(
                if (upstream.eligible(), upstream.weight, upstream.dial()) == before {
                    Change::None
                } else {
                    Change::Offer
                },
            );
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
            weight: weight.unwrap_or(DEFAULT_WEIGHT),
            resolved: resolved.to_vec(),
            eligible_since_ms: None,
            ramp_from_ms: None,
            ejection: Ejection::default(),
            load: LoadState::default(),
        });
        self.eligibility_changed(self.upstreams.len() - 1, false, now_ms);
        Ok(Change::Offer)
    }

    /// Sets the weight of a known upstream (0: standby).
    pub fn set_weight(
        &mut self,
        address: &str,
        weight: u32,
        now_ms: u64,
    ) -> Result<Change, RegistryError> {
        let weight = check_weight(weight)?;
        let index = self
            .index(address)
            .ok_or_else(|| RegistryError::UnknownUpstream(address.to_owned()))?;
        let upstream = &mut self.upstreams[index];
        if upstream.weight == weight {
            return Ok(Change::None);
        }
        let was = upstream.eligible();
        upstream.weight = weight;
        self.eligibility_changed(index, was, now_ms);
        Ok(Change::Offer)
    }

    fn index(&self, address: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.address == address)
    }

    /// Settled: offered for longer than the slow-start window, and not ramping any more.
    fn settled(&self, upstream: &Upstream, now_ms: u64) -> bool {
        let window = self.slow_start_ms;
        upstream.eligible()
            && upstream
                .eligible_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= window)
            && upstream
                .ramp_from_ms
                .is_none_or(|from| now_ms.saturating_sub(from) >= window)
    }

    /// Keeps the slow-start bookkeeping of upstream `index` true after a change: one that just
    /// became eligible ramps when a settled member already serves; one that stopped forgets.
    pub(crate) fn eligibility_changed(&mut self, index: usize, was: bool, now_ms: u64) {
        let is = self.upstreams[index].eligible();
        if was == is {
            return;
        }
        let ramps = is
            && self.slow_start_ms > 0
            && self
                .upstreams
                .iter()
                .enumerate()
                .any(|(other, u)| other != index && self.settled(u, now_ms));
        let upstream = &mut self.upstreams[index];
        upstream.eligible_since_ms = is.then_some(now_ms);
        upstream.ramp_from_ms = ramps.then_some(now_ms);
    }

    /// The weight `upstream` gets at `now_ms`: its own, or, while it ramps, a share growing
    /// linearly from a twentieth of it (never below 1 for a member that is offered at all),
    /// times its load-aware factor when the pool has one.
    pub fn effective_weight(&self, upstream: &Upstream, now_ms: u64) -> u32 {
        upstream.load.apply(self.ramped_weight(upstream, now_ms))
    }

    fn ramped_weight(&self, upstream: &Upstream, now_ms: u64) -> u32 {
        let (Some(from), window) = (upstream.ramp_from_ms, self.slow_start_ms) else {
            return upstream.weight;
        };
        let elapsed = now_ms.saturating_sub(from);
        if window == 0 || elapsed >= window {
            return upstream.weight;
        }
        let share = elapsed.max(window / SLOW_START_FLOOR);
        let weight = (u64::from(upstream.weight) * share).div_ceil(window);
        u32::try_from(weight)
            .unwrap_or(upstream.weight)
            .clamp(1, upstream.weight.max(1))
    }

    /// When `upstream`'s slow start ends, while it ramps.
    pub fn ramp_until(&self, upstream: &Upstream, now_ms: u64) -> Option<u64> {
        let until = upstream.ramp_from_ms?.saturating_add(self.slow_start_ms);
        (until > now_ms).then_some(until)
    }

    /// Extends the lease of a known upstream; `resolved`, when given, is what its name resolves
    /// to now, judged already.
    pub fn renew(
        &mut self,
        address: &str,
        resolved: &[IpAddr],
        now_ms: u64,
    ) -> Result<Change, RegistryError> {
        let upstream = self
            .find(address)
            .ok_or_else(|| RegistryError::UnknownUpstream(address.to_owned()))?;
        upstream.lease_expires_ms = now_ms.saturating_add(upstream.lease_ms);
        if resolved.is_empty() || upstream.resolved == resolved {
            return Ok(Change::None);
        }
        let before = upstream.dial();
        upstream.resolved = resolved.to_vec();
        Ok(if upstream.dial() == before {
            Change::None
        } else {
            Change::Offer
        })
    }

    /// Stops offering `address` to new requests.
    pub fn drain(&mut self, address: &str) -> Result<Change, RegistryError> {
        let index = self
            .index(address)
            .ok_or_else(|| RegistryError::UnknownUpstream(address.to_owned()))?;
        let upstream = &mut self.upstreams[index];
        let was = upstream.eligible();
        if std::mem::replace(&mut upstream.draining, true) {
            return Ok(Change::None);
        }
        self.eligibility_changed(index, was, 0);
        Ok(Change::Offer)
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
    pub fn probed(
        &mut self,
        address: &str,
        probe: &ProbeResult,
        now_ms: u64,
    ) -> Result<Option<bool>, RegistryError> {
        let policy = self.policy;
        let index = self
            .index(address)
            .ok_or_else(|| RegistryError::UnknownUpstream(address.to_owned()))?;
        let upstream = &mut self.upstreams[index];
        let verdict = judge(probe);
        upstream.last_probe_ms = Some(now_ms);
        upstream.last_error = verdict.clone().err();
        let changed = upstream
            .count
            .count(verdict.is_ok(), upstream.healthy, policy);
        if let Some(healthy) = changed {
            let was = upstream.eligible();
            upstream.healthy = healthy;
            self.eligibility_changed(index, was, now_ms);
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

    /// What to offer Caddy at `now_ms`, in registration order: the eligible members, each with
    /// the weight it gets now. Ejection never empties a pool: when every member that is not
    /// ejected has gone (unhealthy, draining) since, the ejected ones are offered.
    pub fn offer(&self, now_ms: u64) -> Offer {
        let any_eligible = self.upstreams.iter().any(Upstream::eligible);
        let eligible = self.upstreams.iter().filter(move |u| {
            if any_eligible {
                u.eligible()
            } else {
                u.offerable()
            }
        });
        let upstreams = eligible
            .clone()
            .map(|u| Offered {
                address: u.address.clone(),
                dial: u.dial(),
                weight: self.effective_weight(u, now_ms),
            })
            .collect();
        let ramping = eligible
            .clone()
            .any(|u| self.ramp_until(u, now_ms).is_some());
        Offer {
            upstreams,
            refresh_in_ms: ramping.then_some(RAMP_REFRESH_MS),
        }
    }

    /// The addresses offered at `now_ms`, in order (for tests and logs).
    pub fn offered_addresses(&self, now_ms: u64) -> Vec<String> {
        self.offer(now_ms)
            .upstreams
            .into_iter()
            .map(|o| o.address)
            .collect()
    }
}

fn check_weight(weight: u32) -> Result<u32, RegistryError> {
    if weight > MAX_WEIGHT {
        return Err(RegistryError::BadRequest(format!(
            "weight {weight}: use 0 (standby) to {MAX_WEIGHT}"
        )));
    }
    Ok(weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool {
            policy: HealthPolicy {
                passes: 2,
                fails: 2,
            },
            ..Pool::default()
        }
    }

    fn slow(window_ms: u64) -> Pool {
        Pool {
            slow_start_ms: window_ms,
            ..Pool::default()
        }
    }

    fn weights(pool: &Pool, now_ms: u64) -> Vec<(String, u32)> {
        pool.offer(now_ms)
            .upstreams
            .into_iter()
            .map(|o| (o.address, o.weight))
            .collect()
    }

    fn refused() -> ProbeResult {
        ProbeResult {
            status: None,
            body: String::new(),
            error: Some("connection refused".into()),
        }
    }

    fn ok() -> ProbeResult {
        ProbeResult {
            status: Some(200),
            body: r#"{"status":"pass"}"#.into(),
            error: None,
        }
    }

    #[test]
    fn registration_is_idempotent_and_ordered() {
        let mut pool = pool();
        assert_eq!(
            pool.register("b:1", &[], 10_000, None, 0).unwrap(),
            Change::Offer
        );
        assert_eq!(
            pool.register("a:1", &[], 10_000, None, 0).unwrap(),
            Change::Offer
        );
        assert_eq!(
            pool.register("b:1", &[], 10_000, None, 5).unwrap(),
            Change::None,
            "a second registration renews"
        );
        assert_eq!(pool.offered_addresses(0), ["b:1", "a:1"]);
        assert_eq!(pool.upstreams[0].lease_expires_ms, 10_005);
    }

    #[test]
    fn leases_end_unless_renewed() {
        let mut pool = pool();
        pool.register("a:1", &[], 2_000, None, 0).unwrap();
        pool.register("b:1", &[], 2_000, None, 0).unwrap();
        pool.renew("a:1", &[], 1_500).unwrap();
        assert_eq!(pool.expire(2_000), ["b:1"]);
        assert_eq!(pool.offered_addresses(0), ["a:1"]);
        assert_eq!(pool.expire(3_500), ["a:1"]);
        assert!(matches!(
            pool.renew("a:1", &[], 3_600),
            Err(RegistryError::UnknownUpstream(_))
        ));
        // Leases are clamped to a sane range.
        pool.register("c:1", &[], 5, None, 0).unwrap();
        assert_eq!(pool.upstreams[0].lease_ms, LEASE_RANGE_MS.0);
    }

    #[test]
    fn a_name_is_dialled_at_the_address_it_was_admitted_at() {
        let mut pool = pool();
        let first: [IpAddr; 2] = ["10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap()];
        pool.register("app.internal:8000", &first, 10_000, None, 0)
            .unwrap();
        assert_eq!(pool.upstreams[0].dial(), "10.0.0.5:8000");
        assert_eq!(pool.offer(0).upstreams[0].dial, "10.0.0.5:8000");
        assert_eq!(
            pool.renew("app.internal:8000", &first[1..], 5).unwrap(),
            Change::Offer,
            "moved: the offer changes"
        );
        assert_eq!(pool.upstreams[0].dial(), "10.0.0.6:8000");
        assert_eq!(
            pool.renew("app.internal:8000", &[], 6).unwrap(),
            Change::None,
            "not resolved this time: the admitted one stays"
        );
        assert_eq!(pool.upstreams[0].dial(), "10.0.0.6:8000");
        pool.register("[::1]:8001", &[], 10_000, None, 0).unwrap();
        assert_eq!(pool.upstreams[1].dial(), "[::1]:8001");
        pool.register(
            "v6.internal:80",
            &["fd00::5".parse().unwrap()],
            10_000,
            None,
            0,
        )
        .unwrap();
        assert_eq!(pool.upstreams[2].dial(), "[fd00::5]:80");
    }

    #[test]
    fn draining_stops_offers_but_keeps_the_upstream() {
        let mut pool = pool();
        pool.register("a:1", &[], 10_000, None, 0).unwrap();
        pool.register("b:1", &[], 10_000, None, 0).unwrap();
        assert_eq!(pool.drain("a:1").unwrap(), Change::Offer);
        assert_eq!(pool.drain("a:1").unwrap(), Change::None);
        assert_eq!(pool.offered_addresses(0), ["b:1"]);
        assert_eq!(pool.upstreams.len(), 2);
        // Its companion started again: served again.
        assert_eq!(
            pool.register("a:1", &[], 10_000, None, 1).unwrap(),
            Change::Offer
        );
        assert_eq!(pool.offered_addresses(0), ["a:1", "b:1"]);
        assert_eq!(pool.remove("a:1").unwrap(), Change::Offer);
        assert!(pool.remove("a:1").is_err());
    }

    #[test]
    fn probes_move_upstreams_out_and_back_in() {
        let mut pool = pool();
        pool.register("a:1", &[], 10_000, None, 0).unwrap();
        assert_eq!(pool.probed("a:1", &refused(), 1).unwrap(), None);
        assert_eq!(pool.probed("a:1", &refused(), 2).unwrap(), Some(false));
        assert_eq!(pool.offered_addresses(0), Vec::<String>::new());
        assert_eq!(
            pool.upstreams[0].last_error.as_deref(),
            Some("connection refused")
        );
        assert_eq!(pool.probed("a:1", &ok(), 3).unwrap(), None);
        assert_eq!(pool.probed("a:1", &ok(), 4).unwrap(), Some(true));
        assert_eq!(pool.offered_addresses(0), ["a:1"]);
    }

    #[test]
    fn a_pool_has_a_cap() {
        let mut pool = pool();
        for i in 0..MAX_UPSTREAMS {
            pool.register(
                &format!("10.0.{}.{}:80", i / 256, i % 256),
                &[],
                10_000,
                None,
                0,
            )
            .unwrap();
        }
        assert!(matches!(
            pool.register("10.9.9.9:80", &[], 10_000, None, 0),
            Err(RegistryError::Full(_))
        ));
    }

    #[test]
    fn weights_set_shares_and_zero_is_standby() {
        let mut pool = pool();
        pool.register("a:1", &[], 10_000, Some(10), 0).unwrap();
        pool.register("b:1", &[], 10_000, None, 0).unwrap();
        assert_eq!(weights(&pool, 0), [("a:1".into(), 10), ("b:1".into(), 100)]);
        assert_eq!(pool.set_weight("a:1", 0, 1).unwrap(), Change::Offer);
        assert_eq!(
            pool.offered_addresses(1),
            ["b:1"],
            "standby: known, not offered"
        );
        assert_eq!(pool.set_weight("a:1", 0, 2).unwrap(), Change::None);
        assert_eq!(
            pool.register("a:1", &[], 10_000, Some(50), 3).unwrap(),
            Change::Offer
        );
        assert_eq!(
            pool.register("a:1", &[], 10_000, None, 4).unwrap(),
            Change::None,
            "no weight given keeps the one it has"
        );
        assert_eq!(weights(&pool, 4)[0].1, 50);
        assert!(matches!(
            pool.set_weight("a:1", MAX_WEIGHT + 1, 5),
            Err(RegistryError::BadRequest(_))
        ));
        assert!(matches!(
            pool.set_weight("z:1", 1, 5),
            Err(RegistryError::UnknownUpstream(_))
        ));
    }

    #[test]
    fn a_member_joining_a_settled_pool_ramps_over_the_window() {
        let mut pool = slow(10_000);
        pool.register("old:1", &[], 60_000, None, 0).unwrap();
        // The first member of a fresh pool is not throttled; after the window it is settled.
        assert_eq!(weights(&pool, 0), [("old:1".into(), 100)]);
        pool.register("new:1", &[], 60_000, None, 20_000).unwrap();
        assert_eq!(
            weights(&pool, 20_000)[1],
            ("new:1".into(), 5),
            "starts at a twentieth"
        );
        assert_eq!(weights(&pool, 25_000)[1], ("new:1".into(), 50));
        assert_eq!(pool.offer(25_000).refresh_in_ms, Some(RAMP_REFRESH_MS));
        assert_eq!(weights(&pool, 30_000)[1], ("new:1".into(), 100));
        assert_eq!(pool.offer(30_000).refresh_in_ms, None);
        assert_eq!(pool.ramp_until(&pool.upstreams[1], 25_000), Some(30_000));
    }

    #[test]
    fn a_fresh_deployment_is_not_throttled() {
        let mut pool = slow(10_000);
        for (i, address) in ["a:1", "b:1", "c:1"].iter().enumerate() {
            pool.register(address, &[], 10_000, None, i as u64 * 1_000)
                .unwrap();
        }
        assert!(
            weights(&pool, 2_000).iter().all(|(_, w)| *w == 100),
            "{:?}",
            weights(&pool, 2_000)
        );
    }

    #[test]
    fn coming_back_healthy_or_from_standby_ramps_again() {
        let mut pool = Pool {
            policy: HealthPolicy {
                passes: 1,
                fails: 1,
            },
            ..slow(10_000)
        };
        pool.register("a:1", &[], 60_000, None, 0).unwrap();
        pool.register("b:1", &[], 60_000, None, 0).unwrap();
        pool.probed("b:1", &refused(), 20_000).unwrap();
        assert_eq!(pool.offered_addresses(20_000), ["a:1"]);
        pool.probed("b:1", &ok(), 30_000).unwrap();
        assert_eq!(weights(&pool, 30_000)[1].1, 5);
        pool.set_weight("b:1", 0, 45_000).unwrap();
        pool.set_weight("b:1", 200, 50_000).unwrap();
        assert_eq!(
            weights(&pool, 50_000)[1].1,
            10,
            "a twentieth of its new weight"
        );
        // Slow start off: at once.
        pool.slow_start_ms = 0;
        pool.set_weight("b:1", 0, 60_000).unwrap();
        pool.set_weight("b:1", 100, 60_001).unwrap();
        assert_eq!(weights(&pool, 60_001)[1].1, 100);
    }
}

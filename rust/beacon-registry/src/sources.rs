//! Members a source other than the companions owns: a Kubernetes Service's EndpointSlices, which
//! the Go host watches (caddy/kubernetes.go) and sends here whole, at every change and at every
//! renewal. What they mean is decided here, beside the companions' registrations:
//!
//! - a ready endpoint joins (judged by the pool's admission policy like any registration);
//! - one that is not ready (terminating, or failing its readiness probe) drains: no new
//!   requests, and it is served again when it turns ready;
//! - one the source no longer lists leaves;
//! - the members a source owns hold a lease each sync renews ([`SOURCE_LEASE_MS`]), so they
//!   outlive a lost watch and leave once the host stops syncing (its Caddy is gone);
//! - an endpoint the pool refuses is reported once while the source lists it, not at every sync;
//! - an address a companion registered is left alone.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::address::check_dial_address;
use crate::admission::OwnSockets;
use crate::pool::Pool;
use crate::{Change, RegistryError};

/// How long a source's member lasts without a sync (the host syncs every 15 s).
pub const SOURCE_LEASE_MS: u64 = 60_000;

/// One endpoint as the source lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// What Caddy dials.
    pub address: String,
    /// Ready for traffic (conditions unset count as ready, as Kubernetes says).
    pub ready: bool,
}

/// What one source owns in one pool, and what it was refused.
#[derive(Clone, Debug, Default)]
pub struct SourceBook {
    owned: BTreeSet<String>,
    refused: BTreeSet<String>,
}

/// What a sync did to the pool, for the reply's events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// The offer changed.
    pub changed: bool,
    /// (event name, address, reason).
    pub events: Vec<(&'static str, String, Option<String>)>,
}

/// Every source's book, by (pool, source).
#[derive(Debug, Default)]
pub struct Sources {
    books: BTreeMap<(String, String), SourceBook>,
}

impl Sources {
    /// Brings `pool`'s members from `source` to what `endpoints` say, at `now_ms`.
    pub fn sync(
        &mut self,
        pool_name: &str,
        pool: &mut Pool,
        source: &str,
        endpoints: &[Endpoint],
        own: &OwnSockets,
        now_ms: u64,
    ) -> Result<Synced, RegistryError> {
        if source.is_empty() {
            return Err(RegistryError::BadRequest("a sync names its source".into()));
        }
        let book = self
            .books
            .entry((pool_name.to_owned(), source.to_owned()))
            .or_default();
        let mut synced = Synced::default();
        let mut listed = BTreeSet::new();
        for endpoint in endpoints {
            let address = endpoint.address.as_str();
            listed.insert(address.to_owned());
            // Whether it is a member, and draining.
            let member = pool
                .upstreams
                .iter()
                .find(|u| u.address == address)
                .map(|u| u.draining);
            let owned = book.owned.contains(address);
            if member.is_some() && !owned {
                continue; // a companion's registration
            }
            if !endpoint.ready {
                match member {
                    Some(false) => {
                        pool.drain(address)?;
                        synced.changed = true;
                        synced.events.push(("draining", address.to_owned(), None));
                    }
                    Some(true) => {}
                    None => {
                        book.owned.remove(address);
                    }
                }
                continue;
            }
            let judged =
                check_dial_address(address).and_then(|()| pool.admission.admit(address, &[], own));
            if let Err(refusal) = judged {
                if book.refused.insert(address.to_owned()) {
                    synced
                        .events
                        .push(("refused", address.to_owned(), Some(refusal.to_string())));
                }
                continue;
            }
            book.refused.remove(address);
            if pool.register(address, &[], SOURCE_LEASE_MS, None, now_ms)? == Change::Offer {
                synced.changed = true;
            }
            if member.is_none() {
                synced.events.push(("registered", address.to_owned(), None));
            }
            book.owned.insert(address.to_owned());
        }
        let gone: Vec<String> = book
            .owned
            .iter()
            .filter(|a| !listed.contains(*a))
            .cloned()
            .collect();
        for address in gone {
            book.owned.remove(&address);
            if pool.remove(&address).is_ok() {
                synced.changed = true;
                synced.events.push(("removed", address, None));
            }
        }
        book.refused.retain(|address| listed.contains(address));
        // Renewed: the draining ones too (they leave when the source stops listing them).
        let owned: Vec<String> = book.owned.iter().cloned().collect();
        for address in owned {
            if pool.renew(&address, &[], now_ms).is_err() {
                book.owned.remove(&address); // gone meanwhile (removed through the admin API)
            }
        }
        Ok(synced)
    }

    /// Forgets what the sources of `pool` own (the pool is gone).
    pub fn forget_pool(&mut self, pool: &str) {
        self.books.retain(|(name, _), _| name != pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(address: &str) -> Endpoint {
        Endpoint {
            address: address.into(),
            ready: true,
        }
    }

    fn not_ready(address: &str) -> Endpoint {
        Endpoint {
            address: address.into(),
            ready: false,
        }
    }

    fn members(pool: &Pool) -> Vec<(String, bool)> {
        pool.upstreams
            .iter()
            .map(|u| (u.address.clone(), u.draining))
            .collect()
    }

    fn names(synced: &Synced) -> Vec<(&'static str, String)> {
        synced
            .events
            .iter()
            .map(|(name, address, _)| (*name, address.clone()))
            .collect()
    }

    #[test]
    fn endpoints_join_drain_come_back_and_leave_as_the_source_says() {
        let (mut sources, mut pool, own) =
            (Sources::default(), Pool::default(), OwnSockets::default());
        let synced = sources
            .sync(
                "app",
                &mut pool,
                "k8s",
                &[ready("10.0.0.1:80"), not_ready("10.0.0.2:80")],
                &own,
                0,
            )
            .unwrap();
        assert_eq!(
            names(&synced),
            [("registered", "10.0.0.1:80".into())],
            "an endpoint never ready is not registered"
        );
        assert_eq!(members(&pool), [("10.0.0.1:80".into(), false)]);
        let synced = sources
            .sync(
                "app",
                &mut pool,
                "k8s",
                &[not_ready("10.0.0.1:80"), ready("10.0.0.2:80")],
                &own,
                10,
            )
            .unwrap();
        assert_eq!(
            names(&synced),
            [
                ("draining", "10.0.0.1:80".into()),
                ("registered", "10.0.0.2:80".into())
            ]
        );
        let synced = sources
            .sync(
                "app",
                &mut pool,
                "k8s",
                &[ready("10.0.0.1:80"), ready("10.0.0.2:80")],
                &own,
                20,
            )
            .unwrap();
        assert!(
            synced.changed && synced.events.is_empty(),
            "served again: {synced:?}"
        );
        assert_eq!(
            members(&pool),
            [("10.0.0.1:80".into(), false), ("10.0.0.2:80".into(), false)]
        );
        let synced = sources
            .sync("app", &mut pool, "k8s", &[ready("10.0.0.2:80")], &own, 30)
            .unwrap();
        assert_eq!(names(&synced), [("removed", "10.0.0.1:80".into())]);
        let synced = sources
            .sync("app", &mut pool, "k8s", &[], &own, 40)
            .unwrap();
        assert_eq!(names(&synced), [("removed", "10.0.0.2:80".into())]);
        assert!(pool.upstreams.is_empty());
    }

    #[test]
    fn each_sync_renews_what_the_source_owns_and_a_silent_source_lets_it_lapse() {
        let (mut sources, mut pool, own) =
            (Sources::default(), Pool::default(), OwnSockets::default());
        sources
            .sync(
                "app",
                &mut pool,
                "k8s",
                &[ready("10.0.0.1:80"), ready("10.0.0.2:80")],
                &own,
                0,
            )
            .unwrap();
        sources
            .sync(
                "app",
                &mut pool,
                "k8s",
                &[ready("10.0.0.1:80"), not_ready("10.0.0.2:80")],
                &own,
                1_000,
            )
            .unwrap();
        for minute in 1..=5 {
            sources
                .sync(
                    "app",
                    &mut pool,
                    "k8s",
                    &[ready("10.0.0.1:80"), not_ready("10.0.0.2:80")],
                    &own,
                    minute * 60_000,
                )
                .unwrap();
            assert!(
                pool.expire(minute * 60_000 + 1).is_empty(),
                "renewed, draining one included"
            );
        }
        assert_eq!(
            pool.expire(5 * 60_000 + SOURCE_LEASE_MS),
            ["10.0.0.1:80", "10.0.0.2:80"]
        );
        // Lost meanwhile: a ready endpoint comes back at the next sync, a draining one stays gone.
        let synced = sources
            .sync(
                "app",
                &mut pool,
                "k8s",
                &[ready("10.0.0.1:80"), not_ready("10.0.0.2:80")],
                &own,
                400_000,
            )
            .unwrap();
        assert_eq!(names(&synced), [("registered", "10.0.0.1:80".into())]);
        assert_eq!(members(&pool), [("10.0.0.1:80".into(), false)]);
    }

    #[test]
    fn a_refused_endpoint_is_reported_once_while_listed_and_a_companion_s_member_is_left_alone() {
        let (mut sources, mut pool, own) =
            (Sources::default(), Pool::default(), OwnSockets::default());
        pool.register("10.0.0.9:80", &[], 15_000, Some(50), 0)
            .unwrap(); // a companion's
        let listing = [
            ready("169.254.169.254:80"),
            ready("10.0.0.9:80"),
            ready("not an address"),
        ];
        let first = sources
            .sync("app", &mut pool, "k8s", &listing, &own, 0)
            .unwrap();
        assert_eq!(
            names(&first),
            [
                ("refused", "169.254.169.254:80".into()),
                ("refused", "not an address".into())
            ]
        );
        assert!(first.events[0]
            .2
            .as_deref()
            .is_some_and(|why| why.contains("link-local")));
        let again = sources
            .sync("app", &mut pool, "k8s", &listing, &own, 10)
            .unwrap();
        assert!(again.events.is_empty(), "{again:?}");
        sources
            .sync("app", &mut pool, "k8s", &[ready("10.0.0.9:80")], &own, 20)
            .unwrap();
        let back = sources
            .sync("app", &mut pool, "k8s", &listing, &own, 30)
            .unwrap();
        assert_eq!(
            back.events.len(),
            2,
            "listed again after it left: said again"
        );
        let synced = sources
            .sync("app", &mut pool, "k8s", &[], &own, 40)
            .unwrap();
        assert!(synced.events.is_empty());
        assert_eq!(
            pool.upstreams[0].weight, 50,
            "the companion's member untouched"
        );
        assert!(sources.sync("app", &mut pool, "", &[], &own, 50).is_err());
    }
}

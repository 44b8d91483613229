//! `caddy-beacon status`: every upstream each Caddy knows, with its health, in-flight requests,
//! passive failures, and whether a caddy-beacon companion registered it — in Caddy's config, or
//! in a pool of the beacon module (whose own verdict and draining state are shown).

use serde_json::{json, Value};

use crate::admin::beacon_api::BeaconApi;
use crate::admin::config_tree::{objects, text};
use crate::admin::proxy_upstreams::proxy_upstreams;
use crate::admin::AdminClient;
use crate::state::health::parse_gauges;
use crate::upstream::OWNED_ID_PREFIX;
use crate::CompanionError;

/// One upstream as seen by one Caddy.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamStatus {
    /// The Admin API it was read from.
    pub admin: String,
    /// The dial address.
    pub address: String,
    /// From `caddy_reverse_proxy_upstreams_healthy` (refreshed by Caddy every 10 s); None when
    /// Caddy does not report it (no active health checks, or not yet).
    pub healthy: Option<bool>,
    /// Requests in flight to it.
    pub in_flight: u64,
    /// Passive-check failures within `fail_duration`.
    pub fails: u64,
    /// Registered by a caddy-beacon companion.
    pub owned: bool,
    /// The beacon module pool it is a member of (None: from Caddy's config).
    pub pool: Option<String>,
    /// Draining in its pool (no new requests).
    pub draining: bool,
    /// A pool member's weight and the weight it gets now (less while slow start ramps it up).
    pub weight: Option<(u32, u32)>,
}

fn owned_dials(config: &Value) -> Vec<&str> {
    objects(config)
        .into_iter()
        .filter(|object| text(object, "@id").is_some_and(|id| id.starts_with(OWNED_ID_PREFIX)))
        .filter_map(|object| text(object, "dial"))
        .collect()
}

/// Reads the upstreams of one Caddy.
pub fn collect(client: &AdminClient) -> Result<Vec<UpstreamStatus>, CompanionError> {
    let upstreams = proxy_upstreams(client)?;
    let metrics = client.get_ok("/metrics")?;
    let gauges = parse_gauges(&String::from_utf8_lossy(&metrics.body));
    let (config, _) = client.get_json("/config/")?;
    let owned = owned_dials(&config);
    let admin = client.address().url();
    let mut statuses: Vec<UpstreamStatus> = upstreams
        .into_iter()
        .map(|u| UpstreamStatus {
            admin: admin.clone(),
            healthy: gauges
                .iter()
                .find(|(a, _)| *a == u.address)
                .map(|(_, h)| *h),
            in_flight: u.num_requests,
            fails: u.fails,
            owned: owned.contains(&u.address.as_str()),
            pool: None,
            draining: false,
            weight: None,
            address: u.address,
        })
        .collect();
    add_pool_members(client, &mut statuses)?;
    Ok(statuses)
}

/// Adds the members of the beacon module's pools, when this Caddy has the module: their health
/// is the module's verdict, and a pool member counts as registered by a companion.
fn add_pool_members(
    client: &AdminClient,
    statuses: &mut Vec<UpstreamStatus>,
) -> Result<(), CompanionError> {
    let Some(listing) = BeaconApi(client).pools()? else {
        return Ok(());
    };
    let admin = client.address().url();
    for (name, pool) in listing.pools {
        for member in pool.upstreams {
            let index = match statuses
                .iter()
                .position(|s| s.address == member.address && s.pool.is_none())
            {
                Some(index) => index,
                None => {
                    statuses.push(UpstreamStatus {
                        admin: admin.clone(),
                        address: member.address.clone(),
                        healthy: None,
                        in_flight: member.in_flight,
                        fails: 0,
                        owned: true,
                        pool: None,
                        draining: false,
                        weight: None,
                    });
                    statuses.len() - 1
                }
            };
            let status = &mut statuses[index];
            status.healthy = Some(member.healthy);
            status.draining = member.draining;
            status.pool = Some(name.clone());
            status.owned = true;
            status.weight = Some((member.weight, member.effective_weight));
        }
    }
    Ok(())
}

/// The `--json` output: a list of objects.
pub fn to_json(statuses: &[UpstreamStatus]) -> String {
    let list: Vec<Value> = statuses
        .iter()
        .map(|s| {
            json!({"admin": s.admin, "address": s.address, "healthy": s.healthy,
                   "in_flight": s.in_flight, "fails": s.fails, "owned": s.owned,
                   "pool": s.pool, "draining": s.draining,
                   "weight": s.weight.map(|w| w.0), "effective_weight": s.weight.map(|w| w.1)})
        })
        .collect();
    Value::Array(list).to_string()
}

/// The table output.
pub fn to_table(statuses: &[UpstreamStatus]) -> String {
    let rows: Vec<[String; 8]> = statuses
        .iter()
        .map(|s| {
            [
                s.admin.clone(),
                s.address.clone(),
                s.pool.clone().unwrap_or_else(|| "-".into()),
                match (s.draining, s.healthy) {
                    (true, _) => "draining".into(),
                    (false, Some(true)) => "yes".into(),
                    (false, Some(false)) => "no".into(),
                    (false, None) => "?".into(),
                },
                s.in_flight.to_string(),
                s.fails.to_string(),
                if s.owned { "yes".into() } else { "no".into() },
                match s.weight {
                    None => "-".into(),
                    Some((weight, now)) if now == weight || s.draining => weight.to_string(),
                    // Ramping (slow start), or not offered (unhealthy): what it gets now.
                    Some((weight, now)) => format!("{now}/{weight}"),
                },
            ]
        })
        .collect();
    let header = [
        "ADMIN",
        "UPSTREAM",
        "POOL",
        "HEALTHY",
        "IN-FLIGHT",
        "FAILS",
        "OWNED",
        "WEIGHT",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|row| {
            row.iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_owned_upstreams_anywhere_in_the_config() {
        let config = json!({"apps": {"http": {"servers": {"a": {"routes": [{"handle": [{"upstreams": [
            {"@id": "caddy-beacon-x", "dial": "10.0.0.1:80"}, {"dial": "10.0.0.2:80"}, {"@id": "other", "dial": "10.0.0.3:80"}]}]}]}}}}});
        assert_eq!(owned_dials(&config), vec!["10.0.0.1:80"]);
    }

    #[test]
    fn renders_table_and_json() {
        let statuses = vec![UpstreamStatus {
            admin: "http://localhost:2019".into(),
            address: "10.0.0.1:80".into(),
            healthy: None,
            in_flight: 2,
            fails: 0,
            owned: true,
            pool: None,
            draining: false,
            weight: None,
        }];
        let table = to_table(&statuses);
        assert!(table.starts_with("ADMIN"));
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .contains("10.0.0.1:80  -     ?"),
            "{table}"
        );
        let parsed: Value = serde_json::from_str(&to_json(&statuses)).unwrap();
        assert_eq!(parsed[0]["healthy"], Value::Null);
        assert_eq!(parsed[0]["in_flight"], 2);
        assert_eq!(parsed[0]["owned"], true);
    }
}

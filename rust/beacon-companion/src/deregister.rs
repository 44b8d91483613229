//! `caddy-beacon deregister`: removes the upstream entries a companion registered for an
//! address, then waits until Caddy has no request in flight to it.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::admin::beacon_api::{ActionError, BeaconApi, PoolAction};
use crate::admin::config_tree::{objects, text};
use crate::admin::proxy_upstreams::wait_until_drained;
use crate::admin::AdminClient;
use crate::upstream::OWNED_ID_PREFIX;
use crate::CompanionError;

/// `@id`s of owned upstream entries dialling `address`, anywhere in the config.
pub fn owned_ids_for(config: &Value, address: &str) -> Vec<String> {
    let mut ids: Vec<String> = objects(config)
        .into_iter()
        .filter(|object| text(object, "dial") == Some(address))
        .filter_map(|object| {
            text(object, "@id")
                .filter(|id| id.starts_with(OWNED_ID_PREFIX))
                .map(str::to_owned)
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn dialled_without_id(config: &Value, address: &str) -> bool {
    objects(config).into_iter().any(|object| {
        text(object, "dial") == Some(address)
            && !text(object, "@id").is_some_and(|id| id.starts_with(OWNED_ID_PREFIX))
    })
}

/// One pool action for `address`; 404 (already gone) counts as done.
fn pool_action(
    client: &AdminClient,
    pool: &str,
    action: PoolAction,
    address: &str,
) -> Result<(), CompanionError> {
    match BeaconApi(client).act(pool, action, address) {
        Ok(()) | Err(ActionError::NotFound) => Ok(()),
        Err(ActionError::Refused(error) | ActionError::Failed(error)) => Err(error),
    }
}

/// Removes the owned entries for `address` from one Caddy — config entries a companion added,
/// and memberships of the beacon module's pools (drained first) — and waits for its requests to
/// end. Returns a line describing what happened.
pub fn deregister(
    client: &AdminClient,
    address: &str,
    drain_timeout: Duration,
) -> Result<String, CompanionError> {
    let admin = client.address().url();
    // Pools of the beacon module that hold it (none without the module).
    let pools = BeaconApi(client)
        .pools()?
        .map(|listing| listing.pools_holding(address))
        .unwrap_or_default();
    for pool in &pools {
        pool_action(client, pool, PoolAction::Drain, address)?;
    }
    let (config, _) = client.get_json("/config/")?;
    let ids = owned_ids_for(&config, address);
    if ids.is_empty() && pools.is_empty() {
        if dialled_without_id(&config, address) {
            return Err(CompanionError::Usage(format!(
                "{address} at {admin} was not registered by caddy-beacon (it comes from the Caddyfile); not touching it"
            )));
        }
        return Ok(format!(
            "{address} is not registered at {admin}; nothing to do"
        ));
    }
    for id in &ids {
        let path = format!("/id/{id}");
        let response = client.request("DELETE", &path, None, None)?;
        // 404: removed meanwhile (by another companion, or a reload); the goal is reached.
        if response.status != 200 && response.status != 404 {
            return Err(client.api_error("DELETE", &path, &response));
        }
    }
    let started = Instant::now();
    let running = wait_until_drained(client, address, started + drain_timeout, Err)?;
    for pool in &pools {
        pool_action(client, pool, PoolAction::Remove, address)?;
    }
    let what = match (ids.len(), pools.len()) {
        (0, n) => format!("{n} pool{}", if n == 1 { "" } else { "s" }),
        (n, 0) => format!("{n} entr{}", if n == 1 { "y" } else { "ies" }),
        (n, m) => format!(
            "{n} entr{}, {m} pool{}",
            if n == 1 { "y" } else { "ies" },
            if m == 1 { "" } else { "s" }
        ),
    };
    match running {
        0 => Ok(format!(
            "deregistered {address} from {admin} ({what}); drained in {:.1}s",
            started.elapsed().as_secs_f64()
        )),
        running => Err(CompanionError::DrainTimeout {
            address: address.to_owned(),
            admin,
            running,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_only_owned_entries_for_the_address() {
        let config = json!({"routes": [{"upstreams": [
            {"@id": "caddy-beacon-a", "dial": "10.0.0.1:80"},
            {"@id": "caddy-beacon-b", "dial": "10.0.0.1:80"},
            {"@id": "caddy-beacon-c", "dial": "10.0.0.2:80"},
            {"dial": "10.0.0.3:80"}]}]});
        assert_eq!(
            owned_ids_for(&config, "10.0.0.1:80"),
            vec!["caddy-beacon-a", "caddy-beacon-b"]
        );
        assert!(owned_ids_for(&config, "10.0.0.3:80").is_empty());
        assert!(dialled_without_id(&config, "10.0.0.3:80"));
        assert!(!dialled_without_id(&config, "10.0.0.1:80"));
    }
}

//! `caddy-beacon deregister`: removes the upstream entries a companion registered for an
//! address, then waits until Caddy has no request in flight to it.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config_tree::{objects, text};
use crate::upstream::OWNED_ID_PREFIX;
use crate::{AdminClient, AgentError};

/// `@id`s of owned upstream entries dialling `address`, anywhere in the config.
pub fn owned_ids_for(config: &Value, address: &str) -> Vec<String> {
    let mut ids: Vec<String> = objects(config)
        .into_iter()
        .filter(|object| text(object, "dial") == Some(address))
        .filter_map(|object| text(object, "@id").filter(|id| id.starts_with(OWNED_ID_PREFIX)).map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn dialled_without_id(config: &Value, address: &str) -> bool {
    objects(config)
        .into_iter()
        .any(|object| text(object, "dial") == Some(address) && !text(object, "@id").is_some_and(|id| id.starts_with(OWNED_ID_PREFIX)))
}

/// Polls Caddy's upstream list until `address` has no request in flight (or is no longer
/// listed: Caddy keeps a removed upstream there while requests to it run) or `deadline` passes;
/// returns the requests still running. A failed read goes to `on_error`, which decides whether
/// to stop (return the error) or keep polling.
pub fn wait_until_drained(
    client: &AdminClient,
    address: &str,
    deadline: Instant,
    mut on_error: impl FnMut(AgentError) -> Result<(), AgentError>,
) -> Result<u64, AgentError> {
    let mut running = 0;
    loop {
        match client.get_json("/reverse_proxy/upstreams") {
            Ok((upstreams, _)) => {
                running = upstreams
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|u| u.get("address").and_then(Value::as_str) == Some(address))
                    .map_or(0, |u| u.get("num_requests").and_then(Value::as_u64).unwrap_or(0));
                if running == 0 {
                    return Ok(0);
                }
            }
            Err(error) => on_error(error)?,
        }
        if Instant::now() >= deadline {
            return Ok(running);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Pools of the beacon module that hold `address` (none without the module).
fn pools_holding(client: &AdminClient, address: &str) -> Result<Vec<String>, AgentError> {
    let response = client.request("GET", "/beacon/pools", None, None)?;
    if response.status != 200 {
        return Ok(Vec::new());
    }
    let pools: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    Ok(pools["pools"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, pool)| pool["upstreams"].as_array().into_iter().flatten().any(|u| u["address"] == address))
        .map(|(name, _)| name.clone())
        .collect())
}

/// One `POST /beacon/pools/<pool>/<action>` for `address`; 404 (already gone) counts as done.
fn pool_action(client: &AdminClient, pool: &str, action: &str, address: &str) -> Result<(), AgentError> {
    let path = format!("/beacon/pools/{pool}/{action}");
    let body = serde_json::json!({ "address": address }).to_string();
    let response = client.request("POST", &path, Some(body.as_bytes()), None)?;
    if response.status != 200 && response.status != 404 {
        return Err(client.api_error("POST", &path, &response));
    }
    Ok(())
}

/// Removes the owned entries for `address` from one Caddy — config entries a companion added,
/// and memberships of the beacon module's pools (drained first) — and waits for its requests to
/// end. Returns a line describing what happened.
pub fn deregister(client: &AdminClient, address: &str, drain_timeout: Duration) -> Result<String, AgentError> {
    let admin = client.address().url();
    let pools = pools_holding(client, address)?;
    for pool in &pools {
        pool_action(client, pool, "drain", address)?;
    }
    let (config, _) = client.get_json("/config/")?;
    let ids = owned_ids_for(&config, address);
    if ids.is_empty() && pools.is_empty() {
        if dialled_without_id(&config, address) {
            return Err(AgentError::Usage(format!(
                "{address} at {admin} was not registered by caddy-beacon (it comes from the Caddyfile); not touching it"
            )));
        }
        return Ok(format!("{address} is not registered at {admin}; nothing to do"));
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
        pool_action(client, pool, "remove", address)?;
    }
    let what = match (ids.len(), pools.len()) {
        (0, n) => format!("{n} pool{}", if n == 1 { "" } else { "s" }),
        (n, 0) => format!("{n} entr{}", if n == 1 { "y" } else { "ies" }),
        (n, m) => format!("{n} entr{}, {m} pool{}", if n == 1 { "y" } else { "ies" }, if m == 1 { "" } else { "s" }),
    };
    match running {
        0 => Ok(format!("deregistered {address} from {admin} ({what}); drained in {:.1}s", started.elapsed().as_secs_f64())),
        running => Err(AgentError::DrainTimeout { address: address.to_owned(), admin, running }),
    }
}

/// Parses `30s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a duration >= 0"))
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
        assert_eq!(owned_ids_for(&config, "10.0.0.1:80"), vec!["caddy-beacon-a", "caddy-beacon-b"]);
        assert!(owned_ids_for(&config, "10.0.0.3:80").is_empty());
        assert!(dialled_without_id(&config, "10.0.0.3:80"));
        assert!(!dialled_without_id(&config, "10.0.0.1:80"));
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

//! `caddy-beacon deregister`: removes the upstream entries a companion registered for an
//! address, then waits until Caddy has no request in flight to it.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::upstream::OWNED_ID_PREFIX;
use crate::{AdminClient, AgentError};

/// `@id`s of owned upstream entries dialling `address`, anywhere in the config.
pub fn owned_ids_for(config: &Value, address: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut stack = vec![config];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let (Some(id), Some(dial)) = (map.get("@id").and_then(Value::as_str), map.get("dial").and_then(Value::as_str)) {
                    if id.starts_with(OWNED_ID_PREFIX) && dial == address {
                        ids.push(id.to_owned());
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

fn dialled_without_id(config: &Value, address: &str) -> bool {
    match config {
        Value::Object(map) => {
            let unowned = map.get("dial").and_then(Value::as_str) == Some(address)
                && !map.get("@id").and_then(Value::as_str).is_some_and(|id| id.starts_with(OWNED_ID_PREFIX));
            unowned || map.values().any(|v| dialled_without_id(v, address))
        }
        Value::Array(items) => items.iter().any(|v| dialled_without_id(v, address)),
        _ => false,
    }
}

/// Requests in flight to `address`, or None once Caddy has forgotten it (it keeps a removed
/// upstream listed while requests to it are still running).
fn in_flight(client: &AdminClient, address: &str) -> Result<Option<u64>, AgentError> {
    let (upstreams, _) = client.get_json("/reverse_proxy/upstreams")?;
    Ok(upstreams.as_array().and_then(|list| {
        list.iter()
            .find(|u| u.get("address").and_then(Value::as_str) == Some(address))
            .map(|u| u.get("num_requests").and_then(Value::as_u64).unwrap_or(0))
    }))
}

/// Removes the owned entries for `address` from one Caddy and waits for its requests to end.
/// Returns a line describing what happened.
pub fn deregister(client: &AdminClient, address: &str, drain_timeout: Duration) -> Result<String, AgentError> {
    let admin = client.address().url();
    let (config, _) = client.get_json("/config/")?;
    let ids = owned_ids_for(&config, address);
    if ids.is_empty() {
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
    loop {
        match in_flight(client, address)? {
            None | Some(0) => {
                return Ok(format!(
                    "deregistered {address} from {admin} ({} entr{}); drained in {:.1}s",
                    ids.len(),
                    if ids.len() == 1 { "y" } else { "ies" },
                    started.elapsed().as_secs_f64()
                ))
            }
            Some(running) if started.elapsed() >= drain_timeout => {
                return Err(AgentError::DrainTimeout { address: address.to_owned(), admin, running });
            }
            Some(_) => thread::sleep(Duration::from_millis(100)),
        }
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

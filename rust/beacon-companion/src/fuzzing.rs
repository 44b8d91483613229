//! Entry points for the fuzz targets (fuzz/), compiled only under cargo fuzz: the parsers that
//! read what the network and Caddy's Admin API send the companion.

use crate::admin::beacon_api::{PoolsListing, Registered};
use crate::admin::client::error_message;
use crate::admin::proxy_upstreams::ProxyUpstream;
use crate::state::health::{parse_event, parse_gauges};

/// A line of Caddy's event log, as the events sink reads it.
pub fn events_line(line: &str) {
    let _ = parse_event(line);
}

/// Caddy's `/metrics`, read for the upstreams' health gauges.
pub fn health_gauges(text: &str) {
    let _ = parse_gauges(text);
}

/// An Admin API answer, read as each of the companion's answer types.
pub fn admin_answers(body: &[u8]) {
    let _ = serde_json::from_slice::<PoolsListing>(body);
    let _ = serde_json::from_slice::<Registered>(body);
    let _ = serde_json::from_slice::<Vec<ProxyUpstream>>(body);
    let _ = error_message(body);
}

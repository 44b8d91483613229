//! Caddy's `GET /reverse_proxy/upstreams`: every upstream its proxies know, with requests in
//! flight and passive-check failures; and the wait until one has nothing in flight (Caddy keeps
//! a removed upstream listed while requests to it run).

use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::admin::AdminClient;
use crate::CompanionError;

/// One entry of the list.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ProxyUpstream {
    /// The dial address.
    pub address: String,
    /// Requests in flight.
    #[serde(default)]
    pub num_requests: u64,
    /// Passive-check failures within `fail_duration`.
    #[serde(default)]
    pub fails: u64,
}

/// Reads the list.
pub fn proxy_upstreams(client: &AdminClient) -> Result<Vec<ProxyUpstream>, CompanionError> {
    const PATH: &str = "/reverse_proxy/upstreams";
    let response = client.get_ok(PATH)?;
    serde_json::from_slice(&response.body).map_err(|e| CompanionError::Api {
        admin: client.address().url(),
        request: format!("GET {PATH}"),
        status: response.status,
        message: format!("the answer is not Caddy's upstream list: {e}"),
    })
}

/// Polls the list until `address` has no request in flight (or is no longer listed) or
/// `deadline` passes; returns the requests still running. A failed read goes to `on_error`,
/// which decides whether to stop (return the error) or keep polling.
pub fn wait_until_drained(
    client: &AdminClient,
    address: &str,
    deadline: Instant,
    mut on_error: impl FnMut(CompanionError) -> Result<(), CompanionError>,
) -> Result<u64, CompanionError> {
    let mut running = 0;
    loop {
        match proxy_upstreams(client) {
            Ok(upstreams) => {
                running = upstreams
                    .iter()
                    .find(|u| u.address == address)
                    .map_or(0, |u| u.num_requests);
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

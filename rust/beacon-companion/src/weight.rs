//! `caddy-beacon weight`: a pool member's new weight, through the beacon module's weight route
//! (no re-registration, no config change); for each Caddy, in the pool named or in every pool
//! that holds the address.

use crate::admin::beacon_api::{ActionError, BeaconApi};
use crate::admin::AdminClient;
use crate::CompanionError;

/// Sets `weight` on `address` in `pool` (or every pool holding it) of one Caddy; returns a line
/// per pool changed.
pub fn set_weight(
    client: &AdminClient,
    address: &str,
    pool: Option<&str>,
    weight: u32,
) -> Result<Vec<String>, CompanionError> {
    let admin = client.address().url();
    let api = BeaconApi(client);
    let listing = api.pools()?.ok_or_else(|| CompanionError::Usage(format!("Caddy at {admin} has no beacon module (GET /beacon/pools answered 404): weights need it")))?;
    let pools = match pool {
        Some(pool) => vec![pool.to_owned()],
        None => listing.pools_holding(address),
    };
    if pools.is_empty() {
        return Err(CompanionError::Usage(format!(
            "{address} is in no pool at {admin}"
        )));
    }
    let mut lines = Vec::new();
    for pool in pools {
        match api.set_weight(&pool, address, weight) {
            Ok(()) => lines.push(format!(
                "{address} in pool {pool} at {admin}: weight {weight}"
            )),
            Err(ActionError::NotFound) => {
                return Err(CompanionError::Usage(format!(
                    "{address} is not in pool {pool} at {admin}"
                )))
            }
            Err(ActionError::Refused(error) | ActionError::Failed(error)) => return Err(error),
        }
    }
    Ok(lines)
}

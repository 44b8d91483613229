//! beacon-registry: the logic of the beacon Caddy module, with no I/O.
//!
//! Companions register app instances into named pools with a lease; the module's own active
//! checks report probe results; draining upstreams stop getting new requests; expired leases
//! end registrations of companions that vanished. The Go side of the module (`caddy/`) does
//! every bit of I/O (HTTP probes, Caddy's admin routes, events, metrics) and runs this crate,
//! compiled to `wasm32-wasip1`, inside Caddy with wazero; natively it is unit-tested here.
//!
//! - [`Registry`]: every pool; [`Command`] in, [`Reply`] out (JSON across the WebAssembly
//!   boundary, see [`abi`]).
//! - [`pool`]: leases, draining, verdicts and the ordered list of upstreams to offer.
//! - [`health`]: what one probe says, and the passes/fails thresholds.
//! - [`load_weights`]: load-aware weights from the members' load reports (gRPC's A58).
//! - [`outlier`]: members whose requests fail in a row are ejected for a growing time, never
//!   more than a share of the pool and never the last one.
//! - [`address`]: what a valid pool name and dial address are.
//! - [`admission`]: which addresses a pool accepts (never this Caddy itself; not by default
//!   what exposes the host; with an `allow` list, only what it names).
//! - [`sources`]: members a source other than the companions owns (a Kubernetes Service's
//!   EndpointSlices, which the host watches): ready ones join, others drain, gone ones leave.
//! - [`declarations`]: which loaded configs declare each pool, so that a refused config changes
//!   nothing and a pool lives as long as a running config declares it.

pub mod abi;
pub mod address;
pub mod admission;
pub mod declarations;
mod error;
pub mod health;
pub mod load_weights;
pub mod outlier;
pub mod pool;
mod registry;
pub mod sources;

pub use error::RegistryError;
pub use registry::{Command, Event, Registry, Reply};

/// Whether a change alters the list of upstreams Caddy is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The offer is the same.
    None,
    /// The offer changed: the host rebuilds the pool's snapshot.
    Offer,
}

//! beacon-core: everything caddy-beacon does per request and per scrape, without Python.
//!
//! The Python bindings (`beacon-py`) call into this crate. It starts no runtime or thread on
//! its own: the side port ([`side_port`], on beacon-base's probe server) builds its
//! current-thread tokio runtime inside the thread its caller starts for it, after any fork.
//!
//! - [`RequestMetrics`]: the request-duration histogram and active-request gauge, stored as a
//!   flat arena of atomics with a hard series cap, shared by all worker processes of an
//!   instance through [`shared_region`].
//! - [`Readiness`]: cached check results, draining, and the health+json body for `/ready`.
//! - [`request_id`]: validation of incoming request ids and fast generation of new ones.
//! - [`exposition`]: Prometheus text and OpenMetrics rendering, with exemplars.
//! - Tracing in three layers, each using only the ones above it: [`trace`] (plain data: W3C
//!   trace context, sampling, the finished server span), [`otlp`] (its export through
//!   `opentelemetry-otlp`), [`tracer`] (per process: starts a request's trace, hands finished
//!   spans to the exporter).
//! - [`side_port`]: `/health`, `/ready` and `/metrics` answered from a Rust thread.
//! - [`loop_watch`]: the event-loop watchdog, watching the loop from a thread of its own.
//! - [`load_report`]: ORCA load reports (`endpoint-load-metrics`) for a proxy that asks.

mod buckets;
mod error;
pub mod exposition;
mod http_method;
pub mod load_report;
pub mod loop_watch;
mod metrics_store;
pub mod otlp;
pub mod process_metrics;
mod readiness;
pub mod request_id;
pub mod shared_region;
pub mod side_port;
pub mod trace;
pub mod tracer;

pub use buckets::{Buckets, DEFAULT_BUCKETS};
pub use error::BeaconError;
pub use http_method::HttpMethod;
pub use metrics_store::{
    Exemplar, RequestMetrics, SeriesLabels, SeriesSnapshot, WorkerState, UNMATCHED_ROUTE,
    WORKER_SLOTS,
};
pub use readiness::{CheckOutcome, Readiness, ReadyReport};

//! beacon-core: everything caddy-beacon does per request and per scrape, without Python.
//!
//! The Python bindings (`beacon-py`) and the companion call into this crate. It starts no
//! runtime or thread on its own: the probe server ([`http_server`], behind [`side_port`] and
//! the companion's `/status`) builds its current-thread tokio runtime inside the thread its
//! caller starts for it, after any fork.
//!
//! - [`RequestMetrics`]: the request-duration histogram and active-request gauge, stored as a
//!   flat arena of atomics with a hard series cap, shared by all worker processes of an
//!   instance through [`shared_region`].
//! - [`Readiness`]: cached check results, draining, and the health+json body for `/ready`.
//! - [`request_id`]: validation of incoming request ids and fast generation of new ones.
//! - [`exposition`]: Prometheus text and OpenMetrics rendering, with exemplars.
//! - [`trace`] and [`otlp`]: W3C trace context, sampling, server spans and their export
//!   through `opentelemetry-otlp`; [`tls_files`]: the CA and client certificates of TLS clients.
//! - [`http_server`] and [`side_port`]: hyper (via axum) for probes and scrapes, hardened
//!   against slow, idle and malformed clients.

mod buckets;
mod error;
pub mod error_chain;
pub mod exposition;
mod http_method;
pub mod http_server;
mod metrics_store;
pub mod otlp;
pub mod process_metrics;
pub mod random;
mod readiness;
pub mod shared_region;
pub mod side_port;
pub mod time_format;
pub mod tls_files;
pub mod request_id;
pub mod trace;

pub use buckets::{Buckets, DEFAULT_BUCKETS};
pub use error::BeaconError;
pub use http_method::HttpMethod;
pub use metrics_store::{Exemplar, RequestMetrics, SeriesLabels, SeriesSnapshot, WorkerState, UNMATCHED_ROUTE, WORKER_SLOTS};
pub use readiness::{CheckOutcome, Readiness, ReadyReport};

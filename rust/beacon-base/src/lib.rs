//! beacon-base: what the middleware's core (beacon-core) and the companion (beacon-companion) both
//! stand on, and nothing either does not need.
//!
//! - [`http_server`]: hyper (via axum) for probes and scrapes, hardened against slow, idle and
//!   malformed clients; it builds its current-thread tokio runtime inside the thread its caller
//!   starts for it, after any fork.
//! - [`tls_files`]: the CA and client certificates of TLS clients, read and checked once.
//! - [`random`]: fast, fork-aware random numbers for ids and jitter.
//! - [`error_chain`]: an error and its causes as one line.
//! - [`time_format`]: RFC 3339 timestamps.

pub mod error_chain;
pub mod http_server;
pub mod random;
pub mod time_format;
pub mod tls_files;

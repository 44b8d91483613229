//! Tracing: W3C trace context, sampling, and the server span handed to the exporter.

pub mod context;
pub mod sampler;
pub mod span;

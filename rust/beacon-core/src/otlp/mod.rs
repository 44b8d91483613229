//! OTLP/HTTP protobuf export of spans: encoding, a minimal HTTP client, the background exporter.

pub mod encode;
pub mod exporter;
pub mod http_post;
mod protobuf;

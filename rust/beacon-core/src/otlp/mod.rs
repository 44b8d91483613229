//! OTLP export of spans: the settings, the conversion to the SDK's span type, the transport
//! (`opentelemetry-otlp`), and the bounded background exporter in front of it.

pub mod exporter;
pub mod settings;
pub mod span_data;
pub mod transport;

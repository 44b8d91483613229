//! A finished server span, as handed to the exporter.

use std::borrow::Cow;

use crate::trace::tracer::RequestTrace;

/// An attribute value (the subset of OTLP's AnyValue that HTTP server spans use).
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A list of strings (header attributes are string arrays in the semantic conventions).
    StrArray(Vec<String>),
}

/// One key/value attribute. Keys are usually the semantic conventions' static names.
pub type Attribute = (Cow<'static, str>, AttributeValue);

/// A finished span of kind SERVER.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// Its trace context: ids, parent, tracestate, flags and start.
    pub trace: RequestTrace,
    /// `"{method} {route}"`.
    pub name: String,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Semantic-convention attributes.
    pub attributes: Vec<Attribute>,
    /// Whether the span's status is ERROR (5xx or an exception).
    pub error: bool,
}

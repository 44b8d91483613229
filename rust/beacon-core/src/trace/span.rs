//! A finished server span, as handed to the exporter.

use std::borrow::Cow;

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
    /// Trace id, shared with the caller when there was one.
    pub trace_id: [u8; 16],
    /// This span's id.
    pub span_id: [u8; 8],
    /// The caller's span (Caddy's), if any.
    pub parent_span_id: Option<[u8; 8]>,
    /// The carried `tracestate`.
    pub trace_state: String,
    /// W3C trace flags.
    pub flags: u8,
    /// `"{method} {route}"`.
    pub name: String,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Semantic-convention attributes.
    pub attributes: Vec<Attribute>,
    /// Whether the span's status is ERROR (5xx or an exception).
    pub error: bool,
}

//! Our finished span, as the OpenTelemetry SDK's `SpanData` that the OTLP exporter takes.
//!
//! The request path records a small `SpanRecord` (ids, times, the request's facts); this
//! conversion, with the span's name and attributes, runs on the export thread, so the SDK's
//! types cost the request nothing.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::trace::span::{Attribute, AttributeValue, SpanRecord};

/// The key/value the SDK takes for one of our attributes (moved, not copied: this runs for
/// every attribute of every span).
pub fn key_value((key, value): Attribute) -> KeyValue {
    let value = match value {
        AttributeValue::Str(text) => Value::String(text.into()),
        AttributeValue::Int(number) => Value::I64(number),
        AttributeValue::StrArray(items) => Value::Array(Array::String(
            items.into_iter().map(StringValue::from).collect(),
        )),
    };
    KeyValue::new(key, value)
}

/// Converts one finished server span.
pub fn span_data(record: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let trace = record.trace;
    // The tracestate was validated when the request came in; a value the SDK reads differently
    // is dropped rather than sent half-parsed.
    let trace_state = if trace.trace_state.is_empty() {
        TraceState::default()
    } else {
        TraceState::from_str(&trace.trace_state).unwrap_or_default()
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace.trace_id),
            SpanId::from_bytes(trace.span_id),
            TraceFlags::new(trace.flags()),
            false,
            trace_state,
        ),
        parent_span_id: trace
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes),
        // A parent always comes from another process (Caddy, or whoever called the app).
        parent_span_is_remote: trace.parent_span_id.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(record.http.span_name()),
        start_time: UNIX_EPOCH + Duration::from_nanos(trace.start_unix_nanos),
        end_time: UNIX_EPOCH + Duration::from_nanos(record.end_unix_nanos),
        attributes: record
            .http
            .attributes()
            .into_iter()
            .map(key_value)
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if record.error {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::context::RequestTrace;
    use crate::trace::span::{HttpServerFacts, SpanText};
    use crate::HttpMethod;

    #[test]
    fn converts_ids_parent_times_and_attributes() {
        let record = SpanRecord {
            trace: RequestTrace {
                trace_id: [1; 16],
                span_id: [2; 8],
                parent_span_id: Some([3; 8]),
                trace_state: "rojo=00f067aa0ba902b7".into(),
                sampled: true,
                start_unix_nanos: 1_000,
            },
            end_unix_nanos: 3_000,
            http: {
                let mut http = HttpServerFacts::new(HttpMethod::Get, 500, 0);
                http.set(SpanText::RequestId, "rid");
                http.set(SpanText::Route, "/items/{id}");
                http
            },
            error: true,
        };
        let scope = InstrumentationScope::builder("caddy-beacon").build();
        let data = span_data(record, &scope);
        assert_eq!(data.span_context.trace_id(), TraceId::from_bytes([1; 16]));
        assert!(data.span_context.is_sampled());
        assert_eq!(
            data.span_context.trace_state().get("rojo"),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(data.parent_span_id, SpanId::from_bytes([3; 8]));
        assert!(data.parent_span_is_remote);
        assert_eq!(
            data.end_time.duration_since(data.start_time).unwrap(),
            Duration::from_nanos(2_000)
        );
        assert_eq!(data.name, "GET /items/{id}");
        assert_eq!(
            data.attributes[1],
            KeyValue::new("http.response.status_code", 500i64)
        );
        assert_eq!(
            data.attributes[2],
            KeyValue::new(
                "http.request.header.x-request-id",
                Value::Array(Array::String(vec!["rid".into()]))
            )
        );
        assert!(matches!(data.status, Status::Error { .. }));
    }
}

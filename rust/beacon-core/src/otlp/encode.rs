//! `ExportTraceServiceRequest` (opentelemetry/proto/collector/trace/v1) in protobuf.

use crate::otlp::protobuf::ProtoWriter;
use crate::trace::span::{Attribute, AttributeValue, SpanRecord};

const SPAN_KIND_SERVER: u64 = 2;
const STATUS_CODE_ERROR: u64 = 2;
// Span.flags: the W3C trace flags in the low byte, plus "has is_remote" (0x100) and, for a
// parent from another process, "is_remote" (0x200).
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;

fn any_value(w: &mut ProtoWriter, value: &AttributeValue) {
    match value {
        AttributeValue::Str(text) => w.bytes(1, text.as_bytes()),
        AttributeValue::Int(number) => w.uint(3, *number as u64),
        AttributeValue::StrArray(items) => w.message(5, |array| {
            for item in items {
                array.message(1, |v| v.bytes(1, item.as_bytes()));
            }
        }),
    }
}

fn key_value(w: &mut ProtoWriter, field: u32, (key, value): &Attribute) {
    w.message(field, |kv| {
        kv.bytes(1, key.as_bytes());
        kv.message(2, |v| any_value(v, value));
    });
}

fn span(w: &mut ProtoWriter, span: &SpanRecord) {
    let trace = &span.trace;
    w.bytes(1, &trace.trace_id);
    w.bytes(2, &trace.span_id);
    if !trace.trace_state.is_empty() {
        w.bytes(3, trace.trace_state.as_bytes());
    }
    if let Some(parent) = &trace.parent_span_id {
        w.bytes(4, parent);
    }
    w.bytes(5, span.name.as_bytes());
    w.uint(6, SPAN_KIND_SERVER);
    w.fixed64(7, trace.start_unix_nanos);
    w.fixed64(8, span.end_unix_nanos);
    for attribute in &span.attributes {
        key_value(w, 9, attribute);
    }
    if span.error {
        w.message(15, |status| status.uint(3, STATUS_CODE_ERROR));
    }
    let remote = if trace.parent_span_id.is_some() { FLAGS_IS_REMOTE } else { 0 };
    w.fixed32(16, u32::from(trace.flags()) | FLAGS_HAS_IS_REMOTE | remote);
}

/// Encodes one export request: one resource, one instrumentation scope, these spans.
pub fn export_request(resource: &[Attribute], scope_name: &str, scope_version: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let mut w = ProtoWriter { buf: Vec::with_capacity(256 + spans.len() * 512) };
    w.message(1, |resource_spans| {
        resource_spans.message(1, |r| {
            for attribute in resource {
                key_value(r, 1, attribute);
            }
        });
        resource_spans.message(2, |scope_spans| {
            scope_spans.message(1, |scope| {
                scope.bytes(1, scope_name.as_bytes());
                scope.bytes(2, scope_version.as_bytes());
            });
            for record in spans {
                scope_spans.message(2, |s| span(s, record));
            }
        });
    });
    w.buf
}

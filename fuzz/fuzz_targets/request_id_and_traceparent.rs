//! An incoming X-Request-ID, traceparent and tracestate: any bytes are judged without a panic,
//! and what is accepted is what the middleware may echo (visible ASCII, at most 128 bytes) or a
//! context the tracer can use.
#![no_main]

use beacon_core::request_id::is_valid_request_id;
use beacon_core::trace::context::{validate_tracestate, TraceParent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if is_valid_request_id(data) {
        assert!(!data.is_empty() && data.len() <= 128 && data.iter().all(|b| b.is_ascii_graphic()));
    }
    if let Some(parent) = TraceParent::parse(data) {
        assert!(parent.trace_id != [0; 16] && parent.parent_id != [0; 8]);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(kept) = validate_tracestate(text) {
            assert!(kept.len() <= text.len());
        }
    }
});

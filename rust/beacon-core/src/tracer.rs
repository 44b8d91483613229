//! The per-process tracer: starts a request's trace context and hands finished, sampled
//! server spans to the exporter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::otlp::exporter::{ExportStats, ExporterConfig, SpanExporter};
use crate::trace::context::{validate_tracestate, RequestTrace, TraceParent};
use crate::trace::sampler::Sampler;
use crate::trace::span::{HttpServerFacts, SpanRecord};
use beacon_base::random::nonzero_bytes;

/// Starts traces and exports sampled server spans.
pub struct Tracer {
    sampler: Sampler,
    exporter: SpanExporter,
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Tracer {
    /// A tracer that samples with `sampler` and exports with `config`.
    pub fn new(sampler: Sampler, config: ExporterConfig) -> Self {
        Tracer {
            sampler,
            exporter: SpanExporter::new(config),
        }
    }

    /// The trace context of a new request. `traceparents` are every `traceparent` header value
    /// the request carried: exactly one valid value continues the caller's trace; none, an
    /// invalid one or several start a new trace (the spec gives duplicates no meaning).
    pub fn start(&self, traceparents: &[&[u8]], tracestate: Option<&str>) -> RequestTrace {
        let parent = match traceparents {
            [single] => TraceParent::parse(single),
            _ => None,
        };
        let trace_id = parent.map_or_else(nonzero_bytes::<16>, |p| p.trace_id);
        let sampled = self.sampler.should_sample(&trace_id, parent.as_ref());
        RequestTrace {
            trace_id,
            span_id: nonzero_bytes::<8>(),
            parent_span_id: parent.map(|p| p.parent_id),
            // tracestate only means something next to a valid traceparent.
            trace_state: parent
                .and(tracestate)
                .and_then(validate_tracestate)
                .unwrap_or_default(),
            sampled,
            start_unix_nanos: unix_nanos(SystemTime::now()),
        }
    }

    /// Exports the finished server span of a sampled request (unsampled ones are not sent).
    pub fn finish(
        &self,
        trace: &RequestTrace,
        http: HttpServerFacts,
        elapsed: Duration,
        error: bool,
    ) {
        if !trace.sampled {
            return;
        }
        self.exporter.submit(SpanRecord {
            trace: trace.clone(),
            end_unix_nanos: trace.start_unix_nanos + elapsed.as_nanos() as u64,
            http,
            error,
        });
    }

    /// Sends what is queued; waits at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.exporter.flush(timeout)
    }

    /// Sets `service.name` on the exported resource.
    pub fn set_service_name(&self, name: &str) {
        self.exporter.set_service_name(name);
    }

    /// Export counters.
    pub fn stats(&self) -> &ExportStats {
        self.exporter.stats()
    }
}

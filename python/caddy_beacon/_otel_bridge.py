"""Makes the beacon span the current OpenTelemetry span inside a request, so spans that app code
or instrumentations (httpx, SQLAlchemy, …) create with an SDK tracer provider are its children.

Only active when tracing is on, the ``opentelemetry`` API is importable, and a real (SDK)
tracer provider is installed when the app starts; otherwise it costs nothing per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from caddy_beacon._native import RequestRecord

Attach = Callable[[RequestRecord], Any]
Detach = Callable[[Any], None]


def otel_bridge() -> tuple[Attach, Detach] | None:
    """`(attach, detach)` when an SDK tracer provider is installed, else None."""
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None

    def attach(record: RequestRecord) -> Any:
        trace_id, span_id = record.trace_id, record.span_id
        if trace_id is None or span_id is None:
            return None
        state = record.trace_state
        span_context = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if record.sampled else TraceFlags.DEFAULT),
            trace_state=TraceState.from_header([state]) if state else None,
        )
        return otel_context.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))

    def detach(token: Any) -> None:
        if token is not None:
            otel_context.detach(token)

    return attach, detach

"""The request being handled in the current task, for `request_id()` and log records."""

from __future__ import annotations

from contextvars import ContextVar

from caddy_beacon._native import RequestRecord

current_request: ContextVar[RequestRecord | None] = ContextVar("caddy_beacon_request", default=None)


def request_id() -> str | None:
    """The id of the request being handled, or None outside a request.

    It is the valid ``X-Request-ID`` the request arrived with (Caddy's ``{http.request.uuid}``),
    or one generated for it; the same value is echoed on the response.
    """
    record = current_request.get()
    # A closed record can linger in a context asyncio carried over from a finished request.
    return record.request_id if record is not None and record.open else None


def trace_id() -> str | None:
    """The trace id (32 hex digits) of the request being handled when tracing is on, else None.

    With Caddy's ``tracing`` directive it is Caddy's trace id, so the log line, the exemplar and
    Caddy's access log (``traceID``) all point at the same trace.
    """
    record = current_request.get()
    return record.trace_id if record is not None and record.open else None

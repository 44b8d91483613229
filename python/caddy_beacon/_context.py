"""The request being handled in the current task, for `request_id()` and log records."""

from __future__ import annotations

from contextvars import ContextVar

from caddy_beacon._native import RequestRecord

current_request: ContextVar[RequestRecord | None] = ContextVar("caddy_beacon_request", default=None)


def open_request() -> RequestRecord | None:
    """The request being handled, or None. A closed record can linger in a context asyncio
    carried over from a finished request: it does not count."""
    record = current_request.get()
    return record if record is not None and record.open else None


def request_id() -> str | None:
    """The id of the request being handled, or None outside a request.

    It is the valid ``X-Request-ID`` the request arrived with (Caddy's ``{http.request.uuid}``),
    or one generated for it; the same value is echoed on the response.
    """
    record = open_request()
    return None if record is None else record.request_id


def trace_id() -> str | None:
    """The trace id (32 hex digits) of the request being handled when tracing is on, else None.

    With Caddy's ``tracing`` directive it is Caddy's trace id, so the log line, the exemplar and
    Caddy's access log (``traceID``) all point at the same trace.
    """
    record = open_request()
    return None if record is None else record.trace_id

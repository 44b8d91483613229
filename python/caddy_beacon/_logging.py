"""A logging filter that stamps every record with the current request id."""

from __future__ import annotations

import logging

from caddy_beacon._context import open_request


class RequestContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id`` and ``span_id`` to every log record (``default``
    outside a request, and for the trace fields when tracing is off).

    Attach it to a handler and use ``%(request_id)s`` in the format::

        handler.addFilter(caddy_beacon.RequestContextFilter())
        handler.setFormatter(logging.Formatter("%(levelname)s [%(request_id)s] %(message)s"))
    """

    def __init__(self, name: str = "", default: str = "-") -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        current = open_request()
        if current is not None:
            record.request_id = current.request_id
            record.trace_id = current.trace_id or self.default
            record.span_id = current.span_id or self.default
        else:
            record.request_id = record.trace_id = record.span_id = self.default
        return True

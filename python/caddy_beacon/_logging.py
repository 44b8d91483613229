"""A logging filter that stamps every record with the current request id."""

from __future__ import annotations

import logging

from caddy_beacon._context import current_request


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``default`` outside a request).

    Attach it to a handler and use ``%(request_id)s`` in the format::

        handler.addFilter(caddy_beacon.RequestContextFilter())
        handler.setFormatter(logging.Formatter("%(levelname)s [%(request_id)s] %(message)s"))
    """

    def __init__(self, name: str = "", default: str = "-") -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        current = current_request.get()
        record.request_id = current.request_id if current is not None and current.open else self.default
        return True

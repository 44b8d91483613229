"""caddy-beacon: liveness, readiness, Prometheus metrics and request ids for ASGI apps behind Caddy.

The whole integration::

    app.add_middleware(caddy_beacon.BeaconMiddleware, service_name="orders", checks={"db": ping_db})

The per-request bookkeeping (timing, histograms, request ids) runs in Rust.
"""

from __future__ import annotations

import os

from caddy_beacon import _native
from caddy_beacon._checks import Check
from caddy_beacon._context import request_id, trace_id
from caddy_beacon._logging import RequestContextFilter
from caddy_beacon._middleware import BeaconMiddleware
from caddy_beacon._native import DEFAULT_BUCKETS, UNMATCHED_ROUTE, BeaconError, ConfigError

__version__: str = _native.__version__

__all__ = [
    "DEFAULT_BUCKETS",
    "UNMATCHED_ROUTE",
    "BeaconError",
    "BeaconMiddleware",
    "Check",
    "ConfigError",
    "RequestContextFilter",
    "__version__",
    "request_id",
    "trace_id",
]

# A forked worker (gunicorn, multiprocessing) must not continue the parent's random sequence,
# or two workers would hand out the same request ids.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_native.after_fork_in_child)

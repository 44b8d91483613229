"""A replica that starts cold, for bench/traffic.py's rolling restart: its first 50 requests
per process block the event loop for 50 ms more (lazy imports, empty caches, fresh connection
pools), so requests that arrive meanwhile queue behind them, as they do in a cold Python
worker. Ready at once; /whoami answers which process served."""

from __future__ import annotations

import os
import time

import caddy_beacon
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

COLD_REQUESTS = 50
COLD_SECONDS = 0.05
served = 0


async def whoami(_request: object) -> JSONResponse:
    global served
    served += 1
    if served <= COLD_REQUESTS:
        time.sleep(COLD_SECONDS)  # blocking on purpose: a cold worker holds its event loop
    return JSONResponse({"pid": os.getpid()})


app = caddy_beacon.BeaconMiddleware(
    Starlette(routes=[Route("/whoami", whoami)]), service_name="cold-app", drain_seconds=0
)

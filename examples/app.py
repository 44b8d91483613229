"""A small FastAPI app with caddy-beacon: used by `make demo`, the README and the benchmarks.

Run it with::

    uvicorn examples.app:app --port 8000
"""

from __future__ import annotations

import asyncio
import logging
import os

import caddy_beacon
from fastapi import APIRouter, FastAPI

logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s [%(request_id)s %(trace_id)s] %(name)s: %(message)s"
)
for handler in logging.getLogger().handlers:
    handler.addFilter(caddy_beacon.RequestContextFilter())

log = logging.getLogger("example")


async def database_ping() -> None:
    """Stands in for a real `SELECT 1`: a short await that succeeds."""
    await asyncio.sleep(0.005)


app = FastAPI(title="beacon-example")
items = APIRouter(prefix="/items")


@app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@items.get("/{item_id}")
async def get_item(item_id: int) -> dict[str, object]:
    log.info("fetching item %s", item_id)
    return {"id": item_id, "request_id": caddy_beacon.request_id()}


app.include_router(items)

# Set BEACON_BARE=1 to run the same app without the middleware (the benchmark's baseline).
if os.environ.get("BEACON_BARE") != "1":
    app.add_middleware(
        caddy_beacon.BeaconMiddleware,
        service_name="beacon-example",
        checks={"database": caddy_beacon.Check(database_ping, timeout=1.0, interval=2.0)},
    )

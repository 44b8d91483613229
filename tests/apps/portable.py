"""A FastAPI app written against anyio alone, so the same app runs on asyncio (uvicorn, uvloop,
hypercorn, granian) and on trio (hypercorn -k trio): what the tests of every backend serve.

- TEST_STATE_DIR: a folder; the "toggle" check fails while `<dir>/fail` exists.
- BEACON_* variables configure the middleware as users would.
"""

from __future__ import annotations

import os
import pathlib
import time

import anyio
import caddy_beacon
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

STATE = pathlib.Path(os.environ.get("TEST_STATE_DIR", "/nonexistent"))


async def toggle() -> str:
    # anyio's file check, not os.path.exists: no blocking call on the event loop.
    if await anyio.Path(STATE / "fail").exists():
        raise ConnectionError("database refused the connection")
    return "connected"


def threaded() -> bool:
    # A plain function: it runs on a thread, whatever the loop.
    return True


app = FastAPI(title="portable")
app.add_middleware(
    caddy_beacon.BeaconMiddleware,
    checks={
        "toggle": caddy_beacon.Check(toggle, timeout=0.5, interval=0.1),
        "threaded": caddy_beacon.Check(threaded, timeout=0.5, interval=0.1),
    },
)


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@app.get("/whoami")
async def whoami() -> dict[str, object]:
    return {"pid": os.getpid(), "request_id": caddy_beacon.request_id()}


@app.get("/sleep/{seconds}")
async def sleep(seconds: float) -> dict[str, float]:
    await anyio.sleep(seconds)
    return {"slept": seconds}


@app.get("/block/{seconds}")
async def block(seconds: float) -> PlainTextResponse:
    # Blocks the event loop on purpose: what the watchdog is for.
    time.sleep(seconds)
    return PlainTextResponse("blocked")


@app.get("/own-id")
async def own_id() -> PlainTextResponse:
    return PlainTextResponse("mine", headers={"X-Request-ID": "app-own-id"})

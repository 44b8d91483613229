"""The app `make dist-test` serves from each installed wheel: FastAPI with the middleware, and
an endpoint that reports where caddy_beacon was imported from and whether the request ran on
the native path. Only FastAPI, uvicorn and the wheel are installed where it runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import caddy_beacon
import caddy_beacon._native
from fastapi import APIRouter, FastAPI

PACKAGE = Path(caddy_beacon.__file__).resolve().parent

app = FastAPI(title="dist-smoke")
items = APIRouter(prefix="/items")


def beacon_middleware() -> caddy_beacon.BeaconMiddleware:
    layer: object = app.middleware_stack
    while not isinstance(layer, caddy_beacon.BeaconMiddleware):
        layer = layer.app
    return layer


def package_frames() -> list[str]:
    """The functions of caddy_beacon's Python code on this request's call stack. On the native
    path there are none: the middleware's __call__ is Rust, and the app's coroutine is driven
    from Rust (RequestCall)."""
    frames, frame = [], sys._getframe()
    while frame is not None:
        if Path(frame.f_code.co_filename).resolve().is_relative_to(PACKAGE):
            frames.append(frame.f_code.co_name)
        frame = frame.f_back
    return frames


@items.get("/{item_id}")
async def get_item(item_id: int) -> dict[str, object]:
    return {
        "id": item_id,
        "request_id": caddy_beacon.request_id(),
        "package": str(PACKAGE),
        "native_module": caddy_beacon._native.__file__,
        "armed": beacon_middleware()._armed,
        "package_frames": package_frames(),
        "python": "{}.{}".format(*sys.version_info[:2]),
    }


@app.get("/sleep/{seconds}")
async def sleep(seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


app.include_router(items)
app.add_middleware(caddy_beacon.BeaconMiddleware, service_name="dist-smoke")

"""The app the end-to-end tests run under real uvicorn and gunicorn processes.

Behaviour is chosen with environment variables so one module serves every test:
- TEST_CHECKS: comma-separated check kinds to register (see CHECKS below).
- TEST_STATE_DIR: a folder; the "toggle" check fails while `<dir>/fail` exists, and every check
  run appends a line to `<dir>/runs-<name>`.
- TEST_STATE_DIR/broken: while it exists, GET /flaky answers 503 (the replica's requests fail,
  its /ready still passes).
- TEST_READY_AFTER: seconds after start before the "warmup" check passes (default 5); the time
  it first passes is written to `<TEST_STATE_DIR>/ready-at`.
- BEACON_* variables configure the middleware as users would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import time
from collections.abc import AsyncIterator

import caddy_beacon
from fastapi import APIRouter, FastAPI, HTTPException, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

STATE = pathlib.Path(os.environ.get("TEST_STATE_DIR", "/nonexistent"))

log = logging.getLogger("testapp")
_handler = logging.StreamHandler()
_handler.addFilter(caddy_beacon.RequestContextFilter())
_handler.setFormatter(logging.Formatter("LOG request_id=%(request_id)s trace_id=%(trace_id)s %(message)s"))
log.addHandler(_handler)
log.setLevel(logging.INFO)


def _note_run(name: str) -> None:
    if STATE.is_dir():
        with open(STATE / f"runs-{name}", "a") as runs:
            runs.write(f"{time.time()}\n")


async def toggle() -> str:
    _note_run("toggle")
    if (STATE / "fail").exists():
        raise ConnectionError("database refused the connection")
    return "connected"


async def failing() -> None:
    _note_run("failing")
    raise RuntimeError("always down")


async def slow() -> None:
    _note_run("slow")
    await asyncio.sleep(30)


async def hanging() -> None:
    # Ignores cancellation: the worst kind of dependency client.
    _note_run("hanging")
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


def blocking() -> None:
    # A plain function stuck in a blocking call: it must not block the event loop.
    _note_run("blocking")
    time.sleep(3600)


async def late() -> str:
    # Passes, but only after a while: the instance must stay unready until then.
    _note_run("late")
    await asyncio.sleep(1.5)
    return "warmed up"


STARTED = time.time()


async def warmup() -> str:
    # Fails until TEST_READY_AFTER seconds after start, like an app loading a model or a cache.
    if time.time() - STARTED < float(os.environ.get("TEST_READY_AFTER", "5")):
        raise RuntimeError("still warming up")
    if STATE.is_dir() and not (STATE / "ready-at").exists():
        (STATE / "ready-at").write_text(repr(time.time()))
    return "warm"


async def fine() -> bool:
    _note_run("fine")
    return True


CHECKS = {
    "toggle": caddy_beacon.Check(toggle, timeout=0.5, interval=0.2),
    "failing": caddy_beacon.Check(failing, timeout=0.5, interval=0.2),
    "slow": caddy_beacon.Check(slow, timeout=0.3, interval=0.2),
    "hanging": caddy_beacon.Check(hanging, timeout=0.3, interval=0.2),
    "blocking": caddy_beacon.Check(blocking, timeout=0.3, interval=0.2),
    "fine": caddy_beacon.Check(fine, timeout=0.5, interval=0.2),
    "late": caddy_beacon.Check(late, timeout=5.0, interval=10.0),
    "warmup": caddy_beacon.Check(warmup, timeout=0.5, interval=0.1),
    "optional": caddy_beacon.Check(failing, timeout=0.5, interval=0.2, critical=False),
}

selected = [name for name in os.environ.get("TEST_CHECKS", "").split(",") if name]

# TEST_OTEL_SDK=1 installs an OpenTelemetry SDK tracer provider that keeps finished spans in
# memory; TEST_FASTAPI_TELEMETRY=off turns FastAPI's own (>= 0.142) server spans off.
otel_spans = None
if os.environ.get("TEST_OTEL_SDK") == "1":
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    otel_spans = InMemorySpanExporter()
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(otel_spans))
    otel_trace.set_tracer_provider(_provider)

_app_options: dict[str, object] = {}
if os.environ.get("TEST_FASTAPI_TELEMETRY") == "off":
    _app_options["telemetry"] = {"tracing": False}
app = FastAPI(title="beacon-test-app", **_app_options)  # type: ignore[arg-type]


@app.get("/trace")
async def current_trace() -> dict[str, object]:
    log.info("tracing")
    return {"trace_id": caddy_beacon.trace_id(), "request_id": caddy_beacon.request_id()}


@app.get("/otel/child")
async def otel_child() -> dict[str, object]:
    from opentelemetry import trace as otel_trace

    with otel_trace.get_tracer("testapp").start_as_current_span("child work") as span:
        context = span.get_span_context()
        parent = getattr(span, "parent", None)
        return {
            "trace_id": format(context.trace_id, "032x"),
            "parent_span_id": format(parent.span_id, "016x") if parent else None,
        }


@app.get("/otel/finished")
async def otel_finished() -> list[dict[str, object]]:
    assert otel_spans is not None
    return [
        {"name": s.name, "kind": s.kind.name, "parent": format(s.parent.span_id, "016x") if s.parent else None}
        for s in otel_spans.get_finished_spans()
    ]


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, object]:
    log.info("handling item %s", item_id)
    return {"id": item_id, "request_id": caddy_beacon.request_id()}


@app.post("/items")
async def create_item() -> dict[str, str]:
    return {"created": "yes"}


@app.get("/block/{seconds}")
async def block(seconds: float) -> dict[str, float]:
    # A handler that blocks its event loop (a sync call in async code): what the watchdog sees.
    time.sleep(seconds)
    return {"blocked": seconds}


@app.get("/whoami")
async def whoami() -> dict[str, object]:
    # Which replica answered, and when (on this host's clock) it handled the request.
    return {"pid": os.getpid(), "handled_at": time.time()}


@app.get("/flaky")
async def flaky() -> dict[str, object]:
    # 503 while <TEST_STATE_DIR>/broken exists: a replica whose requests fail (a bad deploy, a
    # dependency down) while its /ready still passes, which only outlier ejection notices.
    if (STATE / "broken").exists():
        raise HTTPException(status_code=503, detail=f"broken {os.getpid()}")
    return {"pid": os.getpid()}


_background: set[asyncio.Task[None]] = set()


@app.get("/background-work/{seconds}")
async def background_work(seconds: float) -> dict[str, float]:
    # Work that reaches the replica outside the proxy (a scheduled job, a queue consumer): its
    # event loop blocked about half the time for `seconds`, which the proxy's own counts of
    # requests in flight cannot see.
    async def work() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.03)
            await asyncio.sleep(0.03)

    task = asyncio.get_running_loop().create_task(work())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return {"seconds": seconds}


@app.get("/headers")
async def request_headers(request: Request) -> list[str]:
    # The names of the headers this request arrived with (what a proxy passed on).
    return [name.lower() for name in request.headers.keys()]


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom: unhandled")


@app.get("/teapot")
async def teapot() -> None:
    raise HTTPException(status_code=418, detail="short and stout")


@app.get("/sleep/{seconds}")
async def sleep(seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0.25)
            yield f"chunk {i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        await websocket.send_text(f"echo {text}")


users = APIRouter(prefix="/users")


@users.get("/{user_id}/orders/{order_id}")
async def user_order(user_id: int, order_id: str) -> dict[str, object]:
    return {"user": user_id, "order": order_id}


api = APIRouter(prefix="/api/v1")
api.include_router(users)
app.include_router(api)

sub = FastAPI()


@sub.get("/things/{thing_id}")
async def thing(thing_id: int) -> dict[str, int]:
    return {"thing": thing_id}


app.mount("/sub", sub)


async def plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"plain {request.path_params['name']}")


app.mount("/plain", Starlette(routes=[Route("/hello/{name}", plain)]))

# One router included under two prefixes, one app mounted under two prefixes: the same route
# objects serve both, so each request must still get its own prefix's label.
shared_router = APIRouter()


@shared_router.get("/shared/{n}")
async def shared(n: int) -> dict[str, int]:
    return {"n": n}


app.include_router(shared_router, prefix="/one")
app.include_router(shared_router, prefix="/two")
twice = Starlette(routes=[Route("/t/{name}", plain)])
app.mount("/m1", twice)
app.mount("/m2", twice)


async def legacy(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"legacy {request.path_params['code']}")


app.add_route("/legacy/{code}", legacy)

static_dir = pathlib.Path(__file__).parent / "static"
app.mount("/static", StaticFiles(directory=static_dir), name="static")

app.add_middleware(caddy_beacon.BeaconMiddleware, checks={name: CHECKS[name] for name in selected})

"""The benchmark app: the example app's routes, instrumented by the variant named in
BENCH_VARIANT. Every variant serves the same handlers; only the instrumentation differs."""

from __future__ import annotations

import os
import time

# BENCH_LAYOUT_PAD=N: N small objects made before the framework is imported, so its objects
# land elsewhere in memory (bench/instructions.py --repeat varies it: see there why).
_layout_pad = [str(number) for number in range(int(os.environ.get("BENCH_LAYOUT_PAD", "0")))]

from fastapi import FastAPI  # noqa: E402

VARIANT = os.environ.get("BENCH_VARIANT", "bare")

app = FastAPI(title="bench")


@app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


async def _numbered() -> dict[str, bool]:
    return {"ok": True}


# BENCH_ROUTES=N adds routes /r0 ... /r{N-1}: one series each once visited (scrape benchmarks).
for _number in range(int(os.environ.get("BENCH_ROUTES", "0"))):
    app.add_api_route(f"/r{_number}", _numbered, methods=["GET"])


def _otel() -> None:
    # The usual OpenTelemetry set-up: SDK provider, batch processor; spans go to an exporter that
    # drops them, so the figure is the instrumentation's own cost, not a collector's.
    from opentelemetry import trace
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    trace.set_tracer_provider(provider)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)


def _instrumentator() -> None:
    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator().instrument(app).expose(app)


class PassThrough:
    """The floor for any Python middleware: times the request and wraps `send`, nothing else."""

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        started = time.perf_counter()

        async def timed_send(message: dict) -> None:  # type: ignore[type-arg]
            await send(message)  # type: ignore[operator]
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last = time.perf_counter() - started

        await self.app(scope, receive, timed_send)  # type: ignore[operator]


class PassThroughWithId:
    """The floor for a middleware that echoes a request id: the pass-through, plus the response
    header (a fixed UUID-shaped value, so no id generation is counted). Adding any header costs
    the server its per-header checks; this variant measures that apart from our code. Written
    out in full rather than sharing PassThrough's lines: any shared helper would add its own cost
    to both floors."""

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        started = time.perf_counter()

        async def timed_send_with_id(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _ID_HEADER]}
            await send(message)  # type: ignore[operator]
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last = time.perf_counter() - started

        await self.app(scope, receive, timed_send_with_id)  # type: ignore[operator]


_ID_HEADER = (b"x-request-id", b"6f1f0b3c-3a52-4f9e-9d3c-0f7d9d3f6b1a")

if VARIANT == "bare":
    pass
elif VARIANT == "passthrough":
    app.add_middleware(PassThrough)
elif VARIANT == "passthrough+id":
    app.add_middleware(PassThroughWithId)
elif VARIANT in ("caddy-beacon", "caddy-beacon+tracing"):
    # With +tracing the bench sets OTEL_EXPORTER_OTLP_ENDPOINT: a span per request, exported.
    import caddy_beacon

    app.add_middleware(caddy_beacon.BeaconMiddleware, service_name="bench")
elif VARIANT == "instrumentator":
    _instrumentator()
elif VARIANT == "starlette-exporter":
    from starlette_exporter import PrometheusMiddleware, handle_metrics

    app.add_middleware(PrometheusMiddleware, group_paths=True)
    app.add_route("/metrics", handle_metrics)
elif VARIANT == "otel":
    _otel()
elif VARIANT == "instrumentator+otel":
    _instrumentator()
    _otel()
else:
    raise SystemExit(f"unknown BENCH_VARIANT {VARIANT!r}")

if os.environ.get("BENCH_NO_GC") == "1":  # diagnostic: how much of a variant's cost is the cyclic GC
    import gc

    gc.disable()

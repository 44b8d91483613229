"""The middleware is invisible to the app it wraps, on every loop Starlette and FastAPI run on:
asyncio (uvicorn with uvloop, hypercorn, granian) and trio (hypercorn -k trio), under real
servers; in-process, on anyio's asyncio and trio backends, as users' own test suites run it.

- readiness checks, draining, worker discovery and exact metrics on every server;
- the event-loop watchdog never wakes an idle loop, so `anyio.wait_all_tasks_blocked()`
  returns in a test of a wrapped app, and no blocking call reaches the event loop;
- a telemetry setting from the environment never keeps the app from starting;
- one X-Request-ID per response.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from caddy_beacon import BeaconMiddleware, ConfigError
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import PlainTextResponse

from tests.support.servers import Server
from tests.support.waiting import wait_until

PORTABLE = "tests.apps.portable:app"
SERVERS = ["uvicorn", "hypercorn", "hypercorn-trio", "granian", "granian-asyncio"]
BACKENDS = ["asyncio", "trio"]
COUNT = "http_server_request_duration_seconds_count"


def ready(server: Server) -> tuple[int, dict[str, Any]]:
    response = server.fresh_get("/ready")
    return response.status_code, response.json()


def check_status(server: Server, name: str) -> str | None:
    code, body = ready(server)
    return body.get("checks", {}).get(name, [{}])[0].get("status")  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", SERVERS)
def test_checks_metrics_and_the_watchdog_work_on_every_server(
    start: Callable[..., Server], tmp_path: Path, kind: str
) -> None:
    server = start(server=kind, app=PORTABLE, env={"TEST_STATE_DIR": str(tmp_path)})
    # Both checks run (one async on the app's loop, one plain function on a thread).
    assert wait_until(lambda: ready(server)[0] == 200 and check_status(server, "threaded") == "pass", timeout=10), (
        ready(server)
    )
    (tmp_path / "fail").touch()
    assert wait_until(lambda: ready(server)[0] == 503, timeout=5), ready(server)
    assert "database refused" in json.dumps(ready(server)[1])
    (tmp_path / "fail").unlink()
    assert wait_until(lambda: ready(server)[0] == 200, timeout=5), ready(server)

    for i in range(50):
        assert server.get(f"/items/{i}").status_code == 200
    assert server.value(COUNT, http_route="/items/{item_id}", http_response_status_code="200") == 50.0

    # The watchdog: an idle loop still counts heartbeats (read off its thread), and a loop
    # blocked for 1.2 s shows in the lag histogram once it runs again.
    idle_count = server.value("beacon_event_loop_lag_seconds_count")
    time.sleep(0.5)
    assert (server.value("beacon_event_loop_lag_seconds_count") or 0) > (idle_count or 0)
    assert server.get("/block/1.2").text == "blocked"
    assert wait_until(lambda: (server.value("beacon_event_loop_lag_seconds_sum") or 0) >= 1.0, timeout=5)
    assert "are off" not in server.log(), server.log()


@pytest.mark.parametrize("kind", ["uvicorn", "granian-asyncio"])
def test_draining_on_sigterm(start: Callable[..., Server], kind: str) -> None:
    """uvicorn handles SIGTERM with a Python handler, granian's worker on asyncio's loop with
    `add_signal_handler`: both are held for the window."""
    server = start(server=kind, app=PORTABLE, env={"BEACON_DRAIN_SECONDS": "2"})
    assert wait_until(lambda: ready(server)[0] == 200, timeout=10)
    signalled = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert wait_until(lambda: ready(server)[0] == 503, timeout=2), ready(server)
    assert ready(server)[1]["status"] == "fail"
    # Still serving within the window.
    assert server.fresh_get("/items/7").json() == {"id": 7}
    server.process.wait(timeout=20)
    assert time.monotonic() - signalled >= 2, "the server stopped before the window ended"
    assert "draining" in server.log() and "is off" not in server.log()


@pytest.mark.parametrize("kind", ["hypercorn", "hypercorn-trio", "granian"])
def test_where_draining_cannot_hold_the_shutdown_it_says_so_once(start: Callable[..., Server], kind: str) -> None:
    """hypercorn stops its workers through a multiprocessing event, never a signal to them;
    granian's worker on uvloop dispatches SIGTERM where no one can take it over. The worker
    says so once at start, and still stops cleanly (the companion drains in Caddy instead)."""
    server = start(server=kind, app=PORTABLE, env={"BEACON_DRAIN_SECONDS": "2"})
    assert wait_until(lambda: "draining on SIGTERM is off in this worker" in server.log(), timeout=10), server.log()
    assert server.log().count("draining on SIGTERM is off") == 1
    assert server.fresh_get("/items/7").json() == {"id": 7}
    server.send_signal(signal.SIGTERM)
    server.process.wait(timeout=20)


@pytest.mark.parametrize("kind", ["hypercorn", "granian"])
def test_workers_of_other_servers_share_one_truth(start: Callable[..., Server], kind: str) -> None:
    server = start(server=kind, app=PORTABLE, workers=2)
    pids = set()
    for i in range(200):
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            client.get(f"/items/{i}")
            if i % 10 == 0:
                pids.add(client.get("/whoami").json()["pid"])
    assert len(pids) == 2, f"the load reached only {pids}"
    counts = []
    for _ in range(10):
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            counts.append(_count(client))
    assert counts == [200.0] * 10


def _count(client: httpx.Client) -> float | None:
    """The /items/{item_id} count in one scrape, on a new connection (another worker)."""
    text = client.get("/metrics").text
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == COUNT and s.labels.get("http_route") == "/items/{item_id}"
    ]
    return found[0] if found else None


# --- in-process, as users' own test suites run a wrapped app ----------------------------------


def own_id_app() -> FastAPI:
    app = FastAPI()

    @app.get("/own")
    async def own() -> PlainTextResponse:
        return PlainTextResponse("mine", headers={"X-Request-ID": "app-own-id"})

    @app.get("/plain")
    async def plain() -> PlainTextResponse:
        return PlainTextResponse("plain")

    async def slow_check() -> bool:
        return True

    app.add_middleware(BeaconMiddleware, checks={"db": slow_check}, drain_seconds=0)
    return app


def run(backend: str, test: Callable[[], Any]) -> Any:
    return anyio.run(test, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wait_all_tasks_blocked_returns_in_a_test_of_a_wrapped_app(backend: str) -> None:
    """anyio's helper returns once every other task waits: our background work (checks, the
    watchdog) must not keep it from that."""
    app = own_id_app()

    async def main() -> float:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert (await client.get("/plain")).status_code == 200
            started = time.monotonic()
            with anyio.fail_after(10):
                for _ in range(5):
                    await anyio.wait_all_tasks_blocked()
            return time.monotonic() - started

    took = run(backend, main)
    assert took < 5, f"wait_all_tasks_blocked took {took:.1f}s"


def voluntary_switches(tid: int) -> int:
    """How often thread `tid` of this process has blocked and been woken again."""
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches:")))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_idle_loop_is_not_woken(backend: str) -> None:
    """Two idle seconds after a request: the loop's thread sleeps through them (its check runs
    every 5 s; the watchdog reads the thread from outside). A heartbeat task woke it 20 times."""
    app = own_id_app()

    async def main() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert (await client.get("/plain")).status_code == 200
            await anyio.sleep(0.5)  # the first check run ends
            tid = threading.get_native_id()
            before = voluntary_switches(tid)
            await anyio.sleep(2)
            return voluntary_switches(tid) - before

    woken = run(backend, main)
    assert woken <= 3, f"the idle loop was woken {woken} times in 2 s"


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_request_id_per_response(backend: str) -> None:
    app = own_id_app()

    async def main() -> tuple[list[str], list[str], list[str]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            own = await client.get("/own", headers={"X-Request-ID": "caddy-id-123"})
            plain = await client.get("/plain", headers={"X-Request-ID": "caddy-id-123"})
            generated = await client.get("/plain")
            return (
                own.headers.get_list("x-request-id"),
                plain.headers.get_list("x-request-id"),
                generated.headers.get_list("x-request-id"),
            )

    own, plain, generated = run(backend, main)
    assert own == ["app-own-id"], "the app's own id wins, alone"
    assert plain == ["caddy-id-123"]
    assert len(generated) == 1 and generated[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_blocking_call_reaches_the_event_loop(backend: str) -> None:
    """blockbuster raises on a blocking call (a file read, a sleep) made on the event loop: the
    middleware is built (Starlette builds its stack on the first request, on the loop), starts
    and serves under it."""
    blockbuster = pytest.importorskip("blockbuster")
    app = own_id_app()

    async def main() -> int:
        with blockbuster.blockbuster_ctx():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                statuses = [
                    (await client.get(path)).status_code for path in ("/plain", "/own", "/metrics", "/health", "/ready")
                ]
        # /ready is 503 until the check's first run has passed: an answer, not a blocking call.
        assert statuses[:4] == [200, 200, 200, 200] and statuses[4] in (200, 503), statuses
        return len(statuses)

    assert run(backend, main) == 5


def test_a_bad_telemetry_setting_from_the_environment_never_stops_the_app(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "not-a-url")
    monkeypatch.setenv("BEACON_DRAIN_SECONDS", "soon")
    with caplog.at_level("WARNING", logger="caddy_beacon"):
        middleware = BeaconMiddleware(own_id_app())
    assert middleware.tracing is None and middleware.config.drain_seconds == 5.0
    lines = [r.getMessage() for r in caplog.records]
    assert sum("tracing is off" in line and "not-a-url" in line for line in lines) == 1, lines
    assert sum("BEACON_DRAIN_SECONDS='soon'" in line for line in lines) == 1, lines
    # Strict: the same environment refuses to start, naming the variable.
    with pytest.raises(ConfigError, match="BEACON_DRAIN_SECONDS='soon'"):
        BeaconMiddleware(own_id_app(), strict=True)
    monkeypatch.delenv("BEACON_DRAIN_SECONDS")
    with pytest.raises(ConfigError, match="not-a-url"):
        BeaconMiddleware(own_id_app(), strict=True)
    monkeypatch.setenv("BEACON_STRICT", "1")
    with pytest.raises(ConfigError):
        BeaconMiddleware(own_id_app())
    # A value passed in code that cannot work raises, strict or not.
    monkeypatch.delenv("BEACON_STRICT")
    with pytest.raises(ConfigError, match="drain_seconds=-1"):
        BeaconMiddleware(own_id_app(), drain_seconds=-1)


def test_a_bad_telemetry_setting_from_the_environment_never_stops_a_real_server(start: Callable[..., Server]) -> None:
    server = start(app=PORTABLE, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "not-a-url", "OTEL_TRACES_SAMPLER": "sometimes"})
    assert server.get("/items/1").json() == {"id": 1}
    assert server.log().count("tracing is off") == 1, server.log()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_that_cannot_start_a_piece_still_serves(
    backend: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A start that fails halfway (here: the loop cannot be told apart) is said once, and
    requests go on through the native path: no recursion, no failed request."""
    import caddy_beacon._middleware as middleware

    def broken() -> None:
        raise RuntimeError("no loop for you")

    monkeypatch.setattr(middleware, "current_backend", broken)
    app = own_id_app()

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return [(await client.get("/plain")).status_code for _ in range(20)]

    with caplog.at_level("ERROR", logger="caddy_beacon"):
        assert run(backend, main) == [200] * 20
    assert sum("starting in this worker failed" in r.getMessage() for r in caplog.records) == 1

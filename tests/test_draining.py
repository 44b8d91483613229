"""Draining on SIGTERM: /ready turns 503 at once, requests are still served for drain_seconds,
then the server shuts down gracefully. Under uvicorn and under gunicorn's UvicornWorker."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.servers import Server
from tests.support.waiting import wait_until

DRAIN = 2.0
# uvicorn re-raises the SIGTERM it handled once it has shut down, so a clean stop ends "killed
# by SIGTERM"; gunicorn's master exits 0.
CLEAN_EXIT = (0, -signal.SIGTERM)


@pytest.mark.parametrize("server_kind,workers", [("uvicorn", 1), ("gunicorn", 2)])
def test_sigterm_drains_before_shutdown(start: Callable[..., Server], server_kind: str, workers: int) -> None:
    server = start(server=server_kind, workers=workers, env={"BEACON_DRAIN_SECONDS": str(DRAIN)})
    assert server.get("/ready").status_code == 200

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        # A request already in flight when the signal arrives must complete.
        in_flight = pool.submit(server.fresh_get, "/sleep/1.0")
        time.sleep(0.2)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)

        def draining() -> bool:
            response = server.fresh_get("/ready")
            return response.status_code == 503 and response.json().get("output") == "draining: shutting down"

        assert wait_until(draining, timeout=1.0), "/ready did not turn 503 within 1 s of SIGTERM"
        # Still serving: new requests during the window succeed (on new connections, so every
        # worker gets some).
        served = 0
        while time.monotonic() - signalled < DRAIN * 0.6 and served < 200:
            assert server.fresh_get("/items/1").status_code == 200
            assert server.fresh_get("/health").status_code == 200
            served += 1
        assert served >= 3
        assert in_flight.result(timeout=10).status_code == 200

    assert server.process.wait(timeout=DRAIN + 15) in CLEAN_EXIT
    elapsed = time.monotonic() - signalled
    assert elapsed >= DRAIN - 0.1, f"exited after {elapsed:.2f}s, before the drain window ended"
    with pytest.raises(httpx.TransportError):
        server.fresh_get("/health")
    assert "draining" in server.log()


def test_a_second_sigterm_shuts_down_at_once(start: Callable[..., Server]) -> None:
    server = start(env={"BEACON_DRAIN_SECONDS": "30"})
    server.send_signal(signal.SIGTERM)
    assert wait_until(lambda: server.fresh_get("/ready").status_code == 503, timeout=1.0)
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=10) in CLEAN_EXIT
    assert time.monotonic() - started < 5


def test_zero_drain_seconds_shuts_down_immediately(start: Callable[..., Server]) -> None:
    server = start(env={"BEACON_DRAIN_SECONDS": "0"})
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=10) in CLEAN_EXIT
    assert time.monotonic() - started < 3


def test_while_draining_http1_responses_close_their_connection(start: Callable[..., Server]) -> None:
    # A proxy still sending to a draining replica then dials afresh for each request: refused
    # once the replica is gone (retried elsewhere), never a keep-alive connection reset mid-request.
    server = start(env={"BEACON_DRAIN_SECONDS": "10"})
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        before = client.get("/items/1")
        assert before.status_code == 200 and "connection" not in before.headers
        server.send_signal(signal.SIGTERM)
        assert wait_until(lambda: server.fresh_get("/ready").status_code == 503, timeout=1.0)
        during = client.get("/items/1")
        assert during.status_code == 200
        assert during.headers["connection"] == "close"
        assert during.headers["x-request-id"], "the request id header is still there"
    server.send_signal(signal.SIGTERM)

"""Readiness from background checks, with liveness that never depends on them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.support.servers import Server
from tests.support.waiting import wait_until


def _ready(server: Server) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = server.get("/ready")
    assert response.headers["content-type"] == "application/health+json"
    return response.status_code, response.json()


def test_no_checks_means_ready_after_startup(shared_server: Server) -> None:
    status, body = _ready(shared_server)
    assert (status, body) == (200, {"status": "pass", "checks": {}})
    assert shared_server.get("/health").json() == {"status": "pass"}
    assert shared_server.value("beacon_ready") == 1


def test_readiness_follows_a_dependency_while_liveness_stays_up(start: Callable[..., Server], tmp_path: Path) -> None:
    server = start(env={"TEST_CHECKS": "toggle", "TEST_STATE_DIR": str(tmp_path)})
    assert wait_until(lambda: _ready(server)[0] == 200, timeout=5)
    status, body = _ready(server)
    check = body["checks"]["toggle"][0]
    assert check["status"] == "pass" and check["output"] == "connected"
    assert check["observedUnit"] == "ms" and check["observedValue"] >= 0 and check["time"].endswith("Z")
    assert server.value("beacon_check_up", check="toggle") == 1

    (tmp_path / "fail").touch()
    assert wait_until(lambda: _ready(server)[0] == 503, timeout=3)
    status, body = _ready(server)
    assert body["status"] == "fail"
    assert body["checks"]["toggle"][0]["output"] == "ConnectionError: database refused the connection"
    assert server.get("/health").status_code == 200
    assert server.get("/items/1").status_code == 200
    assert server.value("beacon_ready") == 0
    assert server.value("beacon_check_up", check="toggle") == 0
    assert (server.value("beacon_check_duration_seconds", check="toggle") or 0) >= 0

    (tmp_path / "fail").unlink()
    assert wait_until(lambda: _ready(server)[0] == 200, timeout=3)
    assert server.value("beacon_ready") == 1


def test_failing_slow_and_hanging_checks_fail_only_themselves(start: Callable[..., Server], tmp_path: Path) -> None:
    server = start(env={"TEST_CHECKS": "failing,slow,hanging,blocking,fine", "TEST_STATE_DIR": str(tmp_path)})

    def settled() -> bool:
        checks = _ready(server)[1]["checks"]
        return all("time" in checks[name][0] for name in checks)

    assert wait_until(settled, timeout=5)
    time.sleep(1.0)  # a few more rounds, so hung runs are met by their successors
    status, body = _ready(server)
    checks = {name: entries[0] for name, entries in body["checks"].items()}
    assert status == 503 and body["status"] == "fail"
    assert checks["fine"]["status"] == "pass"
    assert checks["failing"] == {**checks["failing"], "status": "fail", "output": "RuntimeError: always down"}
    assert checks["slow"]["output"] == "timed out after 0.3s"
    # The slow check honours cancellation, so each round starts a fresh run.
    assert checks["hanging"]["output"] == "previous run is still hanging"
    assert checks["blocking"]["output"] == "previous run is still hanging"
    # Hung checks are not restarted on top of themselves.
    assert len((tmp_path / "runs-hanging").read_text().splitlines()) == 1
    assert len((tmp_path / "runs-blocking").read_text().splitlines()) == 1
    assert len((tmp_path / "runs-slow").read_text().splitlines()) >= 2

    # The event loop is free: liveness and requests answer promptly.
    started = time.monotonic()
    assert server.get("/health").status_code == 200
    assert server.get("/items/1").status_code == 200
    assert time.monotonic() - started < 1.0


def test_unready_until_the_first_round_of_critical_checks_passed(start: Callable[..., Server], tmp_path: Path) -> None:
    server = start(env={"TEST_CHECKS": "late", "TEST_STATE_DIR": str(tmp_path)})
    status, body = _ready(server)
    assert status == 503
    assert body["checks"]["late"][0]["output"] == "no result yet"
    assert wait_until(lambda: _ready(server)[0] == 200, timeout=5)
    assert _ready(server)[1]["checks"]["late"][0]["output"] == "warmed up"


def test_a_failing_optional_check_warns_but_stays_ready(start: Callable[..., Server], tmp_path: Path) -> None:
    server = start(env={"TEST_CHECKS": "optional,fine", "TEST_STATE_DIR": str(tmp_path)})
    assert wait_until(lambda: "time" in _ready(server)[1]["checks"]["optional"][0], timeout=5)
    assert wait_until(lambda: _ready(server)[1]["status"] == "warn", timeout=5)
    status, body = _ready(server)
    assert status == 200
    assert body["checks"]["optional"][0]["critical"] is False


def test_probes_never_trigger_checks(start: Callable[..., Server], tmp_path: Path) -> None:
    server = start(env={"TEST_CHECKS": "fine", "TEST_STATE_DIR": str(tmp_path)})
    runs = tmp_path / "runs-fine"
    assert wait_until(runs.exists, timeout=5)
    started = time.monotonic()
    for _ in range(200):
        assert server.get("/ready").status_code == 200
    elapsed = time.monotonic() - started
    count = len(runs.read_text().splitlines())
    # One run per 0.2 s interval (plus the first), however many probes arrived.
    assert count <= elapsed / 0.2 + 3, (count, elapsed)

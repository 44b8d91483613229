"""Each x86_64 wheel, installed without Rust into its own CPython, serves a FastAPI app and its
`caddy-beacon` command joins the module Caddy's pool and leaves it drained: the two things a
user of the wheel does first."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.dist.conftest import InstalledWheel
from tests.support.caddy import MODULE_CADDY, Caddies
from tests.support.companion import Companion, sigterm_with_a_request_in_flight
from tests.support.hostile import process_stats
from tests.support.ports import free_port
from tests.support.waiting import wait_until

SMOKE_APP_DIR = Path(__file__).resolve().parent
POOL = "smoke"
POOL_SITE = f"""
	reverse_proxy {{
		dynamic beacon {POOL} {{
			health_interval 500ms
			health_timeout 400ms
		}}
		header_up X-Request-ID {{http.request.uuid}}
	}}
"""


def uvicorn(installed: InstalledWheel, port: int) -> list[str]:
    return [
        str(installed.python), "-m", "uvicorn", "smoke_app:app", "--app-dir", str(SMOKE_APP_DIR),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip


def app_env(installed: InstalledWheel) -> dict[str, str]:
    """Nothing of the checkout on the app's import path: caddy_beacon comes from the wheel."""
    return {"PYTHONPATH": "", "VIRTUAL_ENV": str(installed.venv), "BEACON_DRAIN_SECONDS": "0"}


def assert_item_served_natively(installed: InstalledWheel, response: httpx.Response, request_id: str) -> None:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["x-request-id"] == request_id == body["request_id"]
    assert body["python"] == installed.version
    assert Path(body["package"]).is_relative_to(installed.venv), body["package"]
    assert Path(body["native_module"]).is_relative_to(installed.venv), body["native_module"]
    assert body["armed"] is True and body["package_frames"] == [], body


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text) for s in family.samples
    ]


def test_the_wheel_serves_probes_metrics_and_ids_on_the_native_path(installed: InstalledWheel, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    with open(log, "wb") as output:
        app = subprocess.Popen(uvicorn(installed, port), cwd=tmp_path, env={**os.environ, **app_env(installed)},
                               stdout=output, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def up() -> bool:
                assert app.poll() is None, log.read_text()
                try:
                    return client.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_until(up, timeout=30), log.read_text()
            assert client.get("/health").json() == {"status": "pass"}
            assert wait_until(lambda: client.get("/ready").status_code == 200, timeout=10)
            assert client.get("/ready").json()["status"] == "pass"
            for item in (1, 2, 3):
                request_id = f"smoke-{installed.version}-{item}"
                response = client.get(f"/items/{item}", headers={"X-Request-ID": request_id})
                assert_item_served_natively(installed, response, request_id)
            # An id that is not visible ASCII is never reflected: a generated one replaces it.
            replaced = client.get("/items/4", headers={"X-Request-ID": "bad id\twith space"})
            assert replaced.headers["x-request-id"] != "bad id\twith space"
            assert re.fullmatch(r"[0-9a-f-]{36}", replaced.headers["x-request-id"]), replaced.headers
            scrape = samples(client.get("/metrics").text)
        counts = {
            labels["http_route"]: value
            for name, labels, value in scrape
            if name == "http_server_request_duration_seconds_count" and labels["http_request_method"] == "GET"
        }
        assert counts == {"/items/{item_id}": 4}, counts
        assert any(
            n == "target_info" and labels.get("service_name") == "dist-smoke" and v == 1 for n, labels, v in scrape
        ), scrape
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=20)
    print(
        f"\nFIGURE {installed.tag}: {installed.wheel.name} ({installed.wheel.stat().st_size:,} bytes) installed in {installed.install_seconds:.1f} s"
    )


def pool(caddy: Any) -> list[dict[str, Any]]:
    with caddy.admin_client() as client:
        return client.get("/beacon/pools").json()["pools"].get(POOL, {}).get("upstreams", [])  # type: ignore[no-any-return]


def test_the_installed_companion_joins_the_module_caddy_and_leaves_drained(
    installed: InstalledWheel, caddies: Caddies, companions: Callable[..., Companion]
) -> None:
    assert MODULE_CADDY.exists(), "`make caddy` builds the module Caddy (make test does)"
    assert installed.companion.read_bytes()[:4] == b"\x7fELF", "the installed command is the native companion"
    caddy = caddies(POOL_SITE, module=True)
    port = free_port()
    companion = companions(
        caddy, f"127.0.0.1:{port}", site="", command=uvicorn(installed, port), env=app_env(installed),
        program=str(installed.companion), args=("--pool", POOL, "--drain-timeout", "15s"),
    )  # fmt: skip
    companion.wait_registered()
    assert wait_until(
        lambda: [(u["address"], u["healthy"]) for u in pool(caddy)] == [(companion.upstream, True)], timeout=10
    ), pool(caddy)
    time.sleep(3)  # idle: registered, renewing its lease, the app ready
    resident, _ = process_stats(companion.process.pid)
    # Through Caddy: its request id (a UUID) reaches the app and comes back.
    with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
        response = client.get("/items/9")
    request_id = response.headers.get("x-request-id", "")
    assert uuid.UUID(request_id), response.headers
    assert_item_served_natively(installed, response, request_id)
    # SIGTERM with a request in flight: out of the pool's rotation first, the request finishes,
    # then the app stops and the companion exits 0.
    assert sigterm_with_a_request_in_flight(companion, caddy.base_url, lambda: pool(caddy)).status_code == 200
    assert pool(caddy) == []
    assert f"drained and removed from pool {POOL}" in companion.log()
    size = installed.companion.stat().st_size
    print(f"\nFIGURE {installed.tag}: installed companion {size:,} bytes, idle RSS {resident / 2**20:.1f} MiB")
    assert resident < 12 * 2**20, f"{resident / 2**20:.1f} MiB resident"

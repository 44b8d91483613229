"""Request metrics through a real uvicorn server: exact counts, errors, streaming, WebSockets,
exposition formats and the series cap."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path

import httpx
import websockets
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests.support.servers import Server

COUNT = "http_server_request_duration_seconds_count"
SUM = "http_server_request_duration_seconds_sum"
BUCKET = "http_server_request_duration_seconds_bucket"


def test_counts_are_exact_under_concurrency(shared_server: Server) -> None:
    route = {"http_route": "/items/{item_id}", "http_request_method": "POST"}
    assert shared_server.value(COUNT, **route) is None  # POST /items/{id} does not exist: 405

    before_get = shared_server.value(COUNT, http_route="/items/{item_id}", http_response_status_code="200") or 0
    total = 300

    def hit(worker: int) -> list[int]:
        with httpx.Client(base_url=shared_server.base_url) as client:
            return [client.get(f"/items/{i}").status_code for i in range(worker, total, 8)]

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [status for batch in pool.map(hit, range(8)) for status in batch]
    assert statuses == [200] * total

    after_get = shared_server.value(COUNT, http_route="/items/{item_id}", http_response_status_code="200")
    assert after_get == before_get + total
    inf = shared_server.value(BUCKET, http_route="/items/{item_id}", http_response_status_code="200", le="+Inf")
    assert inf == after_get
    assert shared_server.value("http_server_active_requests", http_request_method="GET") == 0


def test_probe_and_metrics_endpoints_are_not_counted(shared_server: Server) -> None:
    for _ in range(5):
        shared_server.get("/health")
        shared_server.get("/ready")
    routes = {labels["http_route"] for name, labels, _ in shared_server.metrics() if name == COUNT}
    assert not routes & {"/health", "/ready", "/metrics"}


def test_unhandled_exception_is_recorded_as_500_and_reraised(shared_server: Server) -> None:
    before = shared_server.value(COUNT, http_route="/boom", http_response_status_code="500") or 0
    response = shared_server.fresh_get("/boom")
    assert response.status_code == 500
    assert shared_server.value(COUNT, http_route="/boom", http_response_status_code="500") == before + 1
    # Re-raised unchanged: the server logged the app's own exception and traceback.
    assert "RuntimeError: boom: unhandled" in shared_server.log()


def test_handled_http_errors_keep_their_status(shared_server: Server) -> None:
    assert shared_server.get("/teapot").status_code == 418
    assert shared_server.value(COUNT, http_route="/teapot", http_response_status_code="418") == 1


def test_streaming_is_timed_to_the_last_byte(shared_server: Server) -> None:
    with shared_server.client.stream("GET", "/stream") as response:
        body = b"".join(response.iter_bytes())
    assert body.count(b"chunk") == 3
    total = shared_server.value(SUM, http_route="/stream")
    assert total is not None and total >= 0.7, total
    # Below 0.5 s would mean the clock stopped at the response start.
    assert shared_server.value(BUCKET, http_route="/stream", le="0.5") == 0


def test_websockets_pass_through_and_are_not_counted(shared_server: Server) -> None:
    url = shared_server.base_url.replace("http://", "ws://") + "/ws"

    async def talk() -> list[str]:
        async with websockets.connect(url) as ws:
            replies = []
            for word in ["a", "b"]:
                await ws.send(word)
                replies.append(str(await ws.recv()))
            return replies

    assert asyncio.run(talk()) == ["echo a", "echo b"]
    routes = {labels["http_route"] for name, labels, _ in shared_server.metrics() if name == COUNT}
    assert "/ws" not in routes


def test_openmetrics_is_negotiated(shared_server: Server) -> None:
    shared_server.get("/items/1")
    plain = shared_server.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in plain.text

    accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    om = shared_server.get("/metrics", headers={"Accept": accept})
    assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert om.text.endswith("# EOF\n")
    families = {family.name: family for family in parse_openmetrics(om.text)}
    assert families["http_server_request_duration_seconds"].type == "histogram"
    assert families["beacon_series_dropped"].type == "counter"
    assert families["target"].type == "info"


def test_process_metrics_and_target_info(shared_server: Server) -> None:
    assert (shared_server.value("process_resident_memory_bytes") or 0) > 10_000_000
    assert (shared_server.value("process_cpu_seconds_total") or 0) > 0
    assert (shared_server.value("process_open_fds") or 0) > 3
    assert (shared_server.value("process_start_time_seconds") or 0) > 1_600_000_000
    # No service_name option: the app's title is used.
    assert shared_server.value("target_info", service_name="beacon-test-app") == 1


def test_series_cap_refuses_new_series_and_counts_them(start: Callable[..., Server]) -> None:
    server = start(env={"BEACON_MAX_SERIES": "3", "BEACON_SERVICE_NAME": "capped"})
    for i in range(3):
        server.get(f"/items/{i}")  # one series: GET /items/{item_id} 200
    server.get("/teapot")  # two
    server.get("/nope")  # three
    for _ in range(4):
        server.fresh_get("/boom")  # refused
        server.get("/legacy/x")  # refused
    series = {(got["http_route"], got["http_response_status_code"]) for n, got, _ in server.metrics() if n == COUNT}
    assert series == {("/items/{item_id}", "200"), ("/teapot", "418"), ("__unmatched__", "404")}
    assert server.value("beacon_series_dropped_total") == 8
    # Existing series keep counting after the cap is reached.
    server.get("/items/9")
    assert server.value(COUNT, http_route="/items/{item_id}") == 4
    assert server.value("target_info", service_name="capped") == 1


def test_custom_buckets_from_the_environment(start: Callable[..., Server]) -> None:
    server = start(env={"BEACON_BUCKETS": "0.05,0.2"})
    server.get("/sleep/0.1")
    bounds = {got["le"]: v for n, got, v in server.metrics() if n == BUCKET and got["http_route"] == "/sleep/{seconds}"}
    assert bounds == {"0.05": 0, "0.2": 1, "+Inf": 1}


def test_bad_configuration_from_the_environment_is_said_once_and_fails_startup_only_when_strict(tmp_path: Path) -> None:
    from tests.support.servers import launch

    server = launch(tmp_path, env={"BEACON_BUCKETS": "0.5,0.1"})
    try:
        assert server.get("/items/1").status_code == 200
        lines = [line for line in server.log().splitlines() if "BEACON_BUCKETS='0.5,0.1'" in line]
        assert len(lines) == 1 and "strictly increasing" in lines[0] and "using the default" in lines[0], server.log()
        assert server.value("http_server_request_duration_seconds_bucket", le="0.005") is not None, (
            "the default buckets"
        )
    finally:
        server.stop()
    try:
        launch(tmp_path, env={"BEACON_BUCKETS": "0.5,0.1", "BEACON_STRICT": "1"})
    except RuntimeError as error:
        message = str(error)
    else:
        raise AssertionError("a strict server started with invalid buckets")
    assert "BEACON_BUCKETS='0.5,0.1'" in message
    assert "strictly increasing" in message
    assert '/health HTTP/1.1" 200' not in message

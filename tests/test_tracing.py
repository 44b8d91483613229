"""Server spans from the middleware: W3C trace context, sampling, attributes, exemplars,
export back-pressure, forked workers and the OpenTelemetry Python API."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from examples.otlp_receiver import OtlpReceiver
from tests.support.ports import free_port
from tests.support.servers import Server
from tests.support.waiting import holds_for, wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
UNSAMPLED_PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-00"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver().start()
    yield running
    running.stop()


def traced(start: Callable[..., Server], receiver: OtlpReceiver, **env: str) -> Server:
    return start(env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50", **env})


def spans_for(receiver: OtlpReceiver, request_id: str, timeout: float = 10) -> list:  # type: ignore[type-arg]
    wait_until(lambda: bool(receiver.find(**{"http.request.header.x-request-id": [request_id]})), timeout=timeout)
    return receiver.find(**{"http.request.header.x-request-id": [request_id]})


def test_a_valid_traceparent_makes_the_span_its_child(start: Callable[..., Server], receiver: OtlpReceiver) -> None:
    server = traced(start, receiver)
    response = server.get(
        "/items/5?q=1",
        headers={
            "traceparent": PARENT,
            "tracestate": "congo=t61rcWkgMzE",
            "x-request-id": "rid-valid",
            "user-agent": "probe/1",
        },
    )
    assert response.status_code == 200
    [span] = spans_for(receiver, "rid-valid")
    assert (span.trace_id, span.parent_span_id) == (TRACE_ID, "00f067aa0ba902b7")
    assert span.name == "GET /items/{item_id}" and span.kind == 2
    assert span.trace_state == "congo=t61rcWkgMzE"
    assert span.flags & 0x1 and span.flags & 0x300 == 0x300  # sampled, parent is remote
    assert span.status_code == 0
    assert span.end > span.start
    attributes = span.attributes
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/items/{item_id}"
    assert attributes["url.path"] == "/items/5"
    assert attributes["http.response.status_code"] == 200
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["user_agent.original"] == "probe/1"
    assert span.resource["service.name"] == "beacon-test-app"
    assert span.resource["service.instance.id"]


@pytest.mark.parametrize(
    "headers",
    [
        [("traceparent", f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01")],
        [("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra")],
        [("traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01")],
        [("traceparent", PARENT + "x" * 5000)],
        [("traceparent", PARENT), ("traceparent", f"00-{'a' * 32}-{'b' * 16}-01")],
        [("traceparent", "garbage"), ("tracestate", "congo=t61rcWkgMzE")],
    ],
    ids=["uppercase", "version-00-with-extra", "zero-trace-id", "oversized", "duplicated", "garbage"],
)
def test_an_invalid_traceparent_starts_a_new_trace(
    start: Callable[..., Server], receiver: OtlpReceiver, headers: list[tuple[str, str]]
) -> None:
    server = traced(start, receiver)
    request_id = f"rid-{free_port()}"
    response = server.get("/trace", headers=headers + [("x-request-id", request_id)])
    assert response.status_code == 200
    [span] = spans_for(receiver, request_id)
    assert span.trace_id != TRACE_ID and span.trace_id != "0" * 32
    assert span.parent_span_id == ""
    assert span.trace_state == ""
    assert response.json()["trace_id"] == span.trace_id


def test_sampling_decisions(start: Callable[..., Server], receiver: OtlpReceiver) -> None:
    server = traced(start, receiver)
    # The caller did not sample: no span, but the trace id is still the caller's.
    unsampled = server.get("/trace", headers={"traceparent": UNSAMPLED_PARENT, "x-request-id": "rid-unsampled"})
    assert unsampled.json()["trace_id"] == TRACE_ID
    # A new trace under the default parentbased_always_on is sampled.
    server.get("/trace", headers={"x-request-id": "rid-root"})
    assert len(spans_for(receiver, "rid-root")) == 1
    assert holds_for(lambda: receiver.find(**{"http.request.header.x-request-id": ["rid-unsampled"]}) == [], 0.3)


def test_always_off_exports_nothing(start: Callable[..., Server], receiver: OtlpReceiver) -> None:
    server = traced(start, receiver, OTEL_TRACES_SAMPLER="always_off")
    for _ in range(5):
        assert server.get("/items/1", headers={"traceparent": PARENT}).status_code == 200
    assert holds_for(lambda: receiver.spans == [], 0.5)
    assert server.value("beacon_spans_exported_total") == 0


def test_server_errors_mark_the_span(start: Callable[..., Server], receiver: OtlpReceiver) -> None:
    server = traced(start, receiver)
    assert server.fresh_get("/boom", headers={"x-request-id": "rid-boom"}).status_code == 500
    assert server.get("/teapot", headers={"x-request-id": "rid-teapot"}).status_code == 418
    [boom] = spans_for(receiver, "rid-boom")
    [teapot] = spans_for(receiver, "rid-teapot")
    assert boom.status_code == 2 and boom.attributes["http.response.status_code"] == 500
    assert teapot.status_code == 0


def test_exemplars_point_at_exported_traces(start: Callable[..., Server], receiver: OtlpReceiver) -> None:
    server = traced(start, receiver)
    server.get("/items/3", headers={"x-request-id": "rid-exemplar"})
    [span] = spans_for(receiver, "rid-exemplar")
    text = server.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
    exemplars = [
        sample.exemplar
        for family in parse_openmetrics(text)
        if family.name == "http_server_request_duration_seconds"
        for sample in family.samples
        if sample.exemplar is not None and sample.labels.get("http_route") == "/items/{item_id}"
    ]
    assert exemplars, text
    assert exemplars[0].labels == {"trace_id": span.trace_id, "span_id": span.span_id}
    assert "trace_id" not in server.get("/metrics").text  # the classic format has no exemplars


def test_trace_id_in_handlers_and_logs(start: Callable[..., Server], receiver: OtlpReceiver) -> None:
    server = traced(start, receiver)
    body = server.get("/trace", headers={"traceparent": PARENT, "x-request-id": "rid-log"}).json()
    assert body["trace_id"] == TRACE_ID
    assert f"LOG request_id=rid-log trace_id={TRACE_ID} tracing" in server.log()


def test_no_endpoint_means_no_tracing(start: Callable[..., Server]) -> None:
    server = start()
    assert server.get("/trace").json()["trace_id"] is None
    assert server.value("beacon_spans_exported_total") is None


def test_an_unreachable_collector_only_logs_once(start: Callable[..., Server]) -> None:
    closed = free_port()
    server = start(env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}", "OTEL_BSP_SCHEDULE_DELAY": "50"})
    started = time.monotonic()
    for _ in range(20):
        assert server.get("/items/1").status_code == 200
        time.sleep(0.02)
    assert time.monotonic() - started < 5
    assert wait_until(lambda: (server.value("beacon_spans_failed_total") or 0) > 0, timeout=5)
    assert server.log().count("caddy-beacon: could not export") == 1


def assert_requests_never_wait_for(server: Server) -> None:
    """60 requests against a collector that holds every export: none waits for it, and spans
    beyond the small queue are dropped and counted."""
    latencies = []
    for _ in range(60):
        started = time.monotonic()
        assert server.get("/items/1").status_code == 200
        latencies.append(time.monotonic() - started)
    assert max(latencies) < 1.0, max(latencies)
    assert (server.value("beacon_spans_dropped_total") or 0) > 0


SMALL_QUEUE = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_BSP_MAX_QUEUE_SIZE": "5", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "5"}


def test_a_slow_collector_drops_spans_instead_of_slowing_requests(start: Callable[..., Server]) -> None:
    slow = OtlpReceiver(delay=2.0).start()
    try:
        assert_requests_never_wait_for(start(env={"OTEL_EXPORTER_OTLP_ENDPOINT": slow.endpoint, **SMALL_QUEUE}))
    finally:
        slow.stop()


def test_a_hanging_collector_never_holds_up_requests(start: Callable[..., Server]) -> None:
    # Accepts connections (the kernel does, from the backlog) and never answers a byte.
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(64)
    try:
        endpoint = f"http://127.0.0.1:{hanging.getsockname()[1]}"
        assert_requests_never_wait_for(start(env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **SMALL_QUEUE}))
    finally:
        hanging.close()


def test_preloaded_gunicorn_workers_each_export(start: Callable[..., Server], receiver: OtlpReceiver) -> None:
    server = start(
        server="gunicorn",
        workers=3,
        args=("--preload",),
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"},
    )
    total = 60
    for i in range(total):
        assert server.fresh_get("/items/1", headers={"x-request-id": f"rid-fork-{i}"}).status_code == 200
    assert wait_until(lambda: len(receiver.spans) >= total, timeout=15), len(receiver.spans)
    assert len(receiver.spans) == total
    assert len({s.span_id for s in receiver.spans}) == total
    instances = {s.resource["service.instance.id"] for s in receiver.spans}
    assert len(instances) >= 2, instances


def test_app_spans_are_children_of_the_beacon_span(start: Callable[..., Server], receiver: OtlpReceiver) -> None:
    server = traced(start, receiver, TEST_OTEL_SDK="1", TEST_FASTAPI_TELEMETRY="off")
    child = server.get("/otel/child", headers={"traceparent": PARENT, "x-request-id": "rid-child"}).json()
    [span] = spans_for(receiver, "rid-child")
    assert child == {"trace_id": TRACE_ID, "parent_span_id": span.span_id}
    # FastAPI's own server span is off: the SDK saw only the app's span, no second server span.
    finished = server.get("/otel/finished").json()
    assert [s["kind"] for s in finished] == ["INTERNAL"], finished


def test_fastapi_native_telemetry_left_on_adds_a_second_server_span(
    start: Callable[..., Server], receiver: OtlpReceiver
) -> None:
    """Documents why the README says to pass telemetry={"tracing": False}."""
    server = traced(start, receiver, TEST_OTEL_SDK="1")
    server.get("/otel/child", headers={"traceparent": PARENT})
    kinds = sorted(s["kind"] for s in server.get("/otel/finished").json())
    assert "SERVER" in kinds, kinds


@pytest.mark.parametrize("server_kind", ["uvicorn", "gunicorn"])
def test_queued_spans_are_flushed_at_shutdown(
    start: Callable[..., Server], receiver: OtlpReceiver, server_kind: str
) -> None:
    server = start(
        server=server_kind,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "600000"},
    )
    server.get("/items/1", headers={"x-request-id": "rid-flush"})
    assert holds_for(lambda: receiver.spans == [], 0.3)  # a ten-minute batch interval: nothing sent yet
    server.stop()
    assert [s.attributes["http.request.header.x-request-id"] for s in receiver.spans] == [["rid-flush"]]

"""One request through a real Caddy with the `tracing` directive: Caddy's server span and the
app's server span land in the same trace, the app's span is the child of Caddy's, and it carries
the request id Caddy wrote in its access log."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from examples.otlp_receiver import OtlpReceiver
from tests.support.caddy import launch_caddy
from tests.support.servers import Server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver().start()
    yield running
    running.stop()


def test_app_span_is_the_child_of_caddys_span(
    start: Callable[..., Server], receiver: OtlpReceiver, tmp_path: Path
) -> None:
    app = start(env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"})
    access_log = tmp_path / "access.log"
    caddy = launch_caddy(
        tmp_path,
        f"""
\tlog {{
\t\toutput file {access_log}
\t\tformat json
\t}}
\ttracing {{
\t\tspan caddy_proxy
\t}}
\treverse_proxy {app.base_url.removeprefix("http://")} {{
\t\theader_up X-Request-ID {{http.request.uuid}}
\t}}""",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "caddy",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    try:
        response = httpx.get(f"{caddy.base_url}/items/9", timeout=10)
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]

        def both_spans() -> bool:
            services = {span.resource.get("service.name") for span in receiver.spans}
            return {"caddy", "beacon-test-app"} <= services

        assert wait_until(both_spans, timeout=20), [s.resource for s in receiver.spans]
        app_span = next(s for s in receiver.spans if s.resource["service.name"] == "beacon-test-app")
        caddy_span = next(s for s in receiver.spans if s.resource["service.name"] == "caddy")

        assert app_span.trace_id == caddy_span.trace_id
        assert app_span.parent_span_id == caddy_span.span_id
        assert app_span.name == "GET /items/{item_id}"
        assert app_span.kind == 2  # SERVER
        assert app_span.attributes["http.route"] == "/items/{item_id}"
        assert app_span.attributes["http.request.header.x-request-id"] == [request_id]

        assert wait_until(access_log.exists, timeout=5)
        entries = [json.loads(line) for line in access_log.read_text().splitlines() if line.strip()]
        entry = next(e for e in entries if e.get("request", {}).get("uri") == "/items/9")
        assert entry["uuid"] == request_id, entry
        assert entry.get("traceID") == app_span.trace_id
    finally:
        caddy.stop()

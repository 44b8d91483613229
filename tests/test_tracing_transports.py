"""Span export to collectors that are not a plain HTTP server beside the app: HTTPS with a
private CA and client certificates, gzip, a collector answering 503 with Retry-After, gRPC, a
wrong CA, a collector that hangs, and settings that cannot work."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import trustme
from caddy_beacon import BeaconMiddleware, ConfigError

from examples.otlp_receiver import OtlpReceiver
from tests.support.otlp_grpc import CountingRelay, GrpcReceiver
from tests.support.servers import Server
from tests.support.waiting import wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_context(ca: trustme.CA, require_client_certificate: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    if require_client_certificate:
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def ids_sent(server: Server, prefix: str, count: int, **headers: str) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    for request_id in ids:
        assert server.get("/items/1", headers={"x-request-id": request_id, **headers}).status_code == 200
    return ids


def ids_received(spans: list[Any]) -> set[str]:
    return {s.attributes["http.request.header.x-request-id"][0] for s in spans}


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_https_with_a_private_ca_and_client_certificate_survives_two_503s(
    start: Callable[..., Server], ca: trustme.CA, tmp_path: Path, compression: str
) -> None:
    ca_file, client_cert, client_key = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("app.internal")
    client.cert_chain_pems[0].write_to_path(str(client_cert))
    client.private_key_pem.write_to_path(str(client_key))
    receiver = OtlpReceiver(tls=tls_context(ca, require_client_certificate=True), fail_first=2).start()
    try:
        server = start(
            env={
                # localhost: may resolve to ::1 first while the collector listens on 127.0.0.1 only.
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca_file),
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(client_cert),
                "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(client_key),
                "OTEL_EXPORTER_OTLP_COMPRESSION": compression,
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            }
        )
        sent = ids_sent(server, f"rid-tls-{compression}", 20)
        assert wait_until(lambda: ids_received(receiver.spans) >= set(sent), timeout=20), receiver.history
        assert ids_received(receiver.spans) == set(sent)
        assert len(receiver.spans) == len(sent)  # nothing twice, despite the retries
        statuses = [status for _, _, status in receiver.history]
        assert statuses[:2] == [503, 503] and set(statuses[2:]) == {200}, statuses
        # Retry-After: 1 was honoured before each retry.
        times = [at for at, _, _ in receiver.history]
        assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 0.9, times
        expected = "gzip" if compression == "gzip" else ""
        assert {encoding for _, encoding, _ in receiver.history} == {expected}
        assert server.value("beacon_spans_exported_total") == len(sent)
        assert not server.value("beacon_spans_failed_total")
    finally:
        receiver.stop()


def test_grpc_export_with_headers_and_gzip(start: Callable[..., Server]) -> None:
    receiver = GrpcReceiver().start()
    wire: dict[str, int] = {}
    try:
        for compression in ("none", "gzip"):
            relay = CountingRelay(receiver.port)
            server = start(
                env={
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": relay.endpoint,
                    "OTEL_EXPORTER_OTLP_COMPRESSION": compression,
                    "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme%20corp",
                    # One batch of all 40 spans, sent when the server stops.
                    "OTEL_BSP_SCHEDULE_DELAY": "600000",
                }
            )
            sent = ids_sent(server, f"rid-grpc-{compression}", 40, traceparent=PARENT)
            server.stop()
            assert ids_received(receiver.spans) >= set(sent)
            wire[compression] = relay.sent
            relay.stop()
        assert len(receiver.spans) == 80
        span = receiver.spans[0]
        assert (span.trace_id, span.parent_span_id, span.kind) == (TRACE_ID, "00f067aa0ba902b7", 2)
        assert span.resource["service.name"]
        assert all(m.get("x-tenant") == "acme corp" for m in receiver.metadata)
        # Forty spans that differ only in ids and times shrink to a fraction when gzipped.
        assert wire["gzip"] < wire["none"] / 2, wire
    finally:
        receiver.stop()


def test_grpc_over_tls_with_a_private_ca(start: Callable[..., Server], ca: trustme.CA, tmp_path: Path) -> None:
    issued = ca.issue_cert("localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    receiver = GrpcReceiver(tls=(issued.private_key_pem.bytes(), issued.cert_chain_pems[0].bytes())).start()
    try:
        server = start(
            env={
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_CERTIFICATE": str(tmp_path / "ca.pem"),
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            }
        )
        sent = ids_sent(server, "rid-grpc-tls", 10)
        assert wait_until(lambda: ids_received(receiver.spans) >= set(sent), timeout=15), server.log()
        assert len(receiver.spans) == len(sent)
    finally:
        receiver.stop()


def test_a_wrong_ca_fails_the_export_in_one_clear_line(start: Callable[..., Server], tmp_path: Path) -> None:
    collector_ca, other_ca = trustme.CA(), trustme.CA()
    other_ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    receiver = OtlpReceiver(tls=tls_context(collector_ca, require_client_certificate=False)).start()
    try:
        server = start(
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_CERTIFICATE": str(tmp_path / "other-ca.pem"),
                "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            }
        )
        for request_id in ids_sent(server, "rid-wrong-ca", 10):
            assert request_id
        assert wait_until(lambda: (server.value("beacon_spans_failed_total") or 0) > 0, timeout=15)
        lines = [line for line in server.log().splitlines() if "could not export" in line]
        assert len(lines) == 1, lines
        assert "certificate" in lines[0].lower() and receiver.endpoint in lines[0], lines[0]
        assert receiver.spans == []
    finally:
        receiver.stop()


async def _noop_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    return None


@pytest.fixture
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield monkeypatch


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift", "OTEL_EXPORTER_OTLP_PROTOCOL='thrift'"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION='zstd'"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-key=a%0D%0Ax-evil: 1", "OTEL_EXPORTER_OTLP_HEADERS"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=1", "not a valid header name"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "no such file"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:21", "http:// or https://"),
    ],
)
def test_settings_that_cannot_work_turn_tracing_off_or_are_refused_when_strict(
    clean_otel_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str, value: str, message: str
) -> None:
    clean_otel_env.setenv(variable, value)
    with caplog.at_level("WARNING", logger="caddy_beacon"):
        assert BeaconMiddleware(_noop_app, tracing=True).tracing is None
    assert [
        r.getMessage() for r in caplog.records if "tracing is off" in r.getMessage() and message in r.getMessage()
    ], caplog.text
    with pytest.raises(ConfigError, match=None) as error:
        BeaconMiddleware(_noop_app, tracing=True, strict=True)
    assert message in str(error.value), str(error.value)


def test_tls_files_are_read_at_start(
    clean_otel_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "not.pem").write_text("hello")
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example.com")
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(tmp_path / "not.pem"))
    with pytest.raises(ConfigError, match="no PEM certificate"):
        BeaconMiddleware(_noop_app, strict=True)
    with caplog.at_level("WARNING", logger="caddy_beacon"):
        assert BeaconMiddleware(_noop_app).tracing is None
    assert "no PEM certificate" in caplog.text
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "")
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(tmp_path / "not.pem"))
    with pytest.raises(ConfigError, match="needs its key"):
        BeaconMiddleware(_noop_app, strict=True)


def test_endpoints_per_protocol(clean_otel_env: pytest.MonkeyPatch) -> None:
    def endpoint() -> str:
        tracing = BeaconMiddleware(_noop_app, tracing=True).tracing
        assert tracing is not None
        return tracing.endpoint

    assert endpoint() == "http://localhost:4318/v1/traces"
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example.com/")
    assert endpoint() == "https://otlp.example.com/v1/traces"
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert endpoint() == "https://otlp.example.com/"
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")
    assert endpoint() == "https://collector:4317"
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    assert endpoint() == "http://collector:4317"
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317")
    assert endpoint() == "http://traces:4317"
    clean_otel_env.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    clean_otel_env.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    assert endpoint() == "http://localhost:4317"

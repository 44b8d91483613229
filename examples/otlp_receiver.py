"""An OTLP/HTTP trace receiver for the tests and `make demo`: decodes what Caddy and the app
export with the official protobuf definitions (opentelemetry-proto), so an encoding mistake
cannot hide. Optionally over TLS (any ``ssl.SSLContext``, e.g. one requiring client
certificates), gzip-aware, and able to answer 503 with ``Retry-After`` to its first requests."""

from __future__ import annotations

import gzip
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    trace_state: str
    flags: int
    start: int
    end: int


def spans_of(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Every span of one export request, with its resource's attributes."""
    received = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        resource=resource,
                        status_code=span.status.code,
                        trace_state=span.trace_state,
                        flags=span.flags,
                        start=span.start_time_unix_nano,
                        end=span.end_time_unix_nano,
                    )
                )
    return received


@dataclass
class OtlpReceiver:
    """Collects spans posted to http://127.0.0.1:<port>/v1/traces (`port` 0: any free one),
    keeping the newest `keep` of them (None: all)."""

    port: int = 0
    keep: int | None = None
    delay: float = 0.0
    status: int = 200
    # Answer this many requests 503 with `Retry-After: retry_after` before accepting any.
    fail_first: int = 0
    retry_after: str = "1"
    tls: ssl.SSLContext | None = None
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    # (monotonic time, Content-Encoding, status answered) of every request.
    history: list[tuple[float, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                encoding = self.headers.get("content-encoding", "")
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    refuse = receiver.fail_first > 0
                    receiver.fail_first -= int(refuse)
                    receiver.history.append((time.monotonic(), encoding, 503 if refuse else receiver.status))
                if refuse:
                    self.send_response(503)
                    self.send_header("retry-after", receiver.retry_after)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if encoding == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                received = spans_of(request)
                with receiver.lock:
                    receiver.requests += 1
                    if receiver.status == 200:
                        receiver.spans.extend(received)
                        if receiver.keep is not None:
                            del receiver.spans[: -receiver.keep]
                self.send_response(receiver.status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        host = "localhost" if self.tls is not None else "127.0.0.1"  # TLS: the certificate's name
        return f"{scheme}://{host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def find(self, **attributes: Any) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if all(s.attributes.get(k) == v for k, v in attributes.items())]

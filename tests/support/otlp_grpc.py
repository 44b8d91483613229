"""An OTLP/gRPC trace receiver for the tests: grpcio's server with the TraceService that
opentelemetry-proto generates, decoding spans exactly as the HTTP receiver does."""

from __future__ import annotations

import socket
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from examples.otlp_receiver import ReceivedSpan, spans_of


@dataclass
class GrpcReceiver:
    """Collects spans exported to 127.0.0.1:<port> over gRPC: plain, or over TLS with
    `tls` = (PEM key, PEM certificate chain) for the name localhost."""

    port: int = 0
    tls: tuple[bytes, bytes] | None = None
    spans: list[ReceivedSpan] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> GrpcReceiver:
        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's naming)
                metadata = {key: value for key, value in context.invocation_metadata()}
                with receiver.lock:
                    receiver.spans.extend(spans_of(request))
                    receiver.metadata.append(metadata)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        if self.tls is None:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        else:
            credentials = grpc.ssl_server_credentials([self.tls])
            self.port = self.server.add_secure_port(f"127.0.0.1:{self.port}", credentials)
        self.server.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}" if self.tls else f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None)


class CountingRelay:
    """A TCP relay to `target_port` that counts the bytes clients send: grpcio's server does not
    show whether a request was compressed, the size on the wire does."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    with self.lock:
                        self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.listener.close()

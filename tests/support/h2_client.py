"""A small HTTP/2 client that handles GOAWAY the way RFC 9113 (section 6.8) says and browsers do.

Every Caddy config change (a companion registering or removing an upstream) replaces Caddy's
servers; the old ones say goodbye to their HTTP/2 clients with GOAWAY, naming the last stream they
will still answer. Streams after it were not processed and may be sent again on a new connection;
streams up to it are answered before the connection closes. httpx/httpcore give up on both
kinds (it raises on the first GOAWAY), so the rolling-restart test uses this client instead: it
retries only what the protocol says was not processed, and counts everything else as a failure.
(The h2 library needs one adjustment for this, see _GoawayTolerantH2.)
"""

from __future__ import annotations

import socket
import ssl

import h2.config
import h2.connection
import h2.errors
import h2.events


class _GoawayTolerantH2(h2.connection.H2Connection):
    """The h2 library closes its connection state on GOAWAY and then rejects the frames that
    still answer streams up to the GOAWAY's last stream, which RFC 9113 says the server will
    complete. Keep the state open so those answers can be read."""

    def _receive_goaway_frame(self, frame):  # type: ignore[no-untyped-def]
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return result


class NotProcessed(Exception):
    """The server did not process the request (refused stream, or after GOAWAY's last stream,
    or the connection failed before the request was sent): sending it again is safe."""


class H2Connection:
    """One TLS connection speaking HTTP/2, one request at a time."""

    def __init__(self, host: str, port: int, timeout: float = 10, *, raw: socket.socket | None = None) -> None:
        """`raw`: a TCP connection to (host, port) opened earlier, for a TLS handshake now."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # Caddy's internal CA in tests
        context.set_alpn_protocols(["h2"])
        try:
            raw = raw or socket.create_connection((host, port), timeout=timeout)
            self.sock = context.wrap_socket(raw, server_hostname=host)
        except OSError as error:
            raise NotProcessed(f"connect: {error}") from error
        if self.sock.selected_alpn_protocol() != "h2":
            raise RuntimeError("the server did not agree to HTTP/2")
        self.authority = f"{host}:{port}"
        self.h2 = _GoawayTolerantH2(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.last_stream_id: int | None = None  # from GOAWAY

    def close(self) -> None:
        self.sock.close()

    @property
    def usable(self) -> bool:
        return self.last_stream_id is None

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        stream = self.h2.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", "https"), (":authority", self.authority)]
        if body:
            headers.append(("content-length", str(len(body))))
        self.h2.send_headers(stream, headers, end_stream=not body)
        if body:
            self.h2.send_data(stream, body, end_stream=True)
        try:
            self.sock.sendall(self.h2.data_to_send())
        except OSError as error:
            raise ConnectionError(f"send: {error}") from error
        status, data = 0, b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError as error:
                raise ConnectionError(f"receive: {error}") from error
            if not chunk:
                if self.last_stream_id is not None and stream > self.last_stream_id:
                    raise NotProcessed("closed after GOAWAY, stream not processed")
                raise ConnectionError("connection closed before the response")
            for event in self.h2.receive_data(chunk):
                if isinstance(event, h2.events.ConnectionTerminated):
                    self.last_stream_id = event.last_stream_id
                    if event.last_stream_id is not None and stream > event.last_stream_id:
                        raise NotProcessed("GOAWAY before this stream")
                elif getattr(event, "stream_id", None) != stream:
                    continue
                elif isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    self.h2.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamReset):
                    if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                        raise NotProcessed("stream refused")
                    raise ConnectionError(f"stream reset: {event.error_code!r}")
                elif isinstance(event, h2.events.StreamEnded):
                    self.sock.sendall(self.h2.data_to_send())
                    return status, data
            outgoing = self.h2.data_to_send()
            if outgoing:
                self.sock.sendall(outgoing)

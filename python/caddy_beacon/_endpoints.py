"""The probe and scrape endpoints the middleware answers itself: /health, /ready, /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from caddy_beacon._native import Beacon

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_JSON = b"application/health+json"
_HEALTH_PASS = b'{"status":"pass"}'
_NO_STORE = (b"cache-control", b"no-store")
# Past this many series a render takes long enough to be worth a thread hop; below it the hop
# would cost more than the render.
_RENDER_IN_THREAD_ABOVE = 1000


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            try:
                return bytes(value).decode("latin-1")
            except (TypeError, ValueError):
                return None
    return None


async def _respond(scope: Scope, send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        _NO_STORE,
    ]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})


def _only_get(scope: Scope) -> bool:
    return scope.get("method") in ("GET", "HEAD")


def build_endpoints(
    native: Beacon, health_path: str | None, ready_path: str | None, metrics_path: str | None
) -> dict[str, Endpoint]:
    """Maps each enabled path to its handler."""

    async def health(scope: Scope, receive: Receive, send: Send) -> None:
        if not _only_get(scope):
            await _respond(scope, send, 405, b"", b"text/plain")
            return
        # Liveness never runs dependency checks: a database outage must not restart replicas.
        await _respond(scope, send, 200, _HEALTH_PASS, HEALTH_JSON)

    async def ready(scope: Scope, receive: Receive, send: Send) -> None:
        if not _only_get(scope):
            await _respond(scope, send, 405, b"", b"text/plain")
            return
        status, body = native.ready_response()
        await _respond(scope, send, status, body, HEALTH_JSON)

    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        if not _only_get(scope):
            await _respond(scope, send, 405, b"", b"text/plain")
            return
        accept = _header(scope, b"accept")
        if native.series_count > _RENDER_IN_THREAD_ABOVE:
            body, content_type = await asyncio.get_running_loop().run_in_executor(None, native.render_metrics, accept)
        else:
            body, content_type = native.render_metrics(accept)
        await _respond(scope, send, 200, body, content_type.encode())

    endpoints: dict[str, Endpoint] = {}
    for path, handler in ((health_path, health), (ready_path, ready), (metrics_path, metrics)):
        if path is not None:
            endpoints[path] = handler
    return endpoints

"""BeaconMiddleware: the ASGI middleware users add to their app."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from caddy_beacon import _config
from caddy_beacon._async_backend import LoopBackend, current_backend, running_library
from caddy_beacon._checks import Check, CheckFunction, CheckRunner, normalize_checks
from caddy_beacon._context import current_request
from caddy_beacon._draining import DrainController
from caddy_beacon._endpoints import Message, Receive, Scope, Send, build_endpoints
from caddy_beacon._native import Beacon, ConfigError, MiddlewareCore
from caddy_beacon._otel_bridge import Attach, Detach, otel_bridge
from caddy_beacon._routes import route_template
from caddy_beacon._tracing_config import resolve_tracing
from caddy_beacon._workers import Watchdog, instance_key, start_side_port, worker_of

logger = logging.getLogger("caddy_beacon")

ASGIApp = Any


class BeaconMiddleware(MiddlewareCore):
    """Serves ``/health``, ``/ready`` and ``/metrics``, times every HTTP request in Rust, and
    carries the request id.

    Calling it is native (:class:`caddy_beacon._native.MiddlewareCore`): once the worker has
    started, an HTTP request runs through no Python frame of the middleware's own; lifespan,
    WebSockets and the probe endpoints go through :meth:`_call_in_python`.

    Usage::

        app.add_middleware(BeaconMiddleware, service_name="orders", checks={"db": ping_db})

    Every option may also be set with an environment variable ``BEACON_<OPTION>`` (upper case);
    an explicit keyword wins over the environment. See the README for each option.

    Telemetry never stops the app: a bad value from the environment (``BEACON_*``, or the
    standard ``OTEL_*`` variables) is logged in one line and the default used instead (for
    tracing: off). ``strict=True`` (or ``BEACON_STRICT=1``) refuses to start instead. A value
    passed in code that cannot work always raises :class:`ConfigError`.

    It runs on asyncio (uvloop included) and trio, under any ASGI server.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service_name: str | None | _config._Unset = _config.UNSET,
        health_path: str | None | _config._Unset = _config.UNSET,
        ready_path: str | None | _config._Unset = _config.UNSET,
        metrics_path: str | None | _config._Unset = _config.UNSET,
        checks: Mapping[str, Check | CheckFunction] | None = None,
        request_id_header: str | _config._Unset = _config.UNSET,
        buckets: Sequence[float] | None | _config._Unset = _config.UNSET,
        drain_seconds: float | _config._Unset = _config.UNSET,
        side_port: int | str | None | _config._Unset = _config.UNSET,
        max_series: int | _config._Unset = _config.UNSET,
        tracing: bool | None = None,
        stall_seconds: float | _config._Unset = _config.UNSET,
        strict: bool | _config._Unset = _config.UNSET,
    ) -> None:
        self.app = app
        self.strict = _config.resolve_strict(strict)
        config = _config.resolve(
            strict=self.strict,
            service_name=service_name,
            health_path=health_path,
            ready_path=ready_path,
            metrics_path=metrics_path,
            request_id_header=request_id_header,
            buckets=buckets,
            drain_seconds=drain_seconds,
            side_port=side_port,
            max_series=max_series,
            stall_seconds=stall_seconds,
        )
        self.config = config
        self.tracing = resolve_tracing(tracing, strict=self.strict)
        self._native = self._build_native(config)
        trace = self.tracing
        if self._native.shared_error:
            logger.warning("caddy_beacon: each worker keeps its own metrics: %s", self._native.shared_error)
        self._otel: tuple[Attach, Detach] | None = None
        if trace is not None:
            # Servers that run no lifespan still get their last spans out at exit.
            atexit.register(self._native.flush_traces, 2.0)
        self._service_name_known = config.service_name is not None
        self._checks = CheckRunner(self._native, normalize_checks(checks))
        self._drain = DrainController(self._native, config.drain_seconds)
        self._endpoints = build_endpoints(self._native, config.health_path, config.ready_path, config.metrics_path)
        self._watchdog = Watchdog(self._native)
        atexit.register(self._watchdog.stop)
        self._backend: LoopBackend | None = None
        self._started = False
        # Servers tell ASGI 3 from ASGI 2 apps by asking whether `app.__call__` is a coroutine
        # function (uvicorn, hypercorn); the native `__call__` is not one. Calls never use this
        # attribute (Python looks `__call__` up on the type), only such questions do.
        self.__call__ = self._call_awaited  # type: ignore[method-assign]

    def _build_native(self, config: _config.BeaconConfig) -> Beacon:
        settings = _config.native_settings(config, self.tracing, shared_key=instance_key())
        try:
            return Beacon(settings, route_template=route_template)
        except ConfigError as error:
            # Everything but the tracer's settings (the OTEL_* variables: a sampler, say) was
            # checked already: without tracing, unless the environment must be right.
            if self.tracing is None or self.strict:
                raise
            logger.warning("caddy_beacon: tracing is off: %s", error)
            self.tracing = None
            return Beacon(
                _config.native_settings(config, None, shared_key=settings.shared_key), route_template=route_template
            )

    # -- lifecycle -------------------------------------------------------------------------

    def _start(self, scope: Scope) -> None:
        """Runs once per process, inside the worker, on its event loop: never at import time
        and never before a fork. It never fails the app: a piece that cannot work here is said
        once in the log, and requests go on through the native path."""
        self._started = True
        try:
            if not self._service_name_known:
                title = getattr(scope.get("app"), "title", None)
                if isinstance(title, str) and title:
                    self._native.set_service_name(title)
            if self._native.tracing:
                # Checked once the app has started, when its tracer provider is in place.
                self._otel = otel_bridge()
            self._backend = current_backend()
            if self._backend is None:
                logger.warning(
                    "caddy_beacon: the app runs on %s: readiness checks, draining on SIGTERM and the event-loop "
                    "watchdog need asyncio or trio and are off; metrics, request ids and traces work",
                    running_library(),
                )
            else:
                self._checks.start(self._backend)
                why = self._drain.install(self._backend, server_stops_workers_itself=worker_of("hypercorn"))
                if why is not None and self.config.drain_seconds > 0:
                    logger.warning(
                        "caddy_beacon: draining on SIGTERM is off in this worker: %s; `caddy-beacon run` drains "
                        "the replica in Caddy before the app gets the signal",
                        why,
                    )
                self._watchdog.start(self._backend)
            if self.config.side_port is not None:
                start_side_port(self._native, self.config.side_host, self.config.side_port)
        except Exception:
            logger.exception("caddy_beacon: starting in this worker failed; requests are still timed and served")
        finally:
            self._native.mark_started()
            self._arm(beacon=self._native, app=self.app, current_request=current_request, otel=self._otel)

    async def _stop(self) -> None:
        self._watchdog.stop()
        self._drain.uninstall()
        await self._checks.stop()
        if self._native.tracing:
            # Waits for the exporter on a thread, detached from the interpreter: the event loop
            # keeps running while the last spans go out.
            if self._backend is not None:
                await self._backend.in_thread(self._native.flush_traces, 5.0)
            else:
                self._native.flush_traces(5.0)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_and_watch() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self._stop()
            return message

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and not self._started:
                self._start(scope)
            await send(message)

        await self.app(scope, receive_and_watch, send_and_watch)

    # -- requests --------------------------------------------------------------------------

    async def _call_awaited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`__call__` as a coroutine function, for servers that inspect it."""
        await self(scope, receive, send)

    async def _call_in_python(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Everything the native ``__call__`` hands back: lifespan, WebSockets, the probe
        endpoints, and HTTP requests that arrive before the worker has started."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind != "http":
            # WebSockets pass through untouched and are not counted as HTTP requests.
            await self.app(scope, receive, send)
            return
        if not isinstance(scope, dict):
            raise TypeError(f"the ASGI scope must be a dict, not {type(scope).__name__}")
        if not self._started:
            # The server ran no lifespan (e.g. `--lifespan off`): start on the first request.
            self._start(scope)
        own_path = self._native.own_path(scope)
        if own_path is not None:
            await self._endpoints[own_path](scope, receive, send)
            return
        if not self._armed:
            # Never happens once _start has run; should it, the app still answers.
            await self.app(scope, receive, send)
            return
        # Started and armed now: the native path times the request and carries its id.
        await self(scope, receive, send)

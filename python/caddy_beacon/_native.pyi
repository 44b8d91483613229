"""The native half of caddy_beacon (Rust, via pyo3). Private: use the names `caddy_beacon`
re-exports. Documented here so type checkers and readers know what each call does."""

from collections.abc import Awaitable, Callable, Generator, MutableMapping
from contextvars import ContextVar
from typing import Any, final

from typing_extensions import disjoint_base

from caddy_beacon._config import NativeSettings

__all__ = [
    "Beacon",
    "BeaconError",
    "ConfigError",
    "DEFAULT_BUCKETS",
    "LoopProbeAnswer",
    "MiddlewareCore",
    "RequestCall",
    "RequestRecord",
    "UNMATCHED_ROUTE",
    "__version__",
    "after_fork_in_child",
    "process_command_line",
    "process_start_ticks",
]

__version__: str
UNMATCHED_ROUTE: str
"""The ``http_route`` label value of requests that matched no route."""
DEFAULT_BUCKETS: list[float]
"""Default histogram bounds in seconds (1 ms to 30 s)."""

class BeaconError(Exception):
    """Base class of every caddy_beacon error."""

class ConfigError(BeaconError):
    """An option or check definition caddy_beacon cannot use; the message says which and why."""

def after_fork_in_child() -> None:
    """Reseeds request-id generation in a forked child (registered with os.register_at_fork)."""

def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (from /proc), or None when there
    is no such process. Pid and start time together name a process for good."""

def process_command_line(pid: int) -> list[str]:
    """The arguments of process ``pid`` (from /proc), or an empty list. Read natively: a file read
    on the event loop would count as a blocking call for tools that look for them."""

@final
class LoopProbeAnswer:
    """The probe the event-loop watchdog posts to a busy loop: called there with the time it was
    posted, it records a heartbeat as late as it ran."""

    def __call__(self, posted: int) -> None: ...

@disjoint_base
class MiddlewareCore:
    """Base class of ``BeaconMiddleware``: its ``__call__``. Once :meth:`_arm` has run (when the
    worker has started), an HTTP request to an app path is begun natively and returned as a
    :class:`RequestCall`; anything else is handed to the subclass's ``_call_in_python``."""

    def __new__(cls, *_args: Any, **_kwargs: Any) -> MiddlewareCore: ...
    def _arm(
        self,
        *,
        beacon: Beacon,
        app: Any,
        current_request: ContextVar[Any],
        otel: tuple[Callable[[RequestRecord], Any], Callable[[Any], None]] | None = None,
    ) -> bool:
        """Turns the native request path on: requests are begun on ``beacon``, run ``app`` with
        the record as their ``send``, and set the context variable ``current_request`` (and the
        OpenTelemetry context through ``otel``'s ``(attach, detach)``) while they run. Once:
        a later call changes nothing and returns False. TypeError when ``current_request`` is
        not a ``contextvars.ContextVar`` (it is set and reset through the C API)."""
    @property
    def _armed(self) -> bool:
        """Whether HTTP requests take the native path."""
    def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> Awaitable[None]:
        """The ASGI entry point: an awaitable that handles the request."""

@final
class RequestCall:
    """One HTTP request through the middleware: a coroutine (``send``/``throw``/``close``)
    driving the app's own. Sets the current request while the app runs; when the app returns
    it records the request if its response did not complete, when it raises it records 500
    (unless the response had completed) and re-raises the error unchanged."""

    def __await__(self) -> Generator[Any]: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any) -> Any:
        """Resumes the app with ``value``; raises StopIteration when it has returned."""
    def throw(self, *args: Any) -> Any:
        """Raises the exception inside the app where it waits (cancellation arrives here)."""
    def close(self) -> None:
        """Closes the app's coroutine; a request cut short so is recorded as 500 unless its
        response had completed."""

@final
class RequestRecord:
    """One in-flight HTTP request, created by :meth:`Beacon.begin`."""

    @property
    def request_id(self) -> str:
        """The request id (visible ASCII)."""
    @property
    def trace_id(self) -> str | None:
        """The trace id (32 hex digits) when tracing is on."""
    @property
    def span_id(self) -> str | None:
        """This request's server span id (16 hex digits) when tracing is on."""
    @property
    def sampled(self) -> bool:
        """Whether this request's span is exported."""
    @property
    def trace_state(self) -> str:
        """The ``tracestate`` carried from the caller ("" when none)."""
    @property
    def finished(self) -> bool:
        """Whether the request has been recorded."""
    def __call__(self, message: MutableMapping[str, Any]) -> Any:
        """The ASGI ``send`` to give the app: adds the request-id header to the response start
        (on a copy of the message), records the request when its last body message or a
        pathsend is handed on, and returns the server's own awaitable."""
    @property
    def open(self) -> bool:
        """Whether the request is still being handled (:meth:`close` has not run)."""
    def close(self, status: int | None = None) -> bool:
        """Ends the request: records it with ``status`` (default: the status sent, or 500 when
        none was) under the route the framework matched, unless the last body message already
        did, then releases the scope and ``send`` (asyncio may keep a finished request's context
        alive). The request id stays readable. Returns whether this call recorded it."""

@final
class Beacon:
    """Native state of one middleware instance: metrics, readiness, request ids."""

    def __new__(
        cls,
        settings: NativeSettings,
        *,
        route_template: Callable[[MutableMapping[str, Any], str], str | None],
    ) -> Beacon:
        """Built from ``settings`` (``caddy_beacon._config.NativeSettings``, every option already
        resolved and defaulted, read attribute by attribute). ``route_template(scope,
        outer_root_path)`` labels requests whose scope holds no ``route`` (the rest are labelled
        natively); ``settings.own_paths`` are answered by the middleware and not recorded.
        Raises ConfigError for invalid buckets, a zero series cap, a bad header name or a
        stall threshold that is not a positive number of seconds.

        With ``settings.tracing`` (a ``TracingConfig``: an ``http://`` or ``https://`` OTLP/HTTP
        traces URL, or a gRPC collector's address when the protocol is ``"grpc"``;
        ``http/json`` also works) every request gets a server span, sampled by its ``sampler``
        (an ``OTEL_TRACES_SAMPLER`` name) and exported in the background in batches of
        ``batch_size`` at least every ``interval`` seconds; a full queue of ``queue_size`` drops
        spans instead of waiting. ``gzip`` compresses the export requests; ``certificate`` is a
        PEM CA trusted besides the system's roots and ``client_certificate``/``client_key`` a
        client certificate (mutual TLS), read and checked here (ConfigError when missing or not
        PEM). Failed exports are retried on 429/502/503/504 and lost connections, honouring
        ``Retry-After``, within ``timeout`` seconds.

        With ``settings.shared_key`` the metrics live in a file in /dev/shm that every worker of
        the instance maps (if that fails, in private memory, see ``shared_error``). A worker
        whose event loop has not reported for ``stall_seconds`` makes the side port's /health
        answer 503."""
    @property
    def shared_path(self) -> str | None:
        """The file the workers of this instance share their metrics in, or None."""
    @property
    def shared_error(self) -> str | None:
        """Why the metrics could not be shared (each worker then keeps its own), or None."""
    def watch_event_loop(self, post: Callable[..., object], thread_id: int) -> None:
        """Starts this process's event-loop watchdog: a native thread that looks at the loop's
        thread ``thread_id`` every 100 ms and, while the loop is busy, schedules a probe on it
        with ``post(probe, posted)`` (asyncio's ``loop.call_soon_threadsafe``, trio's
        ``TrioToken.run_sync_soon``); an idle loop is never woken. Replaces a running one."""
    def stop_watching_event_loop(self) -> None:
        """Stops the watchdog within 100 ms, without waiting for its thread."""
    def start_side_port(self, host: str, port: int) -> str | None:
        """Serves /health, /ready and /metrics on ``host:port`` from a native thread (once per
        process): "serving", "standby" when another worker holds the port (this one takes
        over if it goes away), None when already started. Raises ConfigError for an address
        that cannot be served."""
    def begin(
        self, scope: MutableMapping[str, Any], send: Callable[[MutableMapping[str, Any]], Awaitable[None]]
    ) -> RequestRecord | None:
        """Starts timing an HTTP request: reads its method and request-id header (kept when
        valid, generated otherwise) and raises the active-requests gauge. The record returned
        wraps ``send`` and is what the app should be given as its ``send``. Returns None for a
        request to one of ``own_paths``, which the middleware answers itself."""
    def own_path(self, scope: MutableMapping[str, Any]) -> str | None:
        """The entry of ``own_paths`` the request is for (with or without the scope's
        ``root_path`` in front), or None."""
    def render_metrics(self, accept: str | None = None) -> tuple[bytes, str]:
        """Renders every metric for a scrape with this ``Accept`` header: ``(body, content_type)``.
        OpenMetrics when asked for, Prometheus text 0.0.4 otherwise. Releases the GIL while
        formatting."""
    def ready_response(self) -> tuple[int, bytes]:
        """The ``/ready`` answer: ``(200 or 503, application/health+json body)``."""
    def register_check(self, name: str, critical: bool) -> None:
        """Declares a check; raises ConfigError for a bad or duplicate name."""
    def report_check(self, name: str, passed: bool, duration_seconds: float, output: str | None = None) -> None:
        """Stores the latest result of a check."""
    def set_service_name(self, service_name: str) -> None:
        """Sets the ``service_name`` label of ``target_info``."""
    def flush_traces(self, timeout: float) -> bool:
        """Sends the queued spans; waits at most ``timeout`` seconds without holding the GIL.
        True when everything went out (or tracing is off)."""
    @property
    def tracing(self) -> bool:
        """Whether spans are exported."""
    def mark_started(self) -> None:
        """Startup completed: ``/ready`` may pass from now on."""
    def set_draining(self, draining: bool) -> None:
        """Turns draining on or off; while draining ``/ready`` answers 503."""
    @property
    def draining(self) -> bool:
        """Whether the instance is draining."""
    @property
    def ready(self) -> bool:
        """Whether ``/ready`` currently passes."""
    @property
    def series_count(self) -> int:
        """Histogram series created so far."""
    @property
    def max_series(self) -> int:
        """The series cap."""
    @property
    def buckets(self) -> list[float]:
        """Histogram bucket bounds in seconds."""

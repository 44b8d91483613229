"""Resolution of the middleware's options: an explicit keyword wins, then ``BEACON_<NAME>``
from the environment, then the default. Every bad value raises ConfigError naming where it
came from (the keyword or the variable) and what would be accepted."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from caddy_beacon._native import ConfigError
from caddy_beacon._tracing_config import TracingConfig


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()

_DISABLED_WORDS = {"", "none", "off", "false", "disabled"}


@dataclass(frozen=True)
class BeaconConfig:
    """The options after resolution."""

    service_name: str | None
    health_path: str | None
    ready_path: str | None
    metrics_path: str | None
    request_id_header: str
    buckets: tuple[float, ...] | None
    drain_seconds: float
    max_series: int
    side_host: str
    side_port: int | None
    stall_seconds: float


@dataclass(frozen=True)
class NativeSettings:
    """What ``_native.Beacon`` is built from: one object, read attribute by attribute on the
    Rust side (rust/beacon-py/src/settings.rs). Every value here is already resolved and
    defaulted: the defaults live in :func:`resolve` and :func:`resolve_tracing`, nowhere else."""

    service_name: str
    own_paths: tuple[str, ...]
    buckets: tuple[float, ...] | None
    max_series: int
    request_id_header: str
    stall_seconds: float
    shared_key: str | None
    tracing: TracingConfig | None


def native_settings(config: BeaconConfig, tracing: TracingConfig | None, shared_key: str | None) -> NativeSettings:
    """The native core's settings for a resolved configuration."""
    return NativeSettings(
        service_name=config.service_name or "unknown_service",
        own_paths=tuple(p for p in (config.health_path, config.ready_path, config.metrics_path) if p is not None),
        buckets=config.buckets,
        max_series=config.max_series,
        request_id_header=config.request_id_header,
        stall_seconds=config.stall_seconds,
        shared_key=shared_key,
        tracing=tracing,
    )


@dataclass(frozen=True)
class _Option:
    value: Any
    origin: str  # "buckets=[...]" or "BEACON_BUCKETS='...'", for error messages

    def fail(self, expected: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {expected}")


def _pick(name: str, explicit: object, parse: Callable[[str], object], default: object) -> _Option:
    if not isinstance(explicit, _Unset):
        return _Option(explicit, f"{name}={explicit!r}")
    variable = f"BEACON_{name.upper()}"
    raw = os.environ.get(variable)
    if raw is None:
        return _Option(default, f"{name} (default)")
    try:
        return _Option(parse(raw.strip()), f"{variable}={raw!r}")
    except ValueError as error:
        raise ConfigError(f"{variable}={raw!r}: {error}") from None


def _parse_path(raw: str) -> str | None:
    return None if raw.lower() in _DISABLED_WORDS else raw


def _parse_buckets(raw: str) -> tuple[float, ...]:
    return tuple(float(part) for part in raw.split(",") if part.strip())


def _parse_side_port(raw: str) -> str | int | None:
    if raw.lower() in _DISABLED_WORDS:
        return None
    return raw if ":" in raw else int(raw)


def _side_address(option: _Option) -> tuple[str, int | None]:
    """`9464` (on 127.0.0.1), `"0.0.0.0:9464"` or `"[::1]:9464"`; None turns it off."""
    value = option.value
    if value is None:
        return "127.0.0.1", None
    host, port = "127.0.0.1", value
    if isinstance(value, str):
        host, _, port_text = value.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_text)
        except ValueError:
            port = None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535 or not host:
        raise option.fail("expected a port (1-65535, served on 127.0.0.1), 'HOST:PORT', or None to turn it off")
    return host, port


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _path(option: _Option) -> str | None:
    value = option.value
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise option.fail("expected a path starting with '/', or None to disable the endpoint")
    return value


def _buckets(option: _Option) -> tuple[float, ...] | None:
    value = option.value
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(map(_is_number, value)):
        raise option.fail("expected a sequence of upper bounds in seconds, e.g. [0.01, 0.1, 1]")
    bounds = tuple(float(b) for b in value)
    if not bounds or any(b <= 0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise option.fail("bucket bounds must be positive and strictly increasing")
    return bounds


def resolve(
    *,
    service_name: object,
    health_path: object,
    ready_path: object,
    metrics_path: object,
    request_id_header: object,
    buckets: object,
    drain_seconds: object,
    side_port: object,
    max_series: object,
    stall_seconds: object = UNSET,
) -> BeaconConfig:
    """Resolves and validates every option."""
    name = _pick("service_name", service_name, str, None)
    service = name.value if name.value is not None else (os.environ.get("OTEL_SERVICE_NAME") or None)
    if service is not None and (not isinstance(service, str) or not service.strip()):
        raise name.fail("expected a non-empty string")

    paths = {
        option: _path(_pick(option, value, _parse_path, default))
        for option, value, default in (
            ("health_path", health_path, "/health"),
            ("ready_path", ready_path, "/ready"),
            ("metrics_path", metrics_path, "/metrics"),
        )
    }
    enabled = [p for p in paths.values() if p is not None]
    if len(enabled) != len(set(enabled)):
        raise ConfigError(f"health_path, ready_path and metrics_path must differ, got {paths}")

    header = _pick("request_id_header", request_id_header, str, "X-Request-ID")
    if not isinstance(header.value, str) or not header.value or not header.value.isascii():
        raise header.fail("expected an HTTP header name such as 'X-Request-ID'")

    bucket_bounds = _buckets(_pick("buckets", buckets, _parse_buckets, None))

    drain = _pick("drain_seconds", drain_seconds, float, 5.0)
    if not _is_number(drain.value) or drain.value < 0:
        raise drain.fail("expected a finite number of seconds >= 0")

    side_host, side = _side_address(_pick("side_port", side_port, _parse_side_port, None))

    stall = _pick("stall_seconds", stall_seconds, float, 5.0)
    if not _is_number(stall.value) or stall.value <= 0:
        raise stall.fail("expected a finite number of seconds > 0")

    cap = _pick("max_series", max_series, int, 2000)
    if isinstance(cap.value, bool) or not isinstance(cap.value, int) or cap.value < 1:
        raise cap.fail("expected an integer >= 1")

    return BeaconConfig(
        service_name=service,
        health_path=paths["health_path"],
        ready_path=paths["ready_path"],
        metrics_path=paths["metrics_path"],
        request_id_header=header.value,
        buckets=bucket_bounds,
        drain_seconds=float(drain.value),
        max_series=cap.value,
        side_host=side_host,
        side_port=side,
        stall_seconds=float(stall.value),
    )

"""Resolution of the middleware's options: an explicit keyword wins, then ``BEACON_<NAME>``
from the environment, then the default. Every bad value raises ConfigError naming its source."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from caddy_beacon._native import ConfigError

T = TypeVar("T")


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()

_DISABLED_WORDS = {"", "none", "off", "false", "0", "disabled"}


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


def _from_env(name: str, parse: Callable[[str], T], default: T) -> T:
    variable = f"BEACON_{name.upper()}"
    raw = os.environ.get(variable)
    if raw is None:
        return default
    try:
        return parse(raw.strip())
    except (ValueError, ConfigError) as error:
        raise ConfigError(f"{variable}={raw!r}: {error}") from None


def _pick(name: str, explicit: object, parse: Callable[[str], T], default: T) -> T:
    if explicit is UNSET:
        return _from_env(name, parse, default)
    return explicit  # type: ignore[return-value]  # validated by the caller


def _parse_path(raw: str) -> str | None:
    if raw.lower() in _DISABLED_WORDS:
        return None
    return raw


def _check_path(option: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise ConfigError(f"{option} must be a path starting with '/' (or None to disable it), got {value!r}")
    return value


def _parse_float(raw: str) -> float:
    return float(raw)


def _parse_buckets(raw: str) -> tuple[float, ...]:
    return tuple(float(part) for part in raw.split(",") if part.strip())


def _parse_optional_int(raw: str) -> int | None:
    return None if raw.lower() in _DISABLED_WORDS else int(raw)


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
) -> BeaconConfig:
    """Resolves and validates every option."""
    name = _pick("service_name", service_name, str, None)
    if name is None:
        name = os.environ.get("OTEL_SERVICE_NAME") or None
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"service_name must be a non-empty string, got {name!r}")

    paths = {
        option: _check_path(option, _pick(option, value, _parse_path, default))
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
    if not isinstance(header, str) or not header:
        raise ConfigError(f"request_id_header must be a header name, got {header!r}")

    bucket_bounds = _pick("buckets", buckets, _parse_buckets, None)
    if bucket_bounds is not None:
        if isinstance(bucket_bounds, (str, bytes)) or not isinstance(bucket_bounds, Sequence):
            raise ConfigError(f"buckets must be a sequence of seconds, got {bucket_bounds!r}")
        bucket_bounds = tuple(float(b) for b in bucket_bounds)

    drain = _pick("drain_seconds", drain_seconds, _parse_float, 5.0)
    if isinstance(drain, bool) or not isinstance(drain, (int, float)) or not math.isfinite(drain) or drain < 0:
        raise ConfigError(f"drain_seconds must be a finite number of seconds >= 0, got {drain!r}")

    port = _pick("side_port", side_port, _parse_optional_int, None)
    if port is not None:
        raise ConfigError(
            "side_port is not available in this version of caddy-beacon yet; "
            "the probes are served on the app's own port (remove side_port / BEACON_SIDE_PORT)"
        )

    cap = _pick("max_series", max_series, int, 2000)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ConfigError(f"max_series must be an integer >= 1, got {cap!r}")

    return BeaconConfig(
        service_name=name,
        health_path=paths["health_path"],
        ready_path=paths["ready_path"],
        metrics_path=paths["metrics_path"],
        request_id_header=header,
        buckets=bucket_bounds,
        drain_seconds=float(drain),
        max_series=cap,
    )

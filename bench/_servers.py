"""Starting the benchmark app's variants as uvicorn servers, shared by the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = [
    "bare",
    "passthrough",
    "passthrough+id",
    "caddy-beacon",
    "caddy-beacon+tracing",
    "instrumentator",
    "starlette-exporter",
    "otel",
    "instrumentator+otel",
]


def select_variants(spec: str) -> list[str]:
    """`bare` first, then the requested ones; unknown names end the run with the list."""
    names = ["bare"] + [n for n in spec.split(",") if n and n != "bare"]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {VARIANTS}")
    return names


def start_variant(
    name: str,
    port: int,
    prefix: list[str],
    startup_seconds: float = 30,
    otlp_endpoint: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Starts one uvicorn worker (uvloop, httptools, no access log) serving `name`, behind
    `prefix` (e.g. taskset or valgrind), and waits until it answers. `caddy-beacon+tracing`
    exports every span (100% sampling) to `otlp_endpoint`."""
    # One hash seed for every server: with per-process random seeds, dict layouts (and so
    # speed) differ by a few percent between two runs of the very same code.
    env = {
        **os.environ,
        "BENCH_VARIANT": name,
        # BENCH_EXTRA_PATH puts another build of caddy_beacon first (e.g. a `pip install
        # --target DIR` of the previous commit's wheel), for before/after runs.
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("BENCH_EXTRA_PATH"), str(ROOT)])),
        "BEACON_DRAIN_SECONDS": "0",
        "PYTHONHASHSEED": "0",
    }
    env |= extra_env or {}
    if name == "caddy-beacon+tracing":
        if otlp_endpoint is None:
            raise SystemExit("caddy-beacon+tracing needs an OTLP endpoint")
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint, "OTEL_TRACES_SAMPLER": "always_on"}
    command = prefix + [
        sys.executable, "-m", "uvicorn", "bench.app:app",
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + startup_seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"variant {name} exited with {process.returncode}") from None
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"variant {name} did not start within {startup_seconds}s")


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def start_otlp_sink() -> tuple[str, Callable[[], int]]:
    """A local OTLP/HTTP endpoint that accepts and discards spans, in a thread of this process.
    Returns its URL and a function giving the number of requests it received."""
    received = [0]

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", "0")))
            received[0] += 1
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", lambda: received[0]

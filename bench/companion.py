"""Figures for the companion (`caddy-beacon run`) against a real Caddy on this machine.

- ready -> routed: from the moment the app's readiness check first passes (recorded inside the
  app) to the first request Caddy routes to it;
- SIGTERM -> exit: with nothing in flight, and with a 2 s request in flight through Caddy;
- failed requests during a rolling restart of two replicas under load, for an HTTP/2 client that
  handles GOAWAY (browsers), and for HTTP/1.1 clients that never retry (fresh connection per
  request, and keep-alive);
- the companion's resident memory and idle CPU, as the standalone binary and as the command pip
  installs (the same code hosted in a Python process).

    python bench/companion.py [--rounds 5] [--footprint-only]

Needs `make install-test` (Caddy, the test app) and, for the standalone figures,
`cargo build --release -p beacon-companion`.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.caddy import Caddy, launch_caddy  # noqa: E402
from tests.support.companion import COMPANION, Companion, launch_companion, uvicorn_command  # noqa: E402
from tests.support.hostile import process_stats  # noqa: E402
from tests.support.load import Load  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.sites import SITE  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "caddy-beacon"
PIP_COMMAND = Path(sys.executable).parent / "caddy-beacon"


def replica(
    tmp: Path, caddy: Caddy, *, env: dict[str, str] | None = None, program: Path | None = None, port: int | None = None
) -> Companion:
    port = port or free_port()
    return launch_companion(
        tmp, caddy, f"127.0.0.1:{port}", command=uvicorn_command(port), env=env,
        args=("--drain-timeout", "15s"), program=str(program) if program else None,
    )  # fmt: skip


def stop(companion: Companion) -> None:
    companion.cleanup()


def ready_to_routed(
    tmp: Path, rounds: int, caddy: Caddy | None = None, launch: Callable[..., Companion] | None = None
) -> list[float]:
    """From each replica's readiness passing to the first request Caddy routes to it: through
    `caddy` and replicas from `launch(env=...)` (by default a stock Caddy, config edits)."""
    owned = caddy is None
    caddy = caddy or launch_caddy(tmp, SITE)
    start = launch or (lambda **options: replica(tmp, caddy, **options))
    results = []
    try:
        for round_ in range(rounds):
            state = tmp / f"state-{round_}-{time.monotonic_ns()}"
            state.mkdir()
            companion = start(env={"TEST_CHECKS": "warmup", "TEST_READY_AFTER": "2", "TEST_STATE_DIR": str(state)})
            first = None
            deadline = time.monotonic() + 30
            with httpx.Client(timeout=5) as client:
                while first is None and time.monotonic() < deadline:
                    response = client.get(f"{caddy.base_url}/whoami")
                    if response.status_code == 200:
                        first = response.json()["handled_at"]
                    else:
                        time.sleep(0.002)
            assert first is not None, companion.log()
            results.append(first - float((state / "ready-at").read_text()))
            companion.signal(signal.SIGTERM)
            companion.wait(30)
            stop(companion)
    finally:
        if owned:
            caddy.stop()
    return results


def sigterm_to_exit(tmp: Path, rounds: int, in_flight: bool) -> list[float]:
    caddy = launch_caddy(tmp, SITE)
    results = []
    try:
        for _ in range(rounds):
            companion = replica(tmp, caddy)
            companion.wait_registered()
            slow = None
            if in_flight:
                slow = threading.Thread(target=lambda: httpx.get(f"{caddy.base_url}/sleep/2", timeout=20))
                slow.start()
                with caddy.admin_client() as admin:
                    assert wait_until(
                        lambda: any(u["num_requests"] for u in admin.get("/reverse_proxy/upstreams").json()), timeout=10
                    )
            started = time.monotonic()
            companion.signal(signal.SIGTERM)
            assert companion.wait(60) == 0, companion.log()
            results.append(time.monotonic() - started)
            if slow:
                slow.join()
            stop(companion)
    finally:
        caddy.stop()
    return results


def rolling_restart(tmp: Path, tls: bool, keepalive: bool) -> tuple[int, int, int]:
    caddy = launch_caddy(tmp, SITE, tls=tls)
    ports = [free_port(), free_port()]
    running = {port: replica(tmp, caddy, port=port) for port in ports}
    try:
        for companion in running.values():
            companion.wait_registered()
        with Load(caddy.base_url, keepalive=keepalive) as load:
            wait_until(lambda: len(load.pids) == 2, timeout=20)
            for port in ports:
                old = running[port]
                old.signal(signal.SIGTERM)
                old.wait(60)
                running[port] = replica(tmp, caddy, port=port)
                running[port].wait_registered()
                new_pid = running[port].app_pid()
                wait_until(lambda new_pid=new_pid: new_pid in load.pids, timeout=20)
            time.sleep(1)
        return load.ok, len(load.failures), load.resent
    finally:
        for companion in running.values():
            stop(companion)
        caddy.stop()


def footprint(tmp: Path, program: Path, idle_seconds: float) -> tuple[float, float]:
    """(resident MiB, CPU % of one core) of an idle registered companion."""
    caddy = launch_caddy(tmp, SITE)
    try:
        companion = replica(tmp, caddy, program=program)
        companion.wait_registered()
        time.sleep(3)
        pid = companion.process.pid

        def cpu_seconds() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before, started = cpu_seconds(), time.monotonic()
        time.sleep(idle_seconds)
        cpu = (cpu_seconds() - before) / (time.monotonic() - started) * 100
        rss_bytes, _ = process_stats(pid)
        stop(companion)
        return rss_bytes / 2**20, cpu
    finally:
        caddy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--footprint-only", action="store_true", help="only the idle RSS and CPU figures")
    options = parser.parse_args()
    if not COMPANION.exists():
        sys.exit(f"{COMPANION} is missing: cargo build -p beacon-companion")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)

        def show(name: str, values: list[float]) -> None:
            print(
                f"{name:<44} median {statistics.median(values) * 1000:7.0f} ms   max {max(values) * 1000:7.0f} ms   ({len(values)} rounds)"
            )

        if not options.footprint_only:
            show("app ready -> first request routed", ready_to_routed(tmp, options.rounds))
            show("SIGTERM -> exit, nothing in flight", sigterm_to_exit(tmp, options.rounds, in_flight=False))
            show("SIGTERM -> exit, a 2 s request in flight", sigterm_to_exit(tmp, options.rounds, in_flight=True))
            for label, tls, keepalive in [
                ("HTTP/2 client honouring GOAWAY", True, True),
                ("HTTP/1.1, a new connection per request", False, False),
                ("HTTP/1.1 keep-alive, no retries", False, True),
            ]:
                ok, failed, resent = rolling_restart(tmp, tls, keepalive)
                print(
                    f"rolling restart, {label:<40} {ok:6d} ok {failed:4d} failed"
                    + (f" ({resent} sent again after GOAWAY)" if tls else "")
                )
        for label, program in [("standalone binary (release)", RELEASE), ("pip-installed command", PIP_COMMAND)]:
            if not program.exists():
                print(f"{label}: {program} missing, skipped")
                continue
            rss, cpu = footprint(tmp, program, options.idle_seconds)
            print(
                f"companion idle, {label:<30} RSS {rss:6.1f} MiB   CPU {cpu:5.2f} % of a core over {options.idle_seconds:.0f} s"
            )


if __name__ == "__main__":
    main()

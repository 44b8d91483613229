"""Probes under hostile clients: can a liveness probe with a 1 s timeout still get through?

For the app's side port and for the companion's `/status`, three phases, each 30 probes on fresh
connections (1 s timeout each, as a kubelet sends them):
- quiet: nothing else connected;
- hostile: 200 idle connections plus 5 clients sending their request head one byte every 0.5 s;
- hostile + blocked loop (side port only): the same while a handler blocks the app's event loop.

Prints answered/total, p50 and p99 (a failed probe counts as its full timeout), and the serving
process' RSS and thread count before and under attack.

    python bench/probes.py [--idle 200] [--tricklers 5] [--probes 30]

Needs `make install-test` (the test app, Caddy) and `cargo build -p beacon-companion`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.caddy import launch_caddy  # noqa: E402
from tests.support.companion import launch_companion, uvicorn_command  # noqa: E402
from tests.support.hostile import IdleConnections, Tricklers, probe, process_stats  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.servers import launch  # noqa: E402
from tests.support.sites import SITE  # noqa: E402


def attack(port: int, pid: int, args: argparse.Namespace, label: str, during: object = None) -> None:
    rss0, threads0 = process_stats(pid)
    idle = IdleConnections(port, args.idle)
    tricklers = Tricklers(port, clients=args.tricklers, interval=0.5, max_seconds=120)
    try:
        time.sleep(1)
        run = probe(port, "/health" if label.startswith("side") else "/status", count=args.probes, timeout=1.0)
        rss1, threads1 = process_stats(pid)
    finally:
        tricklers.close()
        idle.close()
    print(f"{label:<38} {run.summary()}")
    print(
        f"{'':<38} RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB, threads {threads0} -> {threads1}, idle sockets opened {len(idle.sockets)}"
    )


def side_port(tmp: Path, args: argparse.Namespace) -> None:
    side = free_port()
    server = launch(tmp, env={"BEACON_SIDE_PORT": str(side), "BEACON_STALL_SECONDS": "30"})
    try:
        quiet = probe(side, count=args.probes)
        print(f"{'side port /health, quiet':<38} {quiet.summary()}")
        attack(side, server.process.pid, args, "side port /health, hostile")
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            blocked = pool.submit(httpx.get, f"{server.base_url}/block/8", timeout=30)
            time.sleep(0.2)
            attack(side, server.process.pid, args, "side port /health, hostile + loop blocked")
            blocked.result()
    finally:
        server.stop()


def companion_status(tmp: Path, args: argparse.Namespace) -> None:
    caddy = launch_caddy(tmp, SITE)
    port = free_port()
    companion = launch_companion(tmp, caddy, f"127.0.0.1:{port}", command=uvicorn_command(port))
    try:
        companion.wait_registered()
        assert companion.status_port
        quiet = probe(companion.status_port, "/status", count=args.probes)
        print(f"{'companion /status, quiet':<38} {quiet.summary()}")
        attack(companion.status_port, companion.process.pid, args, "companion /status, hostile")
    finally:
        companion.cleanup()
        caddy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--tricklers", type=int, default=5)
    parser.add_argument("--probes", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        side_port(Path(tmp), args)
        companion_status(Path(tmp), args)


if __name__ == "__main__":
    main()

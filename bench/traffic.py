"""Figures for the pool's traffic features (issue 21), each measured side by side in one run:

- pool size: requests/s through one module Caddy to a pool of 1, 20 and 200 members (the whole
  pool, and `choices 2` with least_conn) and to the same members listed statically, against one
  static upstream; wrk alternates between the sites for several rounds. The members are Caddy
  `respond` sites of a second Caddy, so the proxy's own cost is what shows.
- canary: a member at weight 10 beside two at 100, its share over 10,000 requests; then its
  weight set to 0 through the admin route, and how long until it serves no more.
- slow start: the share of requests a member joining a settled pool serves, second by second
  over a 10 s window (two settled members beside it).
- rolling restart: p99 and max latency through Caddy while three replicas of a cold app
  (bench/cold_app.py: its first 50 requests per process block for 50 ms more) are replaced one
  by one under companions, with and without `slow_start 10s`.

    python bench/traffic.py [--rounds 3] [--seconds 3] [--restart-rounds 2] [--only pool,canary,slow,restart]

Needs `make install-test`, `make caddy`, `cargo build -p beacon-companion` and wrk.
"""

from __future__ import annotations

import argparse
import collections
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.module import caddyfile, require_module_caddy_and_wrk, site, wrk  # noqa: E402
from tests.support.caddy import MODULE_CADDY, Caddy, launch_caddy, start_caddy  # noqa: E402
from tests.support.companion import Companion, launch_companion  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

SIZES = (1, 20, 200)


def backends(tmp: Path, count: int) -> tuple[Caddy, list[int]]:
    """A Caddy serving `respond "<port>"` on `count` ports (each answer names its port)."""
    ports = [free_port() for _ in range(count)]
    admin = free_port()
    sites = "".join(site(port, f'\trespond "{port}"') for port in ports)
    caddy = start_caddy(tmp, caddyfile(tmp, "Caddyfile-backends", admin, sites), {}, f"http://127.0.0.1:{ports[0]}", admin,
                         log_name="caddy-backends.log", binary=MODULE_CADDY)  # fmt: skip
    return caddy, ports


def register(caddy: Caddy, pool: str, ports: list[int], weights: dict[int, int] | None = None) -> None:
    with caddy.admin_client() as admin:
        for port in ports:
            body = {"address": f"127.0.0.1:{port}", "lease_ms": 300_000, "weight": (weights or {}).get(port, 100)}
            answer = admin.post(f"/beacon/pools/{pool}/register", json=body)
            assert answer.status_code == 200, answer.text


def pool_block(name: str, *options: str, health: tuple[str, str] = ("/", "30s")) -> str:
    """A `dynamic beacon` block; the Caddy `respond` backends are probed at / and rarely, so
    the checks of hundreds of members do not weigh on the throughput being measured."""
    uri, interval = health
    inner = "".join(f"\t\t\t{o}\n" for o in (f"health_uri {uri}", f"health_interval {interval}", *options))
    return f"\t\tdynamic beacon {name} {{\n{inner}\t\t}}\n"


def pool_size(tmp: Path, rounds: int, seconds: float) -> None:
    ends, ports = backends(tmp, max(SIZES))
    sites: dict[str, tuple[int, str]] = {"static 1": (free_port(), f"\treverse_proxy 127.0.0.1:{ports[0]}")}
    for size in SIZES[1:]:
        listed = " ".join(f"127.0.0.1:{p}" for p in ports[:size])
        sites[f"static list {size}"] = (free_port(), f"\treverse_proxy {listed} {{\n\t\tlb_policy round_robin\n\t}}")
    for size in SIZES:
        sites[f"pool {size}"] = (
            free_port(),
            "\treverse_proxy {\n" + pool_block(f"all{size}") + "\t\tlb_policy round_robin\n\t}",
        )
        sites[f"pool {size}, choices 2"] = (
            free_port(),
            "\treverse_proxy {\n" + pool_block(f"two{size}", "choices 2") + "\t\tlb_policy round_robin\n\t}",
        )
    # The pairing the README suggests: least_conn among two drawn (power of two choices).
    sites[f"pool {SIZES[-1]}, choices 2, least_conn"] = (
        free_port(),
        "\treverse_proxy {\n" + pool_block(f"p2c{SIZES[-1]}", "choices 2") + "\t\tlb_policy least_conn\n\t}",
    )
    admin = free_port()
    body = "".join(site(port, text) for port, text in sites.values())
    proxy = start_caddy(
        tmp,
        caddyfile(tmp, "Caddyfile-proxy", admin, body),
        {},
        "",
        admin,
        log_name="caddy-proxy.log",
        binary=MODULE_CADDY,
    )
    try:
        for size in SIZES:
            register(proxy, f"all{size}", ports[:size])
            register(proxy, f"two{size}", ports[:size])
        register(proxy, f"p2c{SIZES[-1]}", ports)
        for name, (port, _) in sites.items():
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200, name
        wrk(f"http://127.0.0.1:{sites['static 1'][0]}/", 1)
        rates: dict[str, list[float]] = collections.defaultdict(list)
        names = list(sites)
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                rates[name].append(wrk(f"http://127.0.0.1:{sites[name][0]}/", seconds))
            print(f"  round {round_ + 1}: " + ", ".join(f"{name} {rates[name][-1]:.0f}" for name in names), flush=True)
        base = statistics.median(rates["static 1"])
        print(
            f"pool size: requests/s (median of {rounds} interleaved rounds, wrk -c32) and ratio to one static upstream"
        )
        for name in names:
            print(f"  {name:<24} {statistics.median(rates[name]):9.0f}  {statistics.median(rates[name]) / base:5.3f}")
    finally:
        proxy.stop()
        ends.stop()


def served_by(client: httpx.Client, path: str = "/") -> str:
    return client.get(path).text


def canary(tmp: Path, requests: int) -> None:
    ends, ports = backends(tmp, 3)
    caddy = launch_caddy(tmp, "\treverse_proxy {\n" + pool_block("canary") + "\t}", module=True)
    try:
        register(caddy, "canary", ports, {ports[2]: 10})
        with httpx.Client(base_url=caddy.base_url, timeout=5) as client:
            counts = collections.Counter(served_by(client) for _ in range(requests))
            share = counts[str(ports[2])] / requests
            print(f"canary at weight 10 beside two at 100: {counts[str(ports[2])]} of {requests} requests = {share:.4f} "
                  f"(10/210 = {10 / 210:.4f}; {share / (10 / 210) - 1:+.1%})")  # fmt: skip
            with caddy.admin_client() as admin:
                changed_at = time.monotonic()
                assert (
                    admin.post(
                        "/beacon/pools/canary/weight", json={"address": f"127.0.0.1:{ports[2]}", "weight": 0}
                    ).status_code
                    == 200
                )
            last_seen = changed_at
            while time.monotonic() - changed_at < 2:
                if served_by(client) == str(ports[2]):
                    last_seen = time.monotonic()
            print(
                f"weight 10 -> 0: last request served by the canary {(last_seen - changed_at) * 1000:.0f} ms after the change (2 s watched)"
            )
    finally:
        caddy.stop()
        ends.stop()


def slow_start(tmp: Path, window: int) -> None:
    ends, ports = backends(tmp, 3)
    caddy = launch_caddy(
        tmp,
        "\treverse_proxy {\n" + pool_block("ramp", f"slow_start {window}s") + "\t\tlb_policy round_robin\n\t}",
        module=True,
    )
    try:
        register(caddy, "ramp", ports[:2])
        time.sleep(window + 0.5)  # the two are settled
        stop = threading.Event()
        seen: list[tuple[float, str]] = []
        lock = threading.Lock()

        def drive() -> None:
            with httpx.Client(base_url=caddy.base_url, timeout=5) as client:
                while not stop.is_set():
                    answer = served_by(client)
                    with lock:
                        seen.append((time.monotonic(), answer))

        threads = [threading.Thread(target=drive) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        joined = time.monotonic()
        register(caddy, "ramp", ports[2:])
        time.sleep(window + 1)
        stop.set()
        for thread in threads:
            thread.join()
        print(
            f"slow start {window}s: share of requests the joining member served, second by second (equal share 1/3 = 0.333)"
        )
        for second in range(window + 1):
            window_answers = [a for t, a in seen if joined + second <= t < joined + second + 1]
            share = sum(a == str(ports[2]) for a in window_answers) / max(1, len(window_answers))
            print(f"  {second:2d}-{second + 1:2d} s  {share:.3f}  ({len(window_answers)} requests)")
    finally:
        caddy.stop()
        ends.stop()


def cold_replica(tmp: Path, caddy: Caddy, port: int) -> Companion:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.cold_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    companion = launch_companion(
        tmp, caddy, f"127.0.0.1:{port}", site="", command=command, args=("--pool", "cold", "--drain-timeout", "10s")
    )
    companion.wait_registered(timeout=30)
    return companion


def rolling_restart(tmp: Path, slow: bool) -> tuple[float, float, float, int, int, int]:
    """(p50, p99, p99.9 latency in ms, requests slower than 50 ms, requests, failures) through
    Caddy while three cold replicas are replaced one by one. The cold requests are 150 of tens of
    thousands, under the p99: what slow start changes shows in the p99.9 and in how many
    requests waited behind a cold one."""
    options = ("slow_start 10s",) if slow else ()
    block = pool_block("cold", *options, health=("/ready", "500ms"))
    caddy = launch_caddy(
        tmp, "\treverse_proxy {\n" + block + "\t\tlb_policy round_robin\n\t\tlb_retries 2\n\t}", module=True
    )
    ports = [free_port() for _ in range(3)]
    running = {port: cold_replica(tmp, caddy, port) for port in ports}
    latencies: list[float] = []
    failures = 0
    stop = threading.Event()
    lock = threading.Lock()

    def drive() -> None:
        nonlocal failures
        with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.get("/whoami").status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    latencies.append(time.monotonic() - started)
                    failures += not ok

    try:
        time.sleep(11)  # settled: past the slow-start window
        threads = [threading.Thread(target=drive) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        for port in ports:
            old = running[port]
            old.signal(signal.SIGTERM)
            old.wait(60)
            running[port] = cold_replica(tmp, caddy, port)
            time.sleep(12)
        stop.set()
        for thread in threads:
            thread.join()
        ordered = sorted(latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
        slow_requests = sum(1 for latency in ordered if latency > 0.05)
        return pick(0.5), pick(0.99), pick(0.999), slow_requests, len(ordered), failures
    finally:
        for companion in running.values():
            companion.cleanup()
        caddy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--only", default="pool,canary,slow,restart")
    parser.add_argument("--restart-rounds", type=int, default=2)
    options = parser.parse_args()
    require_module_caddy_and_wrk()
    only = set(options.only.split(","))
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        if "pool" in only:
            pool_size(tmp, options.rounds, options.seconds)
        if "canary" in only:
            canary(tmp, options.requests)
        if "slow" in only:
            slow_start(tmp, 10)
        if "restart" in only:
            for round_ in range(options.restart_rounds):
                for slow in (False, True) if round_ % 2 == 0 else (True, False):
                    p50, p99, p999, slowest, count, failed = rolling_restart(tmp, slow)
                    label = "with slow_start 10s" if slow else "without slow start "
                    print(f"rolling restart of 3 cold replicas, {label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, p99.9 {p999:.1f} ms, "
                          f"{slowest} requests over 50 ms, of {count}; {failed} failed", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

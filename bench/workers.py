"""Figures for several workers: throughput against the bare app with 1 and 2 uvicorn workers,
`/health` latency on the side port and on the app port while the app is saturated, and the time
to scrape `/metrics` with 1,000 series across 4 workers.

    python bench/workers.py [--rounds 6] [--seconds 3]

Needs `wrk` (apt-get install wrk). Throughput is measured as in bench/throughput.py: server CPU
time per request (summed over the server's processes), as a ratio to the bare app, median of
per-round ratios with bare and caddy-beacon visited alternately (each going first every other
round). This machine is shared: single runs drift by several percent, so use many rounds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.ports import free_port  # noqa: E402

USER_HZ = os.sysconf("SC_CLK_TCK")


def start(variant: str, workers: int, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "bench.app:app", "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if workers > 1:
        command += ["--workers", str(workers)]
    full_env = {
        **os.environ,
        "BENCH_VARIANT": variant,
        "PYTHONPATH": str(ROOT),
        "BEACON_DRAIN_SECONDS": "0",
        "PYTHONHASHSEED": "0",
        **(env or {}),
    }
    process = subprocess.Popen(
        command, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            time.sleep(1 if workers > 1 else 0)  # let every worker come up
            return process, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{variant} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, 15)
    process.wait(timeout=30)


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its children (the workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / USER_HZ
    return total


def wrk(port: int, seconds: float, path: str = "/items/7") -> float:
    result = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{max(1, round(seconds))}s", f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(re.search(r"(\d+) requests in", result.stdout).group(1))  # type: ignore[union-attr]


def throughput(workers: int, rounds: int, seconds: float) -> tuple[float, float]:
    ratios_cpu, ratios_rps = [], []
    for round_ in range(rounds):
        per: dict[str, tuple[float, float]] = {}
        # Alternate which goes first, so a drift of the machine within a round cancels out.
        for variant in ("bare", "caddy-beacon") if round_ % 2 == 0 else ("caddy-beacon", "bare"):
            process, port = start(variant, workers)
            try:
                wrk(port, 1)  # warm-up
                before = tree_cpu(process.pid)
                requests = wrk(port, seconds)
                per[variant] = ((tree_cpu(process.pid) - before) / requests, requests / seconds)
            finally:
                stop(process)
        ratios_cpu.append(per["bare"][0] / per["caddy-beacon"][0])
        ratios_rps.append(per["caddy-beacon"][1] / per["bare"][1])
    return statistics.median(ratios_cpu), statistics.median(ratios_rps)


def latencies(url: str, count: int) -> list[float]:
    values = []
    for _ in range(count):
        started = time.perf_counter()
        urllib.request.urlopen(url, timeout=30).read()
        values.append(time.perf_counter() - started)
        time.sleep(0.02)
    return values


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def health_under_load(seconds: float) -> None:
    side = free_port()
    process, port = start("caddy-beacon", 1, {"BEACON_SIDE_PORT": str(side)})
    try:
        load = threading.Thread(target=wrk, args=(port, seconds + 4))
        load.start()
        time.sleep(1)
        results = {}
        for name, url in (
            ("side port", f"http://127.0.0.1:{side}/health"),
            ("app port", f"http://127.0.0.1:{port}/health"),
        ):
            results[name] = latencies(url, 100)
        load.join()
        for name, values in results.items():
            print(
                f"/health on the {name:<9} while wrk saturates the app: p50 {percentile(values, 0.5) * 1000:7.2f} ms   p99 {percentile(values, 0.99) * 1000:7.2f} ms"
            )
    finally:
        stop(process)


def scrape_time() -> None:
    side = free_port()
    process, port = start("caddy-beacon", 4, {"BENCH_ROUTES": "1000", "BEACON_SIDE_PORT": str(side)})
    try:
        for number in range(1000):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/r{number}", timeout=10).read()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        series = len(
            {
                line.split("}")[0]
                for line in body.splitlines()
                if line.startswith("http_server_request_duration_seconds_count{")
            }
        )
        for name, url in (
            ("app port", f"http://127.0.0.1:{port}/metrics"),
            ("side port", f"http://127.0.0.1:{side}/metrics"),
        ):
            values = latencies(url, 50)
            print(
                f"scrape /metrics, {series} series, 4 workers, {name:<9}: p50 {percentile(values, 0.5) * 1000:6.1f} ms   p99 {percentile(values, 0.99) * 1000:6.1f} ms   ({len(body) // 1024} KiB)"
            )
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 2")
    parser.add_argument("--only-throughput", action="store_true")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    for workers in (int(n) for n in options.workers.split(",")):
        cpu, rps = throughput(workers, options.rounds, options.seconds)
        print(
            f"caddy-beacon vs bare, {workers} worker{'s' if workers > 1 else ' '}: cpu ratio {cpu:.3f}   rps ratio {rps:.3f}   ({options.rounds} rounds)"
        )
    if not options.only_throughput:
        health_under_load(options.seconds * 2)
        scrape_time()


if __name__ == "__main__":
    main()

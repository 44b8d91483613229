"""Throughput of caddy-beacon against the bare app and the libraries users run today.

Every variant runs at once as its own uvicorn server (one worker, uvloop + httptools, no access
log) pinned to CPU 0; wrk, pinned to CPU 1, visits them in turn for a few seconds each, for
several rounds, with fresh server processes every round. Slow drifts of a shared machine then hit
every variant alike.

Two figures per variant, both as a ratio to the bare app, each the median over rounds of the
ratio within a round (so a variant is compared with the bare visit closest in time):
- cpu ratio: bare's server CPU time per request / the variant's (utime+stime of the server
  process from /proc, divided by the requests wrk completed). The steadier figure: it is the
  throughput ratio at saturation.
- rps ratio: the variant's requests/s / bare's.

    python bench/throughput.py [--rounds 10] [--seconds 2] [--connections 32] [--path /items/7]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._servers import VARIANTS, select_variants, start_otlp_sink, start_variant, stop_all  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

USER_HZ = os.sysconf("SC_CLK_TCK")


@dataclass
class Variant:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None
    cpu_per_request: list[float] = field(default_factory=list)
    requests_per_second: list[float] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / USER_HZ  # utime, stime


def visit(variant: Variant, args: argparse.Namespace) -> None:
    assert variant.process is not None
    url = f"http://127.0.0.1:{variant.port}{args.path}"
    before = cpu_seconds(variant.process.pid)
    result = subprocess.run(
        ["taskset", "-c", args.load_cpu, "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", url],
        capture_output=True, text=True, check=True, timeout=args.seconds + 30,
    )  # fmt: skip
    after = cpu_seconds(variant.process.pid)
    requests = int(re.search(r"(\d+) requests in", result.stdout).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", result.stdout)
    if errors:
        raise SystemExit(f"{variant.name}: wrk reported errors: {errors.group(0)}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    variant.cpu_per_request.append((after - before) / max(requests, 1))
    variant.requests_per_second.append(rps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--path", default="/items/7")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset (bare is always run)")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--load-cpu", default="1")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    # The span sink shares the load generator's CPU, so the servers' CPU is theirs alone.
    os.sched_setaffinity(0, {int(args.load_cpu)})
    sink_url, sink_requests = start_otlp_sink()
    variants = [Variant(name, 0, None) for name in select_variants(args.variants)]
    # Every round starts fresh server processes: a process's memory layout alone moves its speed
    # by a few percent, and the median over rounds evens that out with the machine's drift.
    for round_number in range(args.rounds):
        for variant in variants:
            variant.port = free_port()
            variant.process = start_variant(
                variant.name, variant.port, ["taskset", "-c", args.server_cpu], otlp_endpoint=sink_url
            )
        try:
            for variant in variants:  # warm-up: imports, first-request caches
                subprocess.run(["wrk", "-t1", "-c4", "-d1s", f"http://127.0.0.1:{variant.port}{args.path}"],
                               capture_output=True, check=True, timeout=30)  # fmt: skip
            order = variants if round_number % 2 == 0 else list(reversed(variants))
            for variant in order:
                visit(variant, args)
        finally:
            stop_all([variant.process for variant in variants if variant.process is not None])
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)

    bare = variants[0]
    results = []
    if any(v.name == "caddy-beacon+tracing" for v in variants):
        print(f"span export requests received by the local OTLP sink: {sink_requests()}")
    print(f"\n{args.rounds} rounds x {args.seconds}s per variant, wrk -c{args.connections} GET {args.path}")
    print(f"{'variant':<22}{'req/s (median)':>16}{'CPU µs/req':>12}{'cpu ratio':>11}{'rps ratio':>11}")
    for variant in variants:
        cpu = statistics.median(variant.cpu_per_request)
        rps = statistics.median(variant.requests_per_second)
        row = {
            "variant": variant.name,
            "requests_per_second": rps,
            "cpu_us_per_request": cpu * 1e6,
            "cpu_ratio": statistics.median(
                b / v for b, v in zip(bare.cpu_per_request, variant.cpu_per_request, strict=True)
            ),
            "rps_ratio": statistics.median(
                v / b for b, v in zip(bare.requests_per_second, variant.requests_per_second, strict=True)
            ),
        }
        results.append(row)
        print(f"{variant.name:<22}{rps:>16.0f}{cpu * 1e6:>12.1f}{row['cpu_ratio']:>11.3f}{row['rps_ratio']:>11.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2))


if __name__ == "__main__":
    main()

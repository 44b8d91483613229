"""Instructions per request: a noise-free figure of what each variant costs the server.

Requests/s on a shared machine swing by several percent from minute to minute. Instruction
counts do not: each variant's uvicorn server runs under valgrind's callgrind, is warmed up, its
counters are zeroed, it serves N sequential keep-alive requests, and the counters are dumped.
Everything the server process executes for those requests is counted (uvicorn, the framework,
the instrumentation, its native code); the client is another process and is not.

The ratio bare / variant estimates the throughput ratio at saturation for a CPU-bound server.
Counts do move between builds and environments of the same code, by up to ~0.7 %: CPython
3.11's method cache is indexed by the address of the attribute name, so where objects land in
memory decides which hot lookups collide and miss (callgrind shows them as find_name_in_mro).
Under valgrind the layout is fixed, so a plain re-run repeats the same figure; `--repeat N`
runs every variant N times, interleaved, each time with another memory layout (a different
BENCH_LAYOUT_PAD, see bench/app.py), and reports the median of each.
Threads are counted apart too: "event loop" is the main thread, where requests are served (the
request path); the rest is background work such as the span exporter's thread.

    python bench/instructions.py [--requests 1000] [--repeat 3] [--variants caddy-beacon,passthrough]
    BENCH_EXTRA_PATH=/tmp/oldpkg python bench/instructions.py   # another build of caddy_beacon
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._servers import VARIANTS, select_variants, start_otlp_sink, start_variant, stop_all  # noqa: E402
from tests.support.ports import free_port  # noqa: E402


def send_requests(port: int, path: str, count: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"GET {path} answered {response.status}")
    connection.close()


def measure(name: str, args: argparse.Namespace, workdir: Path, layout: int = 0) -> tuple[float, float]:
    """(all threads, the event loop's thread) instructions per request."""
    port = free_port()
    out = workdir / f"{name}.{layout}.callgrind"
    process = start_variant(
        name,
        port,
        ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}.%p"],
        startup_seconds=300,
        otlp_endpoint=args.otlp_endpoint,
        extra_env={"BENCH_LAYOUT_PAD": str(layout)},
    )
    try:
        send_requests(port, args.path, args.warmup)
        subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
        send_requests(port, args.path, args.requests)
        subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        # One dump per thread: <out>.<pid>.1-01 is the main thread.
        main = Path(f"{out}.{process.pid}.1-01")
        while not main.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # the other threads' dumps follow the main one
        totals = {}
        for dump in Path(workdir).glob(f"{out.name}.{process.pid}.1-*"):
            summary = re.search(r"^summary:\s+(\d+)", dump.read_text(), re.MULTILINE)
            if summary is None:
                raise SystemExit(f"no summary in {dump}")
            totals[dump.name] = int(summary.group(1))
        if main.name not in totals:
            raise SystemExit(f"no dump of the main thread at {main}")
        return sum(totals.values()) / args.requests, totals[main.name] / args.requests
    finally:
        stop_all([process])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant, interleaved; the median is reported")
    parser.add_argument("--path", default="/items/7")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset (bare is always run)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (Debian/Ubuntu: apt-get install valgrind)")

    args.otlp_endpoint, _ = start_otlp_sink()
    names = select_variants(args.variants)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as workdir:
        for run in range(max(1, args.repeat)):
            for name in names:
                total, loop = measure(name, args, Path(workdir), layout=run * 97)
                runs[name].append((total, loop))
                print(f"{name}: {total:,.0f} instructions/request ({loop:,.0f} on the event loop)", file=sys.stderr)
    counts = {name: statistics.median(total for total, _ in results) for name, results in runs.items()}
    loop_counts = {name: statistics.median(loop for _, loop in results) for name, results in runs.items()}

    bare, bare_loop = counts["bare"], loop_counts["bare"]
    repeats = f", median of {args.repeat} runs" if args.repeat > 1 else ""
    print(f"\n{args.requests} sequential keep-alive requests GET {args.path}, counted by callgrind{repeats}")
    print(f"{'variant':<22}{'instr/request':>15}{'extra vs bare':>15}{'ratio':>8}{'event loop':>13}{'loop ratio':>12}")
    for name, count in counts.items():
        loop = loop_counts[name]
        print(
            f"{name:<22}{count:>15,.0f}{count - bare:>15,.0f}{bare / count:>8.3f}{loop:>13,.0f}{bare_loop / loop:>12.3f}"
        )
    if args.json:
        results = {
            "requests": args.requests,
            "path": args.path,
            "instructions": counts,
            "event_loop": loop_counts,
            "runs": runs,
        }
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

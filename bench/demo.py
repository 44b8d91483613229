"""Figures for `make demo`: how long until both replicas serve through Caddy, and how long
Ctrl-C takes to stop everything (companions drain, apps drain for their drain_seconds, then
Caddy and Prometheus).

    python bench/demo.py [--rounds 3]

Needs `make install` (or install-test). Uses its own ports and a temporary workdir.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOTH_SERVING = re.compile(r"serving\s+yes\s+yes")


def one_round(workdir: str) -> tuple[float, float]:
    started = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples.demo", "--port", "28080", "--admin-port", "22019",
         "--app-ports", "28001,28002", "--status-ports", "29465,29466", "--prometheus-port", "29090",
         "--otlp-port", "24318", "--workdir", workdir, "--traffic", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    output: list[str] = []
    assert demo.stdout
    threading.Thread(target=lambda: output.extend(demo.stdout or []), daemon=True).start()
    deadline = started + 60
    while len(BOTH_SERVING.findall("".join(output))) < 2:
        if time.monotonic() > deadline or demo.poll() is not None:
            os.killpg(demo.pid, signal.SIGKILL)
            raise RuntimeError("the demo did not serve:\n" + "".join(output))
        time.sleep(0.05)
    serving = time.monotonic() - started
    time.sleep(2)
    interrupted = time.monotonic()
    os.killpg(demo.pid, signal.SIGINT)
    demo.wait(timeout=90)
    return serving, time.monotonic() - interrupted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    serving, stopping = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.rounds):
            up, down = one_round(workdir)
            serving.append(up)
            stopping.append(down)
            print(f"both replicas serving and registered {up:.2f}s after start; Ctrl-C -> exit {down:.2f}s", flush=True)
    print(f"median: serving after {statistics.median(serving):.2f}s, stopped after {statistics.median(stopping):.2f}s")


if __name__ == "__main__":
    main()

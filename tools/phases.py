"""Runs `make <phase>` for each phase given, in order, and prints how long each took: the table
`make test` ends with. Stops at the first phase that fails (the table says which), with its exit
status. Standard library only: it runs before the virtualenv exists.

    python3 tools/phases.py install-test test-rust test-python ...
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main(phases: list[str]) -> int:
    make = os.environ.get("MAKE", "make")
    rows: list[tuple[str, float, str]] = []
    status = 0
    started = time.monotonic()
    for phase in phases:
        began = time.monotonic()
        status = subprocess.call([make, "--no-print-directory", phase])
        rows.append((phase, time.monotonic() - began, "ok" if status == 0 else f"FAILED ({status})"))
        if status != 0:
            break
    skipped = phases[len(rows) :]
    total = time.monotonic() - started
    width = max(len(phase) for phase in phases)
    print(f"\n{'phase':<{width}}  {'time':>8}  result", flush=True)
    for phase, seconds, result in rows:
        print(f"{phase:<{width}}  {minutes(seconds):>8}  {result}")
    for phase in skipped:
        print(f"{phase:<{width}}  {'':>8}  not run")
    print(f"{'total':<{width}}  {minutes(total):>8}", flush=True)
    return status


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

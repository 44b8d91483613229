"""Entry point of the ``caddy-beacon`` command that ``pip install`` puts on PATH.

The companion is Rust (beacon-agent), linked into the native module so that one wheel carries
both halves. It runs detached from the interpreter; when it returns, the process exits at once
with its code: no Python runs after it (a signal that reached Python's own handler meanwhile
must not turn into a KeyboardInterrupt traceback).
"""

from __future__ import annotations

import os
import sys

from caddy_beacon._native import run_companion


def main() -> None:
    code = run_companion([os.path.basename(sys.argv[0]) or "caddy-beacon", *sys.argv[1:]])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

"""Entry point of the ``caddy-beacon`` command that ``pip install`` puts on PATH.

The companion is Rust (beacon-agent), linked into the native module so that one wheel carries
both halves. It runs detached from the interpreter; when it returns, the process exits at once
with its code, and no Python runs after it.
"""

from __future__ import annotations

import os
import signal
import sys

from caddy_beacon._native import run_companion


def main() -> None:
    # The companion handles SIGINT itself (deregister, drain, pass it on); Python's own handler
    # would turn the same signal into a KeyboardInterrupt once the companion returns.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = run_companion([os.path.basename(sys.argv[0]) or "caddy-beacon", *sys.argv[1:]])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

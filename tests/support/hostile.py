"""Clients that try to hold a probe server up, and the probes that must get through anyway.

Shared by the tests (tests/test_probe_servers.py) and the benchmark (bench/probes.py). Every
client here talks to 127.0.0.1 only, and stops by itself: at `close()`, or when its time runs out.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from dataclasses import dataclass, field


class IdleConnections:
    """`count` TCP connections that are opened and then never send a byte."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            try:
                self.sockets.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break  # the server's backlog is full: what is open already makes the point

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


class Tricklers:
    """`clients` connections that each send a request head one byte every `interval` seconds, and
    start over on a fresh connection when the server closes theirs (a slowloris)."""

    HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: trickle\r\n\r\n"

    def __init__(self, port: int, clients: int = 5, interval: float = 0.5, max_seconds: float = 120) -> None:
        self.port, self.interval = port, interval
        self.deadline = time.monotonic() + max_seconds
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    for byte in self.HEAD:
                        if self.stop_event.wait(self.interval) or time.monotonic() > self.deadline:
                            return
                        sock.sendall(bytes([byte]))
            except OSError:
                pass
            self.stop_event.wait(0.05)

    def close(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=5)


@dataclass
class ProbeRun:
    """What a series of probes saw."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(1 for status in self.statuses if status == 200)

    def quantile(self, q: float) -> float:
        """A latency quantile in seconds over every probe; a probe that failed counts as its
        timeout (so failures pull p99 up instead of vanishing from it)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        return (
            f"{self.answered}/{len(self.latencies)} answered 200, p50 {self.quantile(0.5) * 1000:.1f} ms, "
            f"p99 {self.quantile(0.99) * 1000:.1f} ms, median {statistics.median(self.latencies) * 1000:.1f} ms"
            + (f", errors: {sorted(set(self.errors))[:3]}" if self.errors else "")
        )


def probe(port: int, path: str = "/health", count: int = 30, timeout: float = 1.0, pause: float = 0.1) -> ProbeRun:
    """`count` probes like a kubelet's: a fresh connection each, `timeout` for the whole answer."""
    run = ProbeRun()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n".encode()
    for _ in range(count):
        started = time.monotonic()
        try:
            status = _one_request(port, request, started + timeout)
            run.statuses.append(status)
        except (OSError, ValueError) as error:
            run.errors.append(type(error).__name__)
            run.statuses.append(0)
        run.latencies.append(time.monotonic() - started)
        time.sleep(pause)
    return run


def _one_request(port: int, request: bytes, deadline: float) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=max(0.01, deadline - time.monotonic())) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                raise ValueError("closed without an answer")
            answer += chunk
        return int(answer.split(b" ", 2)[1])


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends `data` on a fresh connection and returns everything the server sent back until it
    closed the connection or went quiet for `timeout` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may close while a huge request is still being sent: read its answer
        answer = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
        return answer


def process_stats(pid: int) -> tuple[int, int]:
    """(resident memory in bytes, number of threads) of `pid`, from /proc."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads

"""Bounded load through Caddy for the companion tests and benchmarks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx

from tests.support.h2_client import H2Connection, NotProcessed


class Load:
    """Bounded traffic through Caddy from several threads, GETs and POSTs, every failure
    (transport error or unexpected answer) recorded.

    Over HTTPS it speaks HTTP/2 like a browser (tests.h2_client: a request is sent again only
    when the protocol says the server did not process it); over plain HTTP it uses httpx with
    HTTP/1.1 (a fresh connection per request unless `keepalive`) and never retries.

    It is bounded in requests and time, and must outlast the `with` block that uses it: a load
    that ran out before the test let it go (its caps too low for a slow machine, or for a fast
    one) fails the block, since the test then went on measuring nothing."""

    def __init__(
        self,
        base_url: str,
        threads: int = 4,
        max_requests: int = 1_000_000,
        max_seconds: float = 180,
        keepalive: bool = False,
    ) -> None:
        self.base_url, self.max_requests, self.deadline = base_url, max_requests, time.monotonic() + max_seconds
        self.keepalive = keepalive
        self.stop_event = threading.Event()
        self.ran_out = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.resent = 0
        self.failures: list[str] = []
        self.pids: set[int] = set()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        ran_out = self.ran_out.is_set()
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)
        if ran_out and exc_type is None:
            raise AssertionError(
                f"the load ran out ({self.total()} requests) before the test was done with it: raise its bounds"
            )

    def _requests(self) -> Iterator[tuple[str, str, bytes, Callable[[int, bytes], bool]]]:
        n = 0
        while not self.stop_event.is_set():
            with self.lock:
                if self.ok + len(self.failures) >= self.max_requests or time.monotonic() >= self.deadline:
                    self.ran_out.set()
                    return
            n += 1
            if n % 3 == 0:
                yield (
                    "POST",
                    "/items",
                    b"{}",
                    lambda status, body: status == 200 and json.loads(body) == {"created": "yes"},
                )
            elif n % 3 == 1:
                yield "GET", f"/items/{n}", b"", lambda status, body, n=n: status == 200 and json.loads(body)["id"] == n
            else:
                yield "GET", "/whoami", b"", self._note_pid

    def _note_pid(self, status: int, body: bytes) -> bool:
        if status != 200:
            return False
        with self.lock:
            self.pids.add(json.loads(body)["pid"])
        return True

    def _record(self, good: bool, detail: str) -> None:
        with self.lock:
            if good:
                self.ok += 1
            else:
                self.failures.append(f"{time.time():.3f} {detail}")

    def _run(self) -> None:
        if self.base_url.startswith("https://"):
            self._run_h2()
            return
        limits = httpx.Limits(max_keepalive_connections=1 if self.keepalive else 0)
        with httpx.Client(base_url=self.base_url, timeout=10, limits=limits) as client:
            for method, path, body, check in self._requests():
                try:
                    response = client.request(method, path, content=body or None)
                    self._record(
                        check(response.status_code, response.content),
                        f"{method} {path} -> {response.status_code} {response.text[:100]}",
                    )
                except httpx.HTTPError as error:
                    self._record(False, f"{method} {path}: {type(error).__name__}: {error}")

    def _run_h2(self) -> None:
        host, port = self.base_url.removeprefix("https://").rsplit(":", 1)
        connection: H2Connection | None = None
        for method, path, body, check in self._requests():
            for attempt in range(5):
                try:
                    if connection is None or not connection.usable:
                        if connection:
                            connection.close()
                        connection = H2Connection(host, int(port))
                    status, answer = connection.request(method, path, body)
                    self._record(check(status, answer), f"{method} {path} -> {status} {answer[:100]!r}")
                    break
                except NotProcessed as why:
                    connection = None
                    with self.lock:
                        self.resent += 1
                    if attempt == 4:
                        self._record(False, f"{method} {path}: not processed 5 times: {why}")
                except (ConnectionError, OSError) as error:
                    connection = None
                    self._record(False, f"{method} {path}: {error}")
                    break
        if connection:
            connection.close()

    def total(self) -> int:
        with self.lock:
            return self.ok + len(self.failures)

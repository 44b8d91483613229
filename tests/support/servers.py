"""The test app under real uvicorn, gunicorn, hypercorn and granian processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
APP = "tests.apps.main:app"


@dataclass
class Server:
    """A running server process and what it printed."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=10.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.client.get(path, **kwargs)  # type: ignore[arg-type]

    def fresh_get(self, path: str, **kwargs: object) -> httpx.Response:
        """A request on a new connection: uvicorn closes a connection whose request raised, so
        requests that end in an unhandled exception must not share one."""
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            return client.get(path, **kwargs)  # type: ignore[arg-type]

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of a scrape, parsed by prometheus_client's own parser."""
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        return [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample with this name and (at least) these labels."""
        found = [v for n, got, v in self.metrics() if n == name and all(got.get(k) == w for k, w in labels.items())]
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
        return found[0] if found else None

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Stops the server, then kills whatever is left of its process group (gunicorn
        workers outlive a master that was killed), so no test leaves a process behind."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return int(self.process.returncode)


def launch(
    tmp_path: Path,
    *,
    server: str = "uvicorn",
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    app: str = APP,
) -> Server:
    port = free_port()
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        if workers > 1:
            command += ["--workers", str(workers)]
    elif server == "gunicorn":
        command = [
            sys.executable, "-m", "gunicorn", app,
            "--worker-class", "uvicorn.workers.UvicornWorker",
            "--workers", str(workers),
            "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "20",
        ]  # fmt: skip
    elif server in ("hypercorn", "hypercorn-trio"):
        # asyncio, or trio (`-k trio`): the same app on either backend.
        worker_class = "trio" if server == "hypercorn-trio" else "asyncio"
        command = [
            sys.executable,
            "-m",
            "hypercorn",
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "-k",
            worker_class,
            "--workers",
            str(workers),
        ]
    elif server in ("granian", "granian-asyncio"):
        # Its default loop (uvloop when installed), or asyncio's own.
        loop = ["--loop", "asyncio"] if server == "granian-asyncio" else []
        command = [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *loop,
            app,
        ]
    else:
        raise ValueError(server)
    command += list(args)
    log_path = tmp_path / f"{server}-{port}.log"
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        # Tests stop servers with SIGTERM; only the draining tests want the drain window.
        "BEACON_DRAIN_SECONDS": "0",
        **(env or {}),
    }
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Server(process, f"http://127.0.0.1:{port}", log_path)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited with {process.returncode}:\n{running.log()}")
        try:
            return running.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    if not wait_until(healthy, timeout=30):
        running.stop(signal.SIGKILL)
        raise RuntimeError(f"{server} did not become healthy:\n{running.log()}")
    return running

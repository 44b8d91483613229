"""Many workers, one truth: metrics shared by every worker process of an instance, the side
port served by one of them without the GIL, and the event-loop watchdog.

All against real gunicorn (uvicorn workers) and `uvicorn --workers` processes."""

from __future__ import annotations

import concurrent.futures
import glob
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.servers import Server
from tests.support.waiting import wait_until

ROUTE = {"http_request_method": "GET", "http_route": "/items/{item_id}", "http_response_status_code": "200"}
COUNT = "http_server_request_duration_seconds_count"


def shared_files(*owners: int) -> set[str]:
    """The shared metrics regions in /dev/shm of the instances whose main process is one of
    `owners` (they are named `<uid>-<pid>-<start>`): other tests, in other pytest-xdist
    workers, start instances of their own at the same time."""
    return {path for path in glob.glob("/dev/shm/caddy-beacon-*") if int(path.split("-")[-2]) in owners}


def fire(server: Server, requests: int, path: str = "/items/1") -> set[int]:
    """`requests` GETs on fresh connections (so the kernel spreads them over the workers);
    returns the pids that answered /whoami along the way."""
    pids, answered = fire_counting(server, requests, path)
    assert answered == requests
    return pids


def fire_counting(server: Server, requests: int, path: str = "/items/1") -> tuple[set[int], int]:
    """Like `fire`, but a connection a recycled worker closes unanswered is not an error:
    returns (pids, requests answered 200). uvicorn closes such connections before reading the
    request, so they are not counted by the app either."""

    def one(i: int) -> tuple[int | None, bool]:
        with httpx.Client(timeout=10) as client:
            try:
                ok = client.get(f"{server.base_url}{path}").status_code == 200
            except (httpx.RemoteProtocolError, httpx.ReadError):
                return None, False
            try:
                pid = client.get(f"{server.base_url}/whoami").json()["pid"] if i % 5 == 0 else None
            except (httpx.RemoteProtocolError, httpx.ReadError):
                pid = None
            return pid, ok

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(requests)))
    return {pid for pid, _ in results if pid is not None}, sum(ok for _, ok in results)


def scrape(server: Server) -> str:
    """One /metrics scrape on a new connection. With gunicorn's --max-requests the scrapes
    themselves recycle workers, and a worker that is shutting down closes a connection it
    accepted without reading it ("Server disconnected without sending a response"): that scrape
    never reached the app, so it is made again on another connection, at most 5 times. Any other
    failure (an answer cut short, a status other than 200) fails the test."""
    for attempt in range(5):
        try:
            response = server.fresh_get("/metrics")
        except httpx.RemoteProtocolError as error:
            if "without sending a response" not in str(error) or attempt == 4:
                raise
            continue
        assert response.status_code == 200, response.text
        return response.text
    raise AssertionError("unreachable")


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample with this name and these labels in a scrape."""
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def counts(server: Server, scrapes: int = 20) -> list[float | None]:
    return [sample(scrape(server), COUNT, **ROUTE) for _ in range(scrapes)]


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_every_scrape_reports_the_total_of_all_workers(start: Callable[..., Server], kind: str) -> None:
    server = start(server=kind, workers=3)
    pids = fire(server, 300)
    assert len(pids) >= 2, f"the load reached only {pids}: nothing to share"
    # Fresh connections land on different workers; each answers with the instance's total.
    assert counts(server) == [300.0] * 20
    text = server.fresh_get("/metrics").text
    # Process metrics: one series per live worker, labelled with its pid.
    assert len([line for line in text.splitlines() if line.startswith("process_cpu_seconds_total{pid=")]) == 3
    assert 'http_server_active_requests{http_request_method="GET"} 0' in text


def test_a_killed_worker_takes_nothing_away(start: Callable[..., Server]) -> None:
    server = start(server="gunicorn", workers=3)
    fire(server, 150)
    assert counts(server, 5) == [150.0] * 5
    victim = next(pid for pid in fire(server, 10) if pid != server.process.pid)
    os.kill(victim, signal.SIGKILL)
    # gunicorn replaces it; the new worker joins the same numbers.
    assert wait_until(lambda: victim not in fire(server, 10), timeout=20)
    total = sample(scrape(server), COUNT, **ROUTE)
    assert total is not None and total >= 170
    fire(server, 100)
    assert counts(server, 10) == [total + 100] * 10


@pytest.mark.parametrize("preload", [False, True], ids=["imported-per-worker", "preload"])
def test_recycled_workers_keep_totals_exact_and_nothing_piles_up(start: Callable[..., Server], preload: bool) -> None:
    server = start(server="gunicorn", workers=2, args=("--max-requests", "40", *(["--preload"] if preload else [])))
    mine = shared_files(server.process.pid)
    assert len(mine) == 1, "one shared file per instance"
    size = os.path.getsize(next(iter(mine)))
    answered, workers = 0, set()
    for _ in range(5):
        pids, ok = fire_counting(server, 100)  # every worker is replaced several times over
        answered, workers = answered + ok, workers | pids
    assert answered >= 450
    assert counts(server, 10) == [float(answered)] * 10
    # No worker, first or replacement, made a region of its own.
    assert shared_files(server.process.pid, *workers) == mine
    assert os.path.getsize(next(iter(mine))) == size

    last: list[str] = []

    def settled() -> bool:
        # Once the last replacement has finished: one series per live worker, nothing in flight.
        text = scrape(server)
        workers = [line for line in text.splitlines() if line.startswith("process_cpu_seconds_total{pid=")]
        active = [line for line in text.splitlines() if line.startswith("http_server_active_requests{")]
        last[:] = workers + active
        return len(workers) == 2 and 'http_server_active_requests{http_request_method="GET"} 0' in text

    # 30 s: a worker recycled by the last round may still be finishing its shutdown on a loaded
    # machine; a gauge left raised would stay raised however long this waits.
    assert wait_until(settled, timeout=30), f"not settled after 30 s: {last}"


def test_preloaded_workers_share_too(start: Callable[..., Server]) -> None:
    server = start(server="gunicorn", workers=3, args=("--preload",))
    assert len(fire(server, 200)) >= 2
    assert counts(server, 10) == [200.0] * 10


def test_a_stopped_instance_leaves_no_file_behind(start: Callable[..., Server]) -> None:
    server = start(server="gunicorn", workers=2)
    (mine,) = shared_files(server.process.pid)
    server.stop()
    # The next instance to start removes what dead instances left.
    start(server="gunicorn", workers=2)
    assert mine not in shared_files()


def test_side_port_answers_while_the_event_loop_is_blocked(start: Callable[..., Server]) -> None:
    side = free_port()
    server = start(env={"BEACON_SIDE_PORT": str(side), "BEACON_STALL_SECONDS": "1"})
    probe = httpx.Client(base_url=f"http://127.0.0.1:{side}", timeout=5)
    assert probe.get("/health").json() == {"status": "pass"}
    assert probe.get("/ready").status_code == 200
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        blocked = pool.submit(httpx.get, f"{server.base_url}/block/3", timeout=20)
        time.sleep(0.3)
        started = time.monotonic()
        answer = probe.get("/health")
        assert time.monotonic() - started < 0.1, "the side port waited for the event loop"
        assert answer.status_code == 200  # not stalled long enough yet
        # Past the 1 s threshold: liveness fails, and says why.
        assert wait_until(lambda: probe.get("/health").status_code == 503, timeout=3)
        assert "stalled" in probe.get("/health").json()["output"]
        metrics = probe.get("/metrics").text
        assert blocked.result().status_code == 200
    assert wait_until(lambda: probe.get("/health").status_code == 200, timeout=3)
    # While it lasted, the live gauge said how late the loop was.
    assert f'beacon_event_loop_stall_seconds{{pid="{server.process.pid}"}}' in metrics
    stalled = [
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("beacon_event_loop_stall_seconds{")
    ]
    assert stalled and stalled[0] >= 0.8, metrics


def lag_histogram(server: Server) -> dict[str, float]:
    """The `beacon_event_loop_lag_seconds` buckets (by `le`), plus `sum` and `count`."""
    found: dict[str, float] = {}
    for name, labels, value in server.metrics():
        if name == "beacon_event_loop_lag_seconds_bucket":
            found[labels["le"]] = value
        elif name in ("beacon_event_loop_lag_seconds_sum", "beacon_event_loop_lag_seconds_count"):
            found[name.rsplit("_", 1)[1]] = value
    return found


def test_a_stall_between_two_scrapes_shows_in_the_next_one(start: Callable[..., Server]) -> None:
    server = start()
    assert wait_until(lambda: lag_histogram(server).get("count", 0) > 0, timeout=5)
    before = lag_histogram(server)
    # The loop is blocked for 4 s and has recovered by the next scrape: a gauge would read
    # about 0 again; the histogram keeps the late heartbeat.
    assert server.fresh_get("/block/4").status_code == 200
    time.sleep(0.5)
    after = lag_histogram(server)

    def between_2_5_and_5(histogram: dict[str, float]) -> float:
        return histogram["5"] - histogram["2.5"]  # buckets are cumulative

    assert between_2_5_and_5(after) - between_2_5_and_5(before) >= 1, (before, after)
    assert after["sum"] - before["sum"] >= 3.5, (before, after)
    assert after["count"] > before["count"]


def test_one_side_port_per_instance_with_takeover(start: Callable[..., Server]) -> None:
    side = free_port()
    server = start(server="gunicorn", workers=3, env={"BEACON_SIDE_PORT": str(side)})
    fire(server, 90)
    probe = httpx.Client(base_url=f"http://127.0.0.1:{side}", timeout=5)
    assert 'http_route="/items/{item_id}",http_response_status_code="200"} 90' in probe.get("/metrics").text
    serving = listeners_of(side)
    assert len(serving) == 1, f"one worker serves the side port, not {serving}"
    (serving_pid,) = serving
    assert serving_pid != server.process.pid, "a worker serves it, not the master"
    os.kill(serving_pid, signal.SIGKILL)
    # Another worker takes the port over within about a second.
    assert wait_until(lambda: _answers(probe), timeout=10)
    fire(server, 10)
    assert 'http_route="/items/{item_id}",http_response_status_code="200"} 100' in probe.get("/metrics").text


def listeners_of(port: int) -> set[int]:
    """Pids of the processes holding a listening socket on 127.0.0.1:`port` (from /proc)."""
    with open("/proc/net/tcp") as table:
        inodes = {
            fields[9]
            for fields in (line.split() for line in table.readlines()[1:])
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A"
        }
    pids = set()
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            pids.add(int(fd.split("/")[2]))
    return pids


def _answers(probe: httpx.Client) -> bool:
    try:
        return probe.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def test_the_side_port_binds_localhost_by_default(start: Callable[..., Server], tmp_path: Path) -> None:
    side = free_port()
    start(env={"BEACON_SIDE_PORT": str(side)})
    with open("/proc/net/tcp") as table:
        listening = [line.split()[1] for line in table.readlines()[1:] if line.split()[3] == "0A"]
    assert f"0100007F:{side:04X}" in listening

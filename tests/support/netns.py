"""Test hosts of our own: a network namespace for the test (its thread, and every process it
starts from then on), and a hosts file for one process. Nothing here touches the machine's
own network or its /etc/hosts. Needs root (CAP_SYS_ADMIN), as `make test` runs here."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

CLONE_NEWNET = 0x40000000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def network_namespace(addresses: Sequence[str] = (), local_routes: Sequence[str] = ()) -> Iterator[None]:
    """Moves this thread (pytest's main one, and so every process and thread it starts from
    now on) into a new network namespace with loopback up, `addresses` (CIDRs) on it as this
    test host's own (interface addresses, as a pod's are), and `local_routes` answered locally
    the way 127.0.0.0/8 is; moves it back afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            pytest.fail(f"cannot create a network namespace ({os.strerror(errno)}): these tests need root")
        try:
            ip("link", "set", "lo", "up")
            for address in addresses:
                ip("addr", "add", address, "dev", "lo")
            for route in local_routes:
                ip("route", "add", "local", route, "dev", "lo", "table", "local")
            yield
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")
    finally:
        os.close(original)


def with_hosts_file(hosts: Path) -> list[str]:
    """A command prefix that runs a program with `hosts` as its /etc/hosts (bind-mounted in a
    mount namespace of its own). Write the file in place to change what a name resolves to."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /etc/hosts && exec "$@"',
        str(hosts),
    ]


@contextmanager
def peer_host(name: str, link: tuple[str, str], addresses: Sequence[str] = ()) -> Iterator[str]:
    """Another host beside the current network namespace: a named namespace `name` joined to
    this one by a veth pair, this side at link[0]/24 and the peer at link[1]/24, with
    `addresses` (/32s) on the peer too, routed through it. Yields the name, for `ip netns exec`
    (run_on); everything is deleted afterwards."""
    ip("netns", "add", name)
    try:
        here, there = f"{name[:8]}-a", f"{name[:8]}-b"
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", name)
        ip("addr", "add", f"{link[0]}/24", "dev", here)
        ip("link", "set", here, "up")
        for command in (
            ["link", "set", "lo", "up"],
            ["addr", "add", f"{link[1]}/24", "dev", there],
            ["link", "set", there, "up"],
        ):
            ip("netns", "exec", name, "ip", *command)
        for address in addresses:
            ip("netns", "exec", name, "ip", "addr", "add", f"{address}/32", "dev", "lo")
            ip("route", "add", f"{address}/32", "via", link[1])
        yield name
    finally:
        ip("netns", "del", name)


def run_on(host: str, command: Sequence[str]) -> list[str]:
    """`command` run on the peer host `host` (see peer_host)."""
    return ["ip", "netns", "exec", host, *command]

"""Caddy sites and admin reads the end-to-end tests share: the stock proxy the companion joins
through config edits, the module's pool, and what Caddy reports about them."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.support.caddy import MODULE_CADDY, Caddies, Caddy
from tests.support.servers import ROOT


def caddyfile_proxy(mode: str = "stock") -> str:
    """The `reverse_proxy` block of the repository's Caddyfile (no static upstreams; health
    checks, zero-wait retries, transport), so these tests run what users copy. Its import of
    deploy/caddy/upstreams/<mode>.caddy is inlined: `stock` (config edits, Caddy's own checks)
    for the stock Caddy these tests run, or `module`; so is the transport's snippet."""
    block = re.search(r"^\treverse_proxy \{\n.*?^\t\}$", (ROOT / "Caddyfile").read_text(), re.M | re.S)
    assert block, "the Caddyfile has no top-level reverse_proxy block"
    snippet = (ROOT / "deploy" / "caddy" / "upstreams" / f"{mode}.caddy").read_text()
    inlined = "\n".join(f"\t\t{line}" if line else "" for line in snippet.splitlines())
    text, count = re.subn(
        r"^\t\timport deploy/caddy/upstreams/\S+\.caddy$", lambda _: inlined, block.group(0), flags=re.M
    )
    assert count == 1, "the Caddyfile's proxy no longer imports its upstream snippet"
    # The mode's transport imports the Caddyfile's (replica_transport) snippet: inlined too.
    transport = re.search(r"^\(replica_transport\) \{\n(.*?)^\}$", (ROOT / "Caddyfile").read_text(), re.M | re.S)
    assert transport, "the Caddyfile has no (replica_transport) snippet"
    body = "".join(f"\t\t{line}\n" if line else "\n" for line in transport.group(1).splitlines())
    text, count = re.subn(r"^\t\t\timport replica_transport\n", lambda _: body, text, flags=re.M)
    assert count == 1, "the mode's transport no longer imports (replica_transport)"
    return "\n" + text


# The proxy the companions join.
SITE = caddyfile_proxy()


PROXY = "/config/apps/http/servers/srv0/routes/0/handle/0/routes/0/handle/0"


def upstreams(caddy: Caddy) -> list[dict[str, str]]:
    """The entries of the joined proxy, as Caddy has them. Read again when the connection is cut:
    every config change replaces Caddy's admin server, and a read that meets the swap (a
    companion registering at that moment) can be reset (caddy-notes)."""
    for attempt in range(3):
        try:
            with caddy.admin_client() as client:
                return client.get(PROXY + "/upstreams").json() or []
        except httpx.TransportError:
            if attempt == 2:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


# The pool's proxy: the module's own checks every 500 ms (out after 2 failures, back after 1
# pass), zero-wait retries on another replica for dial errors, no stream_close_delay.
POOL_SITE = """
	reverse_proxy {
		dynamic beacon api {
			health_interval 500ms
			health_timeout 400ms
			health_fails 2
			health_passes 1
		}
		lb_policy least_conn
		lb_retries 3
		fail_duration 10s
		transport beacon {
			dial_timeout 2s
			keepalive 60s
		}
	}
"""


def pool(caddy: Caddy, name: str = "api") -> list[dict[str, Any]]:
    with caddy.admin_client() as client:
        return client.get("/beacon/pools").json()["pools"].get(name, {}).get("upstreams", [])  # type: ignore[no-any-return]


def config_etag(caddy: Caddy) -> str:
    with caddy.admin_client() as client:
        return client.get("/config/").headers["etag"]


def caddy_metric(caddy: Caddy, line_start: str) -> float:
    with caddy.admin_client() as client:
        text = client.get("/metrics").text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def pool_site(*options: str, lb_policy: str = "round_robin") -> str:
    lines = "".join(f"\t\t\t{option}\n" for option in ("health_interval 500ms", "health_timeout 400ms", *options))
    return f"""
	reverse_proxy {{
		dynamic beacon api {{
{lines}		}}
		lb_policy {lb_policy}
		lb_retries 2
		transport beacon
	}}
"""


def module_caddy(caddies: Caddies, *options: str, lb_policy: str = "round_robin") -> Caddy:
    if not MODULE_CADDY.exists():
        pytest.fail(f"{MODULE_CADDY} is missing: `make caddy` (make test does)")
    return caddies(pool_site(*options, lb_policy=lb_policy), module=True)

"""deploy/haproxy.cfg as shipped: HAProxy in front of two shardd "hosts".

Two ``shardd serve --proxy-protocol`` on loopback ports stand for two hosts;
HAProxy runs the deploy file unchanged, its addresses from the environment
variables the file names. Clients come from many loopback addresses.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from haproxy_peer import TIMEOUT, HAProxy, connect_from, free_port, read_addresses

DEPLOY_CONFIG = ROOT / "deploy" / "haproxy.cfg"
QUICK = ("--shell", "tests.shells_for_tests:addresses", "--connect-maxwait", "0.3")
SOURCES = [f"127.0.0.{n}" for n in range(10, 30)]


@pytest.fixture
def proxy_and_hosts(serve: Any, tmp_path: Path) -> Iterator[tuple[HAProxy, list[Any], int]]:
    hosts = [serve("--proxy-protocol", *QUICK) for _ in range(2)]
    front = free_port()
    env = {
        "SHARDD_LISTEN": f"127.0.0.1:{front}",
        "SHARDD_HOST1": f"127.0.0.1:{hosts[0].port}",
        "SHARDD_HOST2": f"127.0.0.1:{hosts[1].port}",
    }
    proxy = HAProxy(DEPLOY_CONFIG.read_text(), tmp_path, [front], env)
    try:
        yield proxy, hosts, front
    finally:
        proxy.stop()


def served_by(source: str, front: int) -> int:
    """The pid of the shardd host that serves a session from ``source``; it must
    see ``source`` as its peer."""
    with connect_from(source, front) as client:
        seen = read_addresses(client)
        assert seen["peername"] == [source, client.getsockname()[1]]
    return int(seen["pid"])


def test_sessions_spread_stick_and_fail_over(proxy_and_hosts: Any) -> None:
    proxy, hosts, front = proxy_and_hosts
    pids = [int(host.proc.pid) for host in hosts]
    placement = {source: served_by(source, front) for source in SOURCES}
    assert set(placement.values()) == set(pids), "sessions reach both hosts"
    for source in SOURCES[:6]:
        assert served_by(source, front) == placement[source], "one source, one host"
    # the health checks (a PROXY v2 LOCAL header, then telnet negotiation
    # expected back) pass on both
    assert "is DOWN" not in proxy.log_text()

    # the first host dies: the health check marks it down, and its clients
    # go to the other; the other's stay where they are
    hosts[0].proc.kill()
    hosts[0].proc.wait(TIMEOUT)
    proxy.wait_for_log(r"Server shardd/host1 is DOWN", timeout=20)
    for source, pid in placement.items():
        assert served_by(source, front) == pids[1], (source, pid)
    assert "host2 is DOWN" not in proxy.log_text()


def test_the_deploy_file_is_valid_as_shipped() -> None:
    """``haproxy -c`` accepts it with its defaults (no environment)."""
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(DEPLOY_CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr

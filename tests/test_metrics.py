"""``shardd serve --metrics``: a live server scraped over HTTP, checked by promtool.

Every test runs a real supervised ``shardd serve`` with ``--metrics`` on
loopback, opens sessions with plain sockets, scrapes ``/metrics`` with
urllib, parses it with prometheus_client's parser and checks the figures
against what the clients did. ``promtool check metrics`` (Debian's
``prometheus`` package) lints the exposition. Every wait has a deadline.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from conftest import ServerProcess, read_until, run_shardd, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_tls import make_cert, tls_port

from shardd import control
from shardd.metrics_http import MAX_CONNECTIONS, READ_TIMEOUT

HOST = "127.0.0.1"
_METRICS_AT = re.compile(r"metrics on http://(\S+):(\d+)/metrics")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class MetricsServer:
    """A supervised server with ``--metrics``, and where to scrape it."""

    def __init__(self, *args: str, address_limits: bool = False, metrics: str = "127.0.0.1:0"):
        self.server = ServerProcess(
            "--workers", "2", "--metrics", metrics, *args, address_limits=address_limits
        )
        match = self.server.wait_for_log(_METRICS_AT)
        self.host, self.metrics_port = match.group(1), int(match.group(2))
        self.port = self.server.port
        self.url = f"http://{self.host}:{self.metrics_port}/metrics"

    def body(self) -> bytes:
        with urllib.request.urlopen(self.url, timeout=10) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            data: bytes = reply.read()
            assert len(data) == int(reply.headers["Content-Length"])
            return data

    def scrape(self) -> Samples:
        return parse(self.body())

    def worker_pids(self) -> dict[int, int]:
        reply = control.status(control.default_path(self.port), timeout=10)
        return {w["shard"]: w["pid"] for w in reply["workers"] if w["state"] == "serving"}


def parse(body: bytes) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def counters_of(samples: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples that must never decrease: counters and histogram series."""
    monotonic = ("_total", "_bucket", "_count", "_sum")
    return {k: v for k, v in samples.items() if k[0].endswith(monotonic)}


def promtool(body: bytes) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert result.returncode == 0 and not result.stdout and not result.stderr, result


@pytest.fixture
def metrics_server() -> Iterator[Any]:
    started: list[MetricsServer] = []

    def start(*args: str, **options: Any) -> MetricsServer:
        server = MetricsServer(*args, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.server.proc.poll() is None:
            server.server.stop()


def http(port: int, request: bytes, host: str = HOST) -> bytes:
    """Send ``request`` raw, return everything the server answers until it closes."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
        return bytes(got)


# ---------------------------------------------------------------- the figures


def test_scrape_counts_sessions_bytes_and_durations(metrics_server: Any) -> None:
    # --stats-interval 0: workers report only when asked, so every figure
    # below comes from the reports a scrape asks for
    srv = metrics_server("--shell", "echo", "--stats-interval", "0")
    before = srv.scrape()
    assert total(before, "shardd_up") == 1
    assert total(before, "shardd_workers") == 2
    assert total(before, "shardd_sessions_total") == 0
    clients = [socket.create_connection((HOST, srv.port), timeout=10) for _ in range(5)]
    sent = 0
    for i, client in enumerate(clients):
        read_until(client, b"\xff\xfd\x18", bytearray())  # served: DO TTYPE
        payload = b"x" * (100 + i)
        client.sendall(payload)
        sent += len(payload)

    def settled(current: int, closed: int) -> Samples | None:
        s = srv.scrape()
        ok = (
            total(s, "shardd_sessions_current") == current
            and total(s, "shardd_sessions_total") == 5
            and total(s, "shardd_bytes_in_total") == sent
            and total(s, "shardd_session_duration_seconds_count") == closed
        )
        return s if ok else None

    live = wait_until(lambda: settled(5, 0), what="5 sessions and their bytes")
    assert isinstance(live, dict)
    # each shard's figures add up to the whole, and both shards are there
    shards = {dict(lab)["shard"] for (n, lab) in live if n == "shardd_sessions_current"}
    assert shards == {"0", "1"}
    assert total(live, "shardd_bytes_out_total") >= 5 * 3  # DO TTYPE at least

    for client in clients[:3]:
        client.close()
    after = wait_until(lambda: settled(2, 3), what="3 sessions closed")
    assert isinstance(after, dict)
    assert total(after, "shardd_session_duration_seconds_bucket", le="60.0") == 3
    assert total(after, "shardd_session_duration_seconds_bucket", le="+Inf") == 3
    assert 0 < total(after, "shardd_session_duration_seconds_sum") < 3 * 60
    assert total(after, "shardd_bytes_out_total") >= total(live, "shardd_bytes_out_total")
    assert total(after, "shardd_accept_queue", listener="plain") == 0
    assert total(after, "shardd_worker_resident_memory_bytes") > 0
    promtool(srv.body())

    # the workers did not inherit the metrics socket
    for pid in srv.worker_pids().values():
        ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.laddr}
        assert srv.metrics_port not in ports
    for client in clients[3:]:
        client.close()


def test_refusals_by_reason(metrics_server: Any) -> None:
    srv = metrics_server(
        "--max-sessions-per-ip", "2", "--max-connect-rate-per-ip", "0", address_limits=True
    )
    clients = [socket.create_connection((HOST, srv.port), timeout=10) for _ in range(5)]
    refused = 0
    for client in clients:
        client.settimeout(10)
        first = client.recv(4096)  # DO TTYPE if served, else the refusal line
        if b"Too many sessions from your address" in first:
            refused += 1
    assert refused >= 3  # the shared counts may overcount an address, never under

    def counted() -> Samples | None:
        s = srv.scrape()
        return (
            s if total(s, "shardd_connections_refused_total", reason="per_ip") == refused else None
        )

    samples = wait_until(counted, what="refusals counted")
    assert isinstance(samples, dict)
    assert total(samples, "shardd_connections_refused_total") == refused
    promtool(srv.body())
    for client in clients:
        client.close()


def test_counters_never_decrease_across_a_worker_kill(metrics_server: Any) -> None:
    srv = metrics_server("--shell", "echo")
    clients = []
    for _ in range(6):
        client = socket.create_connection((HOST, srv.port), timeout=10)
        read_until(client, b"\xff\xfd\x18", bytearray())
        client.sendall(b"y" * 50)
        clients.append(client)
    for client in clients[:2]:
        client.close()

    def reported() -> Samples | None:
        s = srv.scrape()
        done = (
            total(s, "shardd_bytes_in_total") == 300
            and total(s, "shardd_session_duration_seconds_count") == 2
        )
        return s if done else None

    first = wait_until(reported, what="bytes and closes reported")
    assert isinstance(first, dict)
    old = wait_until(lambda: len(p := srv.worker_pids()) == 2 and p, what="2 workers serving")
    assert isinstance(old, dict)
    victim = old[0]
    lost = total(first, "shardd_sessions_current", shard="0")
    assert total(first, "shardd_worker_restarts_total", shard="0") == 0
    previous = counters_of(first)
    shard_bytes = total(first, "shardd_bytes_in_total", shard="0")
    psutil.Process(victim).send_signal(signal.SIGKILL)

    def replaced() -> bool:
        nonlocal previous
        s = srv.scrape()
        now = counters_of(s)
        for key, value in previous.items():
            assert now.get(key, 0) >= value, (key, value, now.get(key))
        previous = now
        pids = srv.worker_pids()
        return total(s, "shardd_worker_restarts_total", shard="0") == 1 and pids.get(0) not in (
            None,
            victim,
        )

    wait_until(replaced, what="shard 0's worker replaced")
    last = srv.scrape()
    # the dead worker's sessions are gone; what they moved is still counted
    assert total(last, "shardd_bytes_in_total", shard="0") == shard_bytes
    assert total(last, "shardd_bytes_in_total") == 300
    assert total(last, "shardd_sessions_total") == 6
    assert total(last, "shardd_sessions_current") == 4 - lost
    promtool(srv.body())
    for client in clients[2:]:
        client.close()


def test_counters_survive_a_shard_removed_and_added_again(metrics_server: Any) -> None:
    srv = metrics_server()
    pids = wait_until(lambda: len(p := srv.worker_pids()) == 2 and p, what="2 workers serving")
    assert isinstance(pids, dict)
    psutil.Process(pids[1]).send_signal(signal.SIGKILL)
    wait_until(
        lambda: (
            total(srv.scrape(), "shardd_worker_restarts_total", shard="1") == 1
            and 1 in srv.worker_pids()
        ),
        what="shard 1's worker replaced",
    )
    seen = [counters_of(srv.scrape())]

    def scrape_when(workers: int) -> bool:
        s = srv.scrape()
        seen.append(counters_of(s))
        return total(s, "shardd_workers") == workers

    assert run_shardd("workers", "-1", "--port", str(srv.port)).returncode == 0
    wait_until(lambda: scrape_when(1), what="one shard")
    assert run_shardd("workers", "+1", "--port", str(srv.port)).returncode == 0
    wait_until(lambda: scrape_when(2), what="two shards again")
    for earlier, later in itertools.pairwise(seen):
        for key, value in earlier.items():
            assert later.get(key, 0) >= value, (key, value, later.get(key))
    assert seen[-1][("shardd_worker_restarts_total", frozenset({("shard", "1")}))] == 1


def test_tls_listeners_and_failed_handshakes(metrics_server: Any, tmp_path: Any) -> None:
    cert = make_cert(tmp_path, "metrics")
    srv = metrics_server(
        "--tls-port", "0", "--certfile", str(cert.certfile), "--keyfile", str(cert.keyfile)
    )
    with socket.create_connection((HOST, tls_port(srv.server)), timeout=10) as sock:
        sock.sendall(b"this is not TLS\r\n" * 4)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass  # reset: what a failed handshake may end with

    def counted() -> Samples | None:
        s = srv.scrape()
        return s if total(s, "shardd_tls_handshake_failures_total", reason="error") == 1 else None

    samples = wait_until(counted, what="the failed handshake counted")
    assert isinstance(samples, dict)
    queues = {
        (dict(lab)["shard"], dict(lab)["listener"])
        for (name, lab) in samples
        if name == "shardd_accept_queue"
    }
    assert queues == {("0", "plain"), ("1", "plain"), ("0", "tls"), ("1", "tls")}
    promtool(srv.body())


# -------------------------------------------------------------- the endpoint


def test_what_the_endpoint_answers(metrics_server: Any) -> None:
    srv = metrics_server()
    port = srv.metrics_port
    head = http(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: " in head and b"Connection: close" in head
    assert http(port, b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    post = http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in post
    assert http(port, b"\x00\xff garbage \x16\x03\r\n").startswith(b"HTTP/1.1 400 ")
    big = b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n"
    assert http(port, big).startswith(b"HTTP/1.1 431 ")
    # a request sent a byte at a time is still one request
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in b"GET /metrics HTTP/1.0\r\n\r\n":
            sock.send(bytes([byte]))
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 200 OK") and b"shardd_up 1.0" in got
    assert srv.scrape()


def test_hostile_clients_leave_the_supervisor_serving(metrics_server: Any) -> None:
    srv = metrics_server()
    port = srv.metrics_port
    # a client that never finishes its request holds a connection until READ_TIMEOUT
    slow = socket.create_connection((HOST, port), timeout=READ_TIMEOUT + 10)
    slow.sendall(b"GET /met")
    began = time.monotonic()
    assert srv.scrape()  # meanwhile others are answered
    # more connections than allowed: the surplus is refused with a 503 at once
    idle = [socket.create_connection((HOST, port), timeout=10) for _ in range(MAX_CONNECTIONS + 8)]
    refused = 0
    for sock in idle:
        sock.settimeout(0.5)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue  # held: one of the MAX_CONNECTIONS
        if data.startswith(b"HTTP/1.1 503 "):
            refused += 1
    assert refused == 9  # 16 allowed, the slow client holds one of them
    for sock in idle:
        sock.close()
    wait_until(lambda: _scrape_ok(srv), what="a scrape once the idle clients left")
    # garbage of every kind, many times: answered, nothing breaks, the log stays short
    for _ in range(50):
        assert http(port, b"\xde\xad\xbe\xef\r\n").startswith(b"HTTP/1.1 400 ")
    assert slow.recv(4096) == b""  # closed by the server, past its deadline
    assert READ_TIMEOUT - 1 <= time.monotonic() - began <= READ_TIMEOUT + 5
    slow.close()
    assert srv.scrape()
    # what was held back is summed up once the window is over, with no event loop
    srv.server.wait_for_log(r"127\.0\.0\.1: \d+ more warnings about this peer", timeout=15)
    lines = [line for line in srv.server.log_text().splitlines() if "metrics: 127.0.0.1" in line]
    assert len(lines) <= 10, lines  # 5 a window per address
    assert srv.server.proc.poll() is None


def _scrape_ok(srv: MetricsServer) -> bool:
    try:
        return bool(srv.scrape())
    except urllib.error.HTTPError:
        return False


def test_ipv6(metrics_server: Any) -> None:
    srv = metrics_server(metrics="[::1]:0")
    assert srv.host == "[::1]"
    assert total(srv.scrape(), "shardd_up") == 1


# --------------------------------------------------------------- the setting


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("9100", "must be HOST:PORT"),
        ("127.0.0.1:", "port number"),
        ("127.0.0.1:70000", "between 0 and 65535"),
        ("::1:9100", "in brackets"),
        ("[127.0.0.1]:9100", "IPv6 address"),
        ("[::1]9100", "must be HOST:PORT"),
        ("no.such.host.invalid:9100", "cannot resolve"),
    ],
)
def test_bad_values_are_one_line_and_status_2(value: str, says: str) -> None:
    result = run_shardd("serve", "--workers", "1", "--port", "0", "--metrics", value)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shardd: ") and "metrics: " in lines[0]
    assert says in lines[0], lines


def test_metrics_needs_a_supervisor() -> None:
    result = run_shardd("serve", "--workers", "0", "--port", "0", "--metrics", "127.0.0.1:0")
    assert result.returncode == 2 and "metrics: needs a supervisor" in result.stderr


def test_a_port_in_use_is_an_error() -> None:
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        result = run_shardd("serve", "--workers", "1", "--port", "0", "--metrics", f"{HOST}:{port}")
    assert result.returncode == 1
    assert f"cannot listen for metrics on {HOST}:{port}" in result.stderr


# ------------------------------------------------------------ Prometheus itself


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def test_prometheus_scrapes_it(metrics_server: Any, tmp_path: Any) -> None:
    """Debian's Prometheus server scrapes the endpoint, and the README's queries run."""
    srv = metrics_server()
    with socket.create_connection((HOST, srv.port), timeout=10) as client:
        read_until(client, b"\xff\xfd\x18", bytearray())
        client.sendall(b"hello\r\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: shardd\n    static_configs:\n"
        f'      - targets: ["127.0.0.1:{srv.metrics_port}"]\n'
    )
    web = _free_port()
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def query(expr: str) -> list[Any]:
        url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                answer = json.loads(reply.read())
        except (urllib.error.URLError, ConnectionError):
            return []
        assert answer["status"] == "success", answer
        result: list[Any] = answer["data"]["result"]
        return result

    try:
        wait_until(
            lambda: [
                r for r in query('sum(shardd_sessions_total{job="shardd"})') if r["value"][1] == "1"
            ],
            timeout=60,
            what="Prometheus to scrape one session",
        )
        up = query('up{job="shardd"}')
        assert up and up[0]["value"][1] == "1"
        for expr in (
            "sum(shardd_sessions_current)",
            "sum(rate(shardd_bytes_out_total[5m]))",
            "sum by (reason) (rate(shardd_connections_refused_total[5m]))",
            "histogram_quantile(0.5, sum by (le) "
            "(rate(shardd_session_duration_seconds_bucket[1h])))",
        ):
            query(expr)  # the README's examples are valid PromQL
        scraped = query('scrape_samples_scraped{job="shardd"}')
        assert scraped and int(scraped[0]["value"][1]) > 50
    finally:
        prometheus.terminate()
        prometheus.wait(30)

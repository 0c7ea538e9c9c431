"""The bundled load-test client: real telnet sessions on uvloop.

This module has the ``echo`` scenario: N sessions each keep one message of
``size`` bytes in flight against an echo shell, answering the server's
negotiation like a terminal client would. Loopback targets only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shardd.telnet_client import TelnetClientSession

_perf = time.perf_counter


def check_loopback(host: str) -> None:
    """Refuse any target outside 127.0.0.0/8 and ::1."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
            raise ValueError(f"{host} ({address}) is not a loopback address; "
                             "the load-test tool only targets this machine")


@dataclass
class EchoResult:
    sessions: int
    size: int
    duration: float
    round_trips: int
    rtts: array = field(repr=False)
    failures: Counter = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.round_trips / self.duration if self.duration else 0.0

    def percentile(self, q: float) -> float:
        if not self.rtts:
            return float("nan")
        ordered = sorted(self.rtts)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": "echo",
            "sessions": self.sessions,
            "size": self.size,
            "duration": round(self.duration, 3),
            "round_trips": self.round_trips,
            "round_trips_per_s": round(self.rate, 1),
            "mb_per_s": round(self.rate * self.size * 2 / 1e6, 2),
            "rtt_ms": {
                name: round(self.percentile(q) * 1000, 3)
                for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9),
                                ("max", 100))
            },
            "failures": dict(self.failures),
        }


class _EchoSession(asyncio.Protocol):
    """One session: send a message, wait for all of it to come back, repeat."""

    def __init__(self, run: _EchoRun) -> None:
        self.run = run
        self.telnet = TelnetClientSession()
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.sent_at = 0.0
        self.first_done = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self.sent_at = _perf()
        self.transport.write(self.run.payload)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        telnet = self.telnet
        data = telnet.receive(data)
        if telnet.has_output:
            self.transport.write(telnet.data_to_send())  # type: ignore[union-attr]
        if not data:
            return
        received = self.received
        received += data
        size = len(self.run.payload)
        if len(received) < size:
            return
        run = self.run
        if received[:size] != run.payload:
            run.failures["corrupt echo"] += 1
            self.transport.close()  # type: ignore[union-attr]
            return
        del received[:size]
        if run.measuring:
            run.rtts.append(_perf() - self.sent_at)
            run.round_trips += 1
        if not self.first_done.done():
            self.first_done.set_result(None)
        if not run.stopping:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.run.stopping:
            kind = "reset" if isinstance(exc, ConnectionResetError) else "closed by server"
            self.run.failures[kind] += 1
        if not self.first_done.done():
            self.first_done.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)


class _EchoRun:
    def __init__(self, size: int) -> None:
        # bytes the echo shell returns unchanged in any encoding; no IAC to double
        self.payload = (b"0123456789abcdefghijklmnopqrstuvwxyz" * (size // 36 + 1))[:size]
        self.measuring = False
        self.stopping = False
        self.round_trips = 0
        self.rtts: array = array("d")
        self.failures: Counter = Counter()


async def echo(
    host: str,
    port: int,
    *,
    sessions: int = 100,
    size: int = 1024,
    duration: float = 5.0,
    connect_timeout: float = 10.0,
    warmup_timeout: float = 30.0,
) -> EchoResult:
    """Run the echo scenario once; every session first completes one round trip."""
    check_loopback(host)
    if size < 1 or sessions < 1 or duration <= 0:
        raise ValueError("sessions, size and duration must be positive")
    loop = asyncio.get_running_loop()
    run = _EchoRun(size)
    protocols: list[_EchoSession] = []

    async def connect() -> None:
        try:
            _t, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _EchoSession(run), host, port), connect_timeout
            )
            protocols.append(proto)
        except ConnectionRefusedError:
            run.failures["refused"] += 1
        except ConnectionResetError:
            run.failures["reset"] += 1
        except TimeoutError:
            run.failures["timeout"] += 1

    await asyncio.gather(*(connect() for _ in range(sessions)))
    if protocols:
        _done, pending = await asyncio.wait(
            [p.first_done for p in protocols], timeout=warmup_timeout
        )
        run.failures["timeout"] += len(pending)
    run.measuring = True
    started = _perf()
    await asyncio.sleep(duration)  # the measured interval itself
    run.measuring = False
    elapsed = _perf() - started
    run.stopping = True
    for proto in protocols:
        if proto.transport is not None:
            proto.transport.close()
    if protocols:
        await asyncio.wait([p.closed for p in protocols], timeout=connect_timeout)
    return EchoResult(sessions, size, elapsed, run.round_trips, run.rtts, run.failures)

"""Counts every worker of a server shares: sessions, and per client address.

SO_REUSEPORT spreads one address's connections over every shard by hash,
so a limit per address must count the address's sessions in all workers.
The supervisor maps one shared memory region before it forks, and each
worker writes only its own row of it (one writer per row: no locks, no lost
updates) while reading every live row.

Per address, a row keeps two count-min sketches (``DEPTH`` hash functions,
the minimum over them): the address's live sessions, and its connections in
the current second. A sketch never counts too few, so a limit always holds
for the address that hits it; it may count too many for an address that
shares both its cells with busy ones, which at ``WIDTH`` cells is rare.

Rows: several per shard (``ROWS_PER_SHARD`` in the supervisor), so that a
reload's new worker never writes a row an older worker still writes, while
old workers drain for as long as the reload timeout lets them (the
supervisor hands rows out, and clears a row when its worker is gone).
"""

from __future__ import annotations

import mmap
import struct

DEPTH = 2  # sketches per count (_cells gives one cell in each)
WIDTH = 1 << 16  # cells per sketch for live sessions (uint16 each)
RATE_WIDTH = 1 << 14  # cells per sketch for connections per second
_HEADER = struct.Struct("=II")  # per row: 1 if a worker uses it, its live sessions
_SESSIONS_BYTES = DEPTH * WIDTH * 2
_RATE_BYTES = DEPTH * RATE_WIDTH * 2
_ROW_BYTES = _SESSIONS_BYTES + 2 * _RATE_BYTES  # sessions; rate counts; rate stamps
_MAX_CELL = 0xFFFF


class PeerTable:
    """The shared region: a header of rows, then each row's sketches."""

    def __init__(self, rows: int) -> None:
        if rows < 1:
            raise ValueError("a peer table needs at least one row")
        self.rows = rows
        self._header_bytes = -(-rows * _HEADER.size // mmap.PAGESIZE) * mmap.PAGESIZE
        # anonymous and shared: a forked worker sees the same memory
        self._map = mmap.mmap(-1, self._header_bytes + rows * _ROW_BYTES)
        self._header = memoryview(self._map)[: self._header_bytes].cast("I")

    def clear(self, row: int) -> None:
        """Empty ``row`` (its worker is gone, so are its sessions) and mark it unused."""
        start = self._header_bytes + row * _ROW_BYTES
        self._map[start : start + _ROW_BYTES] = bytes(_ROW_BYTES)
        self._header[2 * row : 2 * row + 2] = memoryview(bytes(8)).cast("I")

    def writer(self, row: int) -> PeerCounts:
        """The counts of the worker that owns ``row``; clears it first."""
        self.clear(row)
        return PeerCounts(self, row)

    def sessions(self) -> int:
        """Live sessions of every worker (what each counts in its row's header)."""
        header = self._header
        return sum(header[2 * r + 1] for r in self.live_rows())

    def in_use(self, row: int) -> bool:
        """Whether a worker took ``row`` (and has not been cleared since)."""
        return bool(self._header[2 * row])

    def row_sessions(self, row: int) -> int:
        """The live sessions ``row``'s worker counts (what it admitted and has not ended)."""
        return int(self._header[2 * row + 1])

    def live_rows(self) -> list[int]:
        header = self._header
        return [r for r in range(self.rows) if header[2 * r]]

    def _row(self, row: int, offset: int, size: int) -> memoryview:
        start = self._header_bytes + row * _ROW_BYTES + offset
        return memoryview(self._map)[start : start + size].cast("H")


def _cells(host: str, width: int) -> tuple[int, int]:
    # str hashes are salted per interpreter, and every worker is a fork of the
    # same one: the same address gives the same cells everywhere. One 64-bit
    # hash gives both sketches' cells, from bits that do not overlap.
    h = hash(host)
    return h & (width - 1), width + ((h >> 24) & (width - 1))


class PeerCounts:
    """One worker's view: it writes its own row and reads every live one."""

    def __init__(self, table: PeerTable, row: int) -> None:
        self.table = table
        self.row = row
        self._header = table._header
        self._sessions = [table._row(r, 0, _SESSIONS_BYTES) for r in range(table.rows)]
        self._rate_counts = [table._row(r, _SESSIONS_BYTES, _RATE_BYTES) for r in range(table.rows)]
        self._rate_stamps = [
            table._row(r, _SESSIONS_BYTES + _RATE_BYTES, _RATE_BYTES) for r in range(table.rows)
        ]
        self._header[2 * row] = 1

    def _live(self) -> list[int]:
        header = self._header
        return [r for r in range(self.table.rows) if header[2 * r]]

    def sessions(self) -> int:
        """Live sessions of every worker."""
        header = self._header
        return sum(header[2 * r + 1] for r in self._live())

    def host_sessions(self, host: str) -> int:
        """Live sessions from ``host`` in every worker (never fewer than there are)."""
        rows = [self._sessions[r] for r in self._live()]
        return min(sum(row[cell] for row in rows) for cell in _cells(host, WIDTH))

    def add_session(self, host: str) -> None:
        own = self._sessions[self.row]
        for cell in _cells(host, WIDTH):
            if own[cell] < _MAX_CELL:
                own[cell] += 1
        self._header[2 * self.row + 1] += 1

    def remove_session(self, host: str) -> None:
        own = self._sessions[self.row]
        for cell in _cells(host, WIDTH):
            if own[cell]:
                own[cell] -= 1
        if self._header[2 * self.row + 1]:
            self._header[2 * self.row + 1] -= 1

    def connected(self, host: str, second: int) -> int:
        """Count a connection from ``host`` in ``second``; its connections in that second,
        in every worker, this one included."""
        stamp = second & _MAX_CELL
        own_counts = self._rate_counts[self.row]
        own_stamps = self._rate_stamps[self.row]
        cells = _cells(host, RATE_WIDTH)
        for cell in cells:
            if own_stamps[cell] != stamp:
                own_stamps[cell] = stamp
                own_counts[cell] = 0
            if own_counts[cell] < _MAX_CELL:
                own_counts[cell] += 1
        live = self._live()
        return min(
            sum(self._rate_counts[r][cell] for r in live if self._rate_stamps[r][cell] == stamp)
            for cell in cells
        )

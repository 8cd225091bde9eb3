"""Server statistics: the counters, the open connections, and the detail stats.

What lives here: ``Stats``, the process-wide counters the command layer,
the protocols and the server bump; ``ConnectionInfo``, what `stats conns`
shows of one connection; and ``PrefixStats``, memcached's per-key-prefix
counts (`stats detail on|off|dump`). What does not: the per-size-class
counts (the store keeps them, ``store.ClassCounters``), turning any of it
into memcached's stat groups (``statgroups``), or how a protocol writes
those (each codec does).
"""

from __future__ import annotations

import time
from typing import Callable

# The counters `stats reset` zeroes, in three runs of memcached's general
# stats (statgroups puts other fields between them).
COMMAND_COUNTERS = (
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "cmd_meta",
    "get_hits",
    "get_misses",
)
OUTCOME_COUNTERS = (
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "store_too_large",
    "store_no_memory",
    "auth_cmds",
    "auth_errors",
    "bytes_read",
    "bytes_written",
)
# memcached's `watch` log: lines handed to watchers, and lost to slow ones.
LOG_COUNTERS = (
    "log_worker_dropped",
    "log_worker_written",
    "log_watcher_skipped",
    "log_watcher_sent",
)
COUNTERS = COMMAND_COUNTERS + OUTCOME_COUNTERS + LOG_COUNTERS


class ConnectionInfo:
    """What `stats conns` shows of one open connection."""

    __slots__ = ("peer", "state", "last_cmd", "protocol")

    def __init__(self, peer: str, now: float):
        self.peer = peer
        self.state = "conn_new_cmd"
        self.last_cmd = now
        self.protocol = "unknown"


class Stats:
    """Process-wide counters. Plain attributes: bumping one never yields."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.started = clock()
        self.curr_connections = 0
        self.total_connections = 0
        self.rejected_connections = 0
        self.connections: dict[int, ConnectionInfo] = {}
        # The listening sockets, as `stats conns` lists them: ident -> address
        # ("tcp:127.0.0.1:11211"). Their idents come from the same counter as
        # the connections', so the two never collide.
        self.listeners: dict[int, str] = {}
        self.accepting = True  # false once a graceful stop has closed the listener
        self.log_watchers = 0  # connections running `watch`
        # `stats sizes` walks the items on demand; `stats sizes_disable`
        # turns it off as memcached's does its histogram.
        self.sizes_enabled = True
        self.reset()

    def reset(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.total_connections = 0
        self.rejected_connections = 0


class PrefixStats:
    """memcached's detail stats: gets, hits, sets and deletes per key prefix.

    A key's prefix is what comes before the first delimiter (``-D``, ``:``
    by default); a key without one is not counted, as in memcached, which
    also stops counting new prefixes past 65,536 so that clients cannot
    grow the table without bound. Each prefix's counts are a list [gets,
    hits, sets, deletes]. The command layer calls ``record_*`` only while
    detail stats are on.
    """

    MAX_PREFIXES = 1 << 16

    def __init__(self, delimiter: str = ":"):
        self.delimiter = delimiter.encode("latin-1")
        self._prefixes: dict[bytes, list[int]] = {}

    def _counts(self, key: bytes) -> list[int] | None:
        # memcached reads the key as a C string: a NUL ends it.
        end = key.find(self.delimiter)
        if end < 0:
            return None
        nul = key.find(b"\0", 0, end)
        if nul >= 0:
            return None
        prefix = key[:end]
        counts = self._prefixes.get(prefix)
        if counts is None and len(self._prefixes) < self.MAX_PREFIXES:
            counts = self._prefixes[prefix] = [0, 0, 0, 0]
        return counts

    def record_get(self, key: bytes, hit: bool) -> None:
        counts = self._counts(key)
        if counts is not None:
            counts[0] += 1
            counts[1] += hit

    def record_gets(self, keys, records) -> None:
        """``record_get`` for each key of a multi-get, given its record or None."""
        for key, rec in zip(keys, records):
            self.record_get(key, rec is not None)

    def record_set(self, key: bytes) -> None:
        counts = self._counts(key)
        if counts is not None:
            counts[2] += 1

    def record_delete(self, key: bytes) -> None:
        counts = self._counts(key)
        if counts is not None:
            counts[3] += 1

    def clear(self) -> None:
        self._prefixes.clear()

    def dump(self) -> bytes:
        """memcached's `stats detail dump`: a PREFIX line per prefix, then END.

        In the order the prefixes were first seen (memcached's is the order
        of its hash table).
        """
        lines = [
            b"PREFIX %b get %d hit %d set %d del %d\r\n" % (prefix, *counts)
            for prefix, counts in self._prefixes.items()
        ]
        lines.append(b"END\r\n")
        return b"".join(lines)

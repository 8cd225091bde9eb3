"""Server statistics: the counters and the open connections.

What lives here: ``Stats``, the process-wide counters the command layer,
the protocols and the server bump; and ``ConnectionInfo``, what `stats
conns` shows of one connection. What does not: the per-size-class
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

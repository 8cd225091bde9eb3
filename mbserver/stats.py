"""Server statistics: the counters, and the stat groups built from them.

What lives here: the counters the command layer and connections bump, the
registry of open connections, and the functions that turn counters, store
and settings into memcached's named stat groups as (name, value) text pairs.
What does not: how a protocol renders those pairs (each codec does that).
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable

from . import MEMCACHED_COMPAT_VERSION, __version__
from .record import MEMCACHED_ITEM_HEADER
from .storage import ItemStore

if TYPE_CHECKING:
    from .config import Settings

Pairs = list[tuple[str, str]]

# The counters `stats reset` zeroes, in the order memcached reports them.
COUNTERS = (
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "get_hits",
    "get_misses",
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


class ConnectionInfo:
    """What `stats conns` shows of one open connection."""

    __slots__ = ("peer", "state", "last_cmd", "protocol", "listen_addr")

    def __init__(self, peer: str, now: float):
        self.peer = peer
        self.listen_addr = ""  # memcached's listen_addr line; set for unix clients
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
        self.reset()

    def reset(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.total_connections = 0
        self.rejected_connections = 0


def general(stats: Stats, store: ItemStore, settings: Settings) -> Pairs:
    """The answer to a bare `stats`: memcached's general stats, where they apply."""
    now = stats.clock()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    pairs: Pairs = [
        ("pid", str(os.getpid())),
        ("uptime", str(int(now - stats.started))),
        ("time", str(int(now))),
        ("version", MEMCACHED_COMPAT_VERSION),
        ("mbserver_version", __version__),
        ("pointer_size", "64"),
        ("rusage_user", f"{usage.ru_utime:.6f}"),
        ("rusage_system", f"{usage.ru_stime:.6f}"),
        ("max_connections", str(settings.max_connections)),
        ("curr_connections", str(stats.curr_connections)),
        ("total_connections", str(stats.total_connections)),
        ("rejected_connections", str(stats.rejected_connections)),
    ]
    pairs.extend((name, str(getattr(stats, name))) for name in COUNTERS)
    pairs += [
        ("limit_maxbytes", str(store.limit_bytes)),
        ("threads", "1"),
        ("bytes", str(store.bytes)),
        ("curr_items", str(len(store))),
        ("total_items", str(store.total_items)),
        ("evictions", str(store.evictions)),
        ("reclaimed", str(store.reclaimed)),
    ]
    return pairs


def settings_group(settings: Settings, stats: Stats) -> Pairs:
    return [
        ("maxbytes", str(settings.memory_limit)),
        ("maxconns", str(settings.max_connections)),
        ("tcpport", str(settings.port)),
        ("inter", settings.host or "NULL"),
        ("verbosity", str(settings.verbosity)),
        ("evictions", "on"),
        ("domain_socket", settings.unix_socket or "NULL"),
        ("umask", f"{settings.unix_mask:o}"),
        ("shutdown_command", "yes" if settings.enable_shutdown else "no"),
        ("cas_enabled", "yes"),
        ("item_size_max", str(settings.max_item_size)),
        ("binding_protocol", "binary"),
        ("num_threads", "1"),
    ]


def items_group(store: ItemStore) -> Pairs:
    # One LRU, reported as memcached's slab class 1 so tools that read
    # items:<class>:<name> find it.
    return [
        ("items:1:number", str(len(store))),
        ("items:1:age", str(int(store.oldest_age()))),
        ("items:1:mem_requested", str(store.bytes)),
        ("items:1:evicted", str(store.evictions)),
        ("items:1:reclaimed", str(store.reclaimed)),
    ]


def slabs_group(store: ItemStore) -> Pairs:
    count = len(store)
    return [
        ("1:chunk_size", str(store.bytes // count if count else 0)),
        ("1:used_chunks", str(count)),
        ("1:mem_requested", str(store.bytes)),
        ("active_slabs", "1" if count else "0"),
        ("total_malloced", str(store.bytes)),
    ]


def sizes_group(store: ItemStore) -> Pairs:
    """Item counts by size in 32-byte buckets, as memcached's `stats sizes`.

    Walks every item (memcached's original implementation did too), so it
    costs time in proportion to the item count.
    """
    buckets: Counter[int] = Counter()
    for key, item in store.items():
        size = len(key) + len(item.value) + MEMCACHED_ITEM_HEADER
        buckets[(size + 31) // 32 * 32] += 1
    return [(str(size), str(buckets[size])) for size in sorted(buckets)]


def conns_group(stats: Stats) -> Pairs:
    now = stats.clock()
    pairs: Pairs = []
    for ident, info in sorted(stats.connections.items()):
        pairs.append((f"{ident}:addr", info.peer))
        if info.listen_addr:
            pairs.append((f"{ident}:listen_addr", info.listen_addr))
        pairs.append((f"{ident}:protocol", info.protocol))
        pairs.append((f"{ident}:state", info.state))
        pairs.append((f"{ident}:secs_since_last_cmd", str(int(now - info.last_cmd))))
    return pairs


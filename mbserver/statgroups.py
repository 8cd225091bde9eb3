"""memcached's stat groups, built from mbserver's counters, store and settings.

What lives here: one function per group of `stats` (general, settings,
items, slabs, sizes, conns), each returning (name, value) text pairs with
memcached 1.6.18's names in memcached's order, and the rule that keeps
every value one token. What does not: counting (``stats``, and the store's
per-class ``ClassCounters``), deciding which group a request asks for
(``commands``), or the wire format (each codec writes the pairs).

mbserver lacks some of memcached's machinery: the slab mover, extstore, the
LRU maintainer's segmented LRU, worker threads, buffer pools. Their fields
are printed with the value memcached prints when the mechanism is off (0,
``no``), so tools that read every field (memcached-tool, the Prometheus
exporter) find them; the README lists them. The size classes are real:
items are counted in memcached's classes, and `stats slabs` shows the 1 MiB
pages memcached would need for them.
"""

from __future__ import annotations

import os
import resource
import struct
import sys
from typing import TYPE_CHECKING

import gevent

from . import MEMCACHED_COMPAT_VERSION
from .record import SLAB_PAGE_SIZE, flags_of, memcached_size, value_length
from .watch import WATCHER_BUFFER
from .stats import COMMAND_COUNTERS, LOG_COUNTERS, OUTCOME_COUNTERS

if TYPE_CHECKING:
    from .config import Settings
    from .crawler import LruCrawler
    from .stats import Stats
    from .store import Store

Pairs = list[tuple[str, str]]

# memcached's internal clock starts 62 seconds before the process does
# (ITEM_UPDATE_INTERVAL + 2); `stats settings`' "oldest" is on that clock.
_MEMCACHED_CLOCK_OFFSET = 62


def token(text: str) -> str:
    """A value as one token of a `STAT name value` line: white space escaped
    as in a URL (a path or address with a space would split the line)."""
    if " " in text or "\t" in text or "\r" in text or "\n" in text:
        for char in " \t\r\n":
            text = text.replace(char, f"%{ord(char):02X}")
    return text


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _event_library() -> str:
    """The event library serving mbserver, where memcached names libevent's."""
    loop = gevent.get_hub().loop
    get_version = getattr(sys.modules.get(type(loop).__module__), "get_version", None)
    return get_version() if get_version is not None else f"gevent-{gevent.__version__}"


def _hash_power(items: int) -> int:
    """log2 of the slots CPython's dict holds ``items`` keys in (memcached's
    hash_power_level for its own table): a dict fills its table to 2/3."""
    return max(3, (items * 3 // 2).bit_length())


def general(stats: Stats, store: Store, settings: Settings, crawler: LruCrawler) -> Pairs:
    """The answer to a bare `stats`: memcached 1.6.18's general stats."""
    now = stats.clock()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counters = store.counters
    total = counters.total

    def counts(*names: str) -> Pairs:
        return [(name, str(getattr(stats, name))) for name in names]

    def zeros(*names: str) -> Pairs:
        return [(name, "0") for name in names]

    return [
        ("pid", str(os.getpid())),
        ("uptime", str(int(now - stats.started))),
        ("time", str(int(now))),
        ("version", MEMCACHED_COMPAT_VERSION),
        ("libevent", token(_event_library())),
        ("pointer_size", str(struct.calcsize("P") * 8)),
        ("rusage_user", f"{usage.ru_utime:.6f}"),
        ("rusage_system", f"{usage.ru_stime:.6f}"),
        ("max_connections", str(settings.max_connections)),
        ("curr_connections", str(stats.curr_connections)),
        ("total_connections", str(stats.total_connections)),
        ("rejected_connections", str(stats.rejected_connections)),
        ("connection_structures", str(stats.curr_connections + len(stats.listeners))),
        # memcached's pools of response objects and read buffers: mbserver
        # has none (each connection owns its buffer).
        *zeros(
            "response_obj_oom",
            "response_obj_count",
            "response_obj_bytes",
            "read_buf_count",
            "read_buf_bytes",
            "read_buf_bytes_free",
            "read_buf_oom",
            "reserved_fds",
        ),
        *counts(*COMMAND_COUNTERS),
        ("get_expired", str(store.get_expired)),
        # A flush empties the table at once, so no read ever meets a flushed item.
        ("get_flushed", "0"),
        *counts(*OUTCOME_COUNTERS),
        ("limit_maxbytes", str(store.limit_bytes)),
        ("accepting_conns", "1" if stats.accepting else "0"),
        # Past -c mbserver accepts and refuses (rejected_connections); it
        # never stops listening.
        *zeros("listen_disabled_num", "time_in_listen_disabled_us"),
        ("threads", "1"),
        ("conn_yields", "0"),
        ("hash_power_level", str(_hash_power(len(store)))),
        ("hash_bytes", str(store.table_bytes())),
        ("hash_is_expanding", "0"),
        *zeros(
            "slab_reassign_rescues",
            "slab_reassign_chunk_rescues",
            "slab_reassign_evictions_nomem",
            "slab_reassign_inline_reclaim",
            "slab_reassign_busy_items",
            "slab_reassign_busy_deletes",
            "slab_reassign_running",
            "slabs_moved",
        ),
        ("lru_crawler_running", "1" if crawler.running else "0"),
        ("lru_crawler_starts", str(crawler.starts)),
        *zeros("lru_maintainer_juggles", "malloc_fails"),
        *counts(*LOG_COUNTERS, "log_watchers"),
        *zeros("unexpected_napi_ids", "round_robin_fallback"),
        ("bytes", str(store.bytes)),
        ("curr_items", str(len(store))),
        ("total_items", str(store.total_items)),
        ("slab_global_page_pool", "0"),
        ("expired_unfetched", str(total("expired_unfetched"))),
        ("evicted_unfetched", str(total("evicted_unfetched"))),
        ("evicted_active", "0"),
        ("evictions", str(store.evictions)),
        ("reclaimed", str(store.reclaimed)),
        ("crawler_reclaimed", str(total("crawler_reclaimed"))),
        ("crawler_items_checked", str(total("crawler_items_checked"))),
        ("lrutail_reflocked", "0"),
        *zeros("moves_to_cold", "moves_to_warm", "moves_within_lru"),
        ("direct_reclaims", str(total("direct_reclaims"))),
        ("lru_bumps_dropped", "0"),
    ]


def settings_group(
    settings: Settings, stats: Stats, store: Store, crawler: LruCrawler, detail_enabled: bool
) -> Pairs:
    """`stats settings`: memcached 1.6.18's fields, mbserver's values."""
    oldest = store.oldest_live
    tls = bool(settings.tls_cert)
    return [
        ("maxbytes", str(settings.memory_limit)),
        ("maxconns", str(settings.max_connections)),
        ("tcpport", str(settings.port)),
        ("udpport", "0"),
        ("inter", token(settings.host) if settings.host else "NULL"),
        ("verbosity", str(settings.verbosity)),
        (
            "oldest",
            "0" if oldest is None
            else str(int(oldest - store.started) + _MEMCACHED_CLOCK_OFFSET - 1),
        ),
        ("evictions", "on"),
        ("domain_socket", token(settings.unix_socket) if settings.unix_socket else "NULL"),
        ("umask", f"{settings.unix_mask:o}"),
        ("shutdown_command", _yes(settings.enable_shutdown)),
        ("growth_factor", "1.25"),
        ("chunk_size", "48"),
        ("num_threads", "1"),
        ("num_threads_per_udp", "1"),
        ("stat_key_prefix", token(settings.prefix_delimiter)),
        ("detail_enabled", _yes(detail_enabled)),
        # Every complete request in a read is answered before the next wait.
        ("reqs_per_event", "0"),
        ("cas_enabled", "yes"),
        ("tcp_backlog", "1024"),
        ("binding_protocol", "auto-negotiate"),
        ("auth_enabled_sasl", _yes(bool(settings.credentials))),
        ("auth_enabled_ascii", _yes(bool(settings.credentials))),
        ("item_size_max", str(settings.max_item_size)),
        ("maxconns_fast", "yes"),
        ("hashpower_init", "0"),
        ("slab_reassign", "no"),
        ("slab_automove", "0"),
        ("slab_automove_ratio", "0.00"),
        ("slab_automove_window", "0"),
        ("slab_chunk_max", str(store.classes.chunk_max)),
        ("lru_crawler", _yes(crawler.enabled)),
        ("lru_crawler_sleep", str(crawler.sleep)),
        ("lru_crawler_tocrawl", str(crawler.tocrawl)),
        ("tail_repair_time", "0"),
        ("flush_enabled", "yes"),
        ("dump_enabled", "yes"),
        ("hash_algorithm", token(sys.hash_info.algorithm)),
        ("lru_maintainer_thread", "no"),
        ("lru_segmented", "no"),
        ("hot_lru_pct", "0"),
        ("warm_lru_pct", "0"),
        ("hot_max_factor", "0.00"),
        ("warm_max_factor", "0.00"),
        ("temp_lru", "no"),
        ("temporary_ttl", "0"),
        ("idle_timeout", str(int(settings.idle_timeout))),
        ("watcher_logbuf_size", str(WATCHER_BUFFER)),
        # mbserver's lines go straight to the watchers: no per-worker buffer.
        ("worker_logbuf_size", "0"),
        ("read_buf_mem_limit", "0"),
        ("track_sizes", _yes(stats.sizes_enabled)),
        ("inline_ascii_response", "no"),
        # extstore: none.
        ("ext_item_size", "0"),
        ("ext_item_age", "0"),
        ("ext_low_ttl", "0"),
        ("ext_recache_rate", "0"),
        ("ext_wbuf_size", "0"),
        ("ext_compact_under", "0"),
        ("ext_drop_under", "0"),
        ("ext_max_sleep", "0"),
        ("ext_max_frag", "0.00"),
        ("slab_automove_freeratio", "0.000"),
        ("ext_drop_unread", "no"),
        ("ssl_enabled", _yes(tls)),
        ("ssl_chain_cert", token(settings.tls_cert) if tls else "(null)"),
        ("ssl_key", token(settings.tls_key) if tls and settings.tls_key else "(null)"),
        ("ssl_verify_mode", "0"),
        ("ssl_keyformat", "1"),  # PEM
        ("ssl_ciphers", "NULL"),
        ("ssl_ca_cert", "NULL"),
        ("ssl_wbuf_size", "0"),
        ("ssl_session_cache", "no"),
        ("ssl_kernel_tls", "no"),
        ("ssl_min_version", "tlsv1.2"),
        ("num_napi_ids", "(null)"),
        # memcached's restartable cache file; mbserver's is --snapshot.
        ("memory_file", token(settings.snapshot) if settings.snapshot else "(null)"),
    ]


def items_group(store: Store) -> Pairs:
    """`stats items`: per size class holding items, memcached's 28 fields.

    mbserver's LRU is flat: as in memcached without its segmented LRU,
    every item counts as COLD, and its hits as hits_to_cold.
    """
    now = int(store.clock())
    counters = store.counters
    pairs: Pairs = []
    for cls, (number, requested, oldest) in store.class_usage().items():
        fields = (
            ("number", number),
            ("number_hot", 0),
            ("number_warm", 0),
            ("number_cold", number),
            ("age_hot", 0),
            ("age_warm", 0),
            ("age", max(0, now - oldest)),
            ("mem_requested", requested),
            ("evicted", counters.evicted[cls]),
            ("evicted_nonzero", counters.evicted_nonzero[cls]),
            ("evicted_time", counters.evicted_time[cls]),
            ("outofmemory", counters.outofmemory[cls]),
            ("tailrepairs", 0),
            ("reclaimed", counters.reclaimed[cls]),
            ("expired_unfetched", counters.expired_unfetched[cls]),
            ("evicted_unfetched", counters.evicted_unfetched[cls]),
            ("evicted_active", 0),
            ("crawler_reclaimed", counters.crawler_reclaimed[cls]),
            ("crawler_items_checked", counters.crawler_items_checked[cls]),
            ("lrutail_reflocked", 0),
            ("moves_to_cold", 0),
            ("moves_to_warm", 0),
            ("moves_within_lru", 0),
            ("direct_reclaims", counters.direct_reclaims[cls]),
            ("hits_to_hot", 0),
            ("hits_to_warm", 0),
            ("hits_to_cold", counters.get_hits[cls]),
            ("hits_to_temp", 0),
        )
        pairs.extend((f"items:{cls}:{name}", str(value)) for name, value in fields)
    return pairs


def slabs_group(store: Store) -> Pairs:
    """`stats slabs`: per size class holding items, its chunks in the 1 MiB
    pages memcached would allocate for them, and its hit counters."""
    classes = store.classes
    counters = store.counters
    pairs: Pairs = []
    pages_total = 0
    for cls, (number, _, _) in store.class_usage().items():
        per_page = classes.chunks_per_page(cls)
        pages = -(-number // per_page)
        pages_total += pages
        fields = (
            ("chunk_size", classes.chunk_size(cls)),
            ("chunks_per_page", per_page),
            ("total_pages", pages),
            ("total_chunks", pages * per_page),
            ("used_chunks", number),
            ("free_chunks", pages * per_page - number),
            ("free_chunks_end", 0),
            ("get_hits", counters.get_hits[cls]),
            ("cmd_set", counters.cmd_set[cls]),
            ("delete_hits", counters.delete_hits[cls]),
            ("incr_hits", counters.incr_hits[cls]),
            ("decr_hits", counters.decr_hits[cls]),
            ("cas_hits", counters.cas_hits[cls]),
            ("cas_badval", counters.cas_badval[cls]),
            ("touch_hits", counters.touch_hits[cls]),
        )
        pairs.extend((f"{cls}:{name}", str(value)) for name, value in fields)
    pairs.append(("active_slabs", str(len(pairs) // 15)))
    pairs.append(("total_malloced", str(pages_total * SLAB_PAGE_SIZE)))
    return pairs


def size_bucket(key: bytes, rec: bytes) -> int:
    """The `stats sizes` bucket of an item: its memcached size, rounded up to 32."""
    size = memcached_size(len(key), value_length(rec), flags_of(rec))
    return -(-size // 32) * 32


def sizes_group(buckets: dict[int, int] | None) -> Pairs:
    """`stats sizes`: items per 32-byte size bucket, or memcached's word that
    the histogram is off (`stats sizes_disable`)."""
    if buckets is None:
        return [("sizes_status", "disabled")]
    return [(str(size), str(buckets[size])) for size in sorted(buckets)]


def address(peer: str) -> str:
    """A client address as memcached writes it: tcp:IP:PORT, tcp6:[IP]:PORT, unix:."""
    if peer.startswith("["):
        return "tcp6:" + peer
    if ":" in peer:
        return "tcp:" + peer
    return "unix:"  # a unix socket's client has no name


def conns_group(stats: Stats, settings: Settings) -> Pairs:
    """`stats conns`: the listening sockets, then each client connection."""
    now = stats.clock()
    if stats.listeners:
        listeners = stats.listeners
    elif settings.host:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        listeners = {0: address(f"{host}:{settings.port}")}
    else:
        listeners = {0: f"unix:{settings.unix_socket}"}
    pairs: Pairs = []
    for ident, listening in listeners.items():
        pairs.append((f"{ident}:addr", token(listening)))
        pairs.append((f"{ident}:state", "conn_listening"))
        pairs.append((f"{ident}:secs_since_last_cmd", str(int(now - stats.started))))
    for ident, info in sorted(stats.connections.items()):
        peer = address(info.peer)
        family = peer.partition(":")[0]
        listen = next(
            (text for text in listeners.values() if text.partition(":")[0] == family),
            next(iter(listeners.values())),
        )
        pairs.append((f"{ident}:addr", token(peer)))
        pairs.append((f"{ident}:listen_addr", token(listen)))
        pairs.append((f"{ident}:state", info.state))
        pairs.append((f"{ident}:secs_since_last_cmd", str(int(now - info.last_cmd))))
    return pairs

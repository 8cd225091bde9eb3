"""-m (memory limit, LRU eviction) and -I (item size limit) end to end."""

from __future__ import annotations

from .. import packets as P
from .wire import Connection

# Both memcached and mbserver refuse an item limit over half the memory limit.
SMALL_CACHE = ("-m", "1", "-I", "512k")
VALUE = b"v" * (10 * 1024)
COUNT = 500  # 5 MiB of values into a 1 MiB cache


def general_stats(conn: Connection) -> dict[bytes, bytes]:
    replies = conn.sync(P.request(P.STAT))
    return {r.key: r.value for r in replies if r.key}


def test_memory_limit_evicts_least_recently_used(start_server):
    server = start_server(*SMALL_CACHE)
    keys = [b"item-%04d" % i for i in range(COUNT)]
    with Connection(server.host, server.port) as conn:
        errors = conn.sync(b"".join(P.set_(k, VALUE, opcode=P.SETQ) for k in keys))
        assert errors == []  # every store succeeds, by evicting older items

        present = {r.key for r in conn.sync(b"".join(P.get(k, P.GETKQ) for k in keys))}
        stats = general_stats(conn)

        assert int(stats[b"limit_maxbytes"]) == 1024 * 1024
        assert int(stats[b"evictions"]) > 0
        assert int(stats[b"evictions"]) == COUNT - int(stats[b"curr_items"])
        assert int(stats[b"bytes"]) <= 1024 * 1024
        assert 0 < len(present) < COUNT // 2
        assert keys[-1] in present and keys[-10] in present  # the newest survive
        assert keys[0] not in present  # the oldest went first
        # What survives is a suffix: eviction went strictly oldest first.
        first_kept = min(keys.index(k) for k in present)
        assert present == set(keys[first_kept:])

        # Still answering, and still storing.
        assert conn.request(P.set_(b"after", b"x")).status == P.SUCCESS
        assert conn.request(P.get(b"after")).value == b"x"


def test_item_size_limit_option(start_server):
    server = start_server("-I", "512k")
    with Connection(server.host, server.port) as conn:
        too_big = conn.request(P.set_(b"big", b"b" * (512 * 1024 + 1), opaque=5))
        assert too_big == P.Response(
            P.RESPONSE_MAGIC, P.SET, P.TOO_LARGE, 5, 0, value=b"Too large."
        )
        fits = b"f" * (512 * 1024 - 1024)
        assert conn.request(P.set_(b"fits", fits)).status == P.SUCCESS
        assert conn.request(P.get(b"fits")).value == fits
        assert conn.request(P.get(b"big")).status == P.KEY_NOT_FOUND
        assert int(general_stats(conn)[b"curr_items"]) == 1


def test_append_beyond_item_size_limit_is_refused(start_server):
    server = start_server("-I", "512k")
    with Connection(server.host, server.port) as conn:
        half = b"h" * (300 * 1024)
        assert conn.request(P.set_(b"k", half)).status == P.SUCCESS
        reply = conn.request(P.request(P.APPEND, b"k", value=half, opaque=6))
        assert (reply.opcode, reply.opaque, reply.cas) == (P.APPEND, 6, 0)
        assert reply.status in (P.TOO_LARGE, P.NOT_STORED, P.OUT_OF_MEMORY)
        assert conn.request(P.get(b"k")).value == half

"""STAT: the general group's keys and counters, the named groups, unknown groups."""

from __future__ import annotations

import pytest

from .. import packets as P
from .wire import Connection

# The general stats PROTOCOL.md lists (its "incr_*, decr_*, cas_*" spelled out).
GENERAL_KEYS = {
    "pid", "uptime", "time", "version", "curr_connections", "total_connections",
    "cmd_get", "cmd_set", "cmd_flush", "get_hits", "get_misses", "delete_hits",
    "delete_misses", "incr_hits", "incr_misses", "decr_hits", "decr_misses",
    "cas_hits", "cas_misses", "cas_badval", "curr_items", "total_items", "bytes",
    "limit_maxbytes", "evictions", "bytes_read", "bytes_written", "threads",
}  # fmt: skip


def stats(conn: Connection, group: bytes = b"", opaque: int = 0x5747) -> dict[str, str]:
    """Read one STAT reply sequence; check every packet's shape on the way."""
    replies = conn.sync(P.request(P.STAT, group, opaque=opaque))
    assert replies, "no reply to STAT"
    *body, terminator = replies
    assert terminator == P.Response(P.RESPONSE_MAGIC, P.STAT, P.SUCCESS, opaque, 0)
    out = {}
    for r in body:
        assert (r.opcode, r.status, r.opaque, r.extras) == (P.STAT, P.SUCCESS, opaque, b"")
        assert r.key, f"a STAT packet before the terminator has an empty key: {r}"
        out[r.key.decode()] = r.value.decode()
    return out


def test_general_stats_have_the_documented_keys(conn):
    got = stats(conn)
    assert GENERAL_KEYS <= got.keys(), f"missing: {sorted(GENERAL_KEYS - got.keys())}"
    for name in GENERAL_KEYS - {"version"}:
        float(got[name])  # numeric (rusage-like values may have a decimal point)
    assert int(got["pid"]) > 0
    assert int(got["curr_connections"]) >= 1


def test_counters_follow_commands(start_server):
    server = start_server()
    with Connection(server.host, server.port) as conn:
        before = stats(conn)
        conn.sync(
            P.set_(b"a", b"1", opcode=P.SETQ)
            + P.set_(b"b", b"22", opcode=P.SETQ)
            + P.get(b"a", P.GETQ)
            + P.get(b"zz", P.GETQ)
            + P.request(P.DELETEQ, b"b")
            + P.request(P.DELETEQ, b"b")
            + P.counter(P.INCREMENTQ, b"a", 1)
            + P.counter(P.INCREMENTQ, b"nope", 1, expiry=P.NO_EXPIRY_CREATE)
            + P.counter(P.DECREMENTQ, b"a", 1)
            + P.counter(P.DECREMENTQ, b"nope", 1, expiry=P.NO_EXPIRY_CREATE)
            + P.request(P.FLUSHQ)
        )
        after = stats(conn)

    expected = {
        "cmd_set": 2, "cmd_get": 2, "get_hits": 1, "get_misses": 1,
        "delete_hits": 1, "delete_misses": 1, "incr_hits": 1, "incr_misses": 1,
        "decr_hits": 1, "decr_misses": 1, "cmd_flush": 1, "total_items": 2,
    }  # fmt: skip
    assert {name: int(after[name]) - int(before[name]) for name in expected} == expected


def test_curr_items_and_bytes(start_server):
    server = start_server()
    with Connection(server.host, server.port) as conn:
        assert int(stats(conn)["curr_items"]) == 0
        conn.sync(b"".join(P.set_(b"item%d" % i, b"x" * 100, opcode=P.SETQ) for i in range(5)))
        got = stats(conn)
        assert int(got["curr_items"]) == 5
        assert int(got["bytes"]) >= 5 * 100
        assert int(got["limit_maxbytes"]) == 64 * 1024 * 1024


@pytest.mark.parametrize("group", [b"settings", b"items", b"slabs", b"sizes", b"reset"])
def test_named_groups_end_with_terminator(conn, group):
    stats(conn, group)


def test_reset_clears_counters(start_server):
    server = start_server()
    with Connection(server.host, server.port) as conn:
        conn.sync(P.get(b"miss", P.GETQ) * 3)
        assert int(stats(conn)["get_misses"]) == 3
        stats(conn, b"reset")
        assert int(stats(conn)["get_misses"]) == 0


def test_unknown_group_is_not_found(conn):
    reply = conn.request(P.request(P.STAT, b"nonesuch", opaque=0x12))
    assert reply == P.Response(
        P.RESPONSE_MAGIC, P.STAT, P.KEY_NOT_FOUND, 0x12, 0, value=b"Not found"
    )
    assert conn.request(P.noop(1)).status == P.SUCCESS

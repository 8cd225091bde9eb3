"""python-binary-memcached, the client that decodes values by their flags.

This client answers False/None/0 on network errors instead of raising, so
every assertion checks the exact value, never mere truthiness.  It has no
touch(); TOUCH is covered by the raw-packet and pylibmc tests.
"""

from __future__ import annotations

import zlib

import bmemcached
import pytest
from bmemcached.protocol import Protocol

from .. import packets as P


class Point:
    """A custom class, stored pickled."""

    def __init__(self, x: int, y: int):
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


@pytest.fixture
def client(server):
    c = bmemcached.Client([server.address], socket_timeout=5)
    yield c
    c.disconnect_all()


@pytest.fixture
def k(key: bytes) -> str:
    return key.decode()


@pytest.mark.parametrize(
    "value",
    [
        "hello",
        "",
        "ünïcödé ✓ 日本語",
        b"raw\x00bytes\xff",
        0,
        42,
        -7,
        2**63 - 1,
        2**100,
        {"a": 1, "b": [1, 2, 3]},
        [1, "two", 3.0, None],
        (1, 2),
        3.25,
        True,
        None,
        Point(3, 4),
    ],
    ids=lambda v: type(v).__name__ + ":" + repr(v)[:20],
)
def test_set_get_round_trip(client, k, value):
    assert client.set(k, value) is True
    got = client.get(k)
    assert got == value
    assert type(got) is type(value)


def test_compressed_large_value(client, conn, key, k):
    value = "compressible " * 10_000
    assert len(value) > Protocol.COMPRESSION_THRESHOLD
    assert client.set(k, value) is True
    assert client.get(k) == value
    # The server holds the compressed bytes and the client's flags, untouched.
    raw = conn.request(P.get(key))
    assert raw.flags == Protocol.FLAGS["compressed"]
    assert zlib.decompress(raw.value).decode() == value


def test_large_pickled_object_compressed(client, k):
    value = {"rows": [{"id": i, "name": f"row-{i}"} for i in range(5000)]}
    assert client.set(k, value) is True
    assert client.get(k) == value


def test_get_missing_returns_none_and_default(client, k):
    assert client.get(k) is None
    assert client.get(k, default="fallback") == "fallback"


def test_set_multi_get_multi(client, k):
    mapping = {
        f"{k}-{i}": v for i, v in enumerate(["s", 1, 2**70, {"d": 1}, [1], b"b", "x" * 1000])
    }
    assert client.set_multi(mapping) == []  # the keys that failed
    got = client.get_multi(list(mapping) + [f"{k}-missing"])
    assert got == mapping


def test_set_multi_reports_failures_by_opaque(client, k):
    client.set(f"{k}-taken", "old")
    # A (key, 0) entry is sent as ADDQ: it fails, quietly but with an error
    # reply whose opaque tells the client which key it was.
    failed = client.set_multi({(f"{k}-taken", 0): "new", f"{k}-free": "v", (f"{k}-fresh", 0): "w"})
    assert failed == [(f"{k}-taken", 0)]
    assert client.get_multi([f"{k}-taken", f"{k}-free", f"{k}-fresh"]) == {
        f"{k}-taken": "old",
        f"{k}-free": "v",
        f"{k}-fresh": "w",
    }


def test_get_multi_with_cas(client, k):
    client.set(f"{k}-a", "A")
    got = client.get_multi([f"{k}-a", f"{k}-b"], get_cas=True)
    assert list(got) == [f"{k}-a"]
    value, cas = got[f"{k}-a"]
    assert value == "A" and isinstance(cas, int) and cas > 0


def test_add_and_replace(client, k):
    assert client.replace(k, "nope") is False
    assert client.get(k) is None
    assert client.add(k, "first") is True
    assert client.add(k, "second") is False
    assert client.get(k) == "first"
    assert client.replace(k, "third") is True
    assert client.get(k) == "third"


def test_incr_decr(client, k):
    assert client.incr(k, 1, default=10) == 10
    assert client.incr(k, 5) == 15
    assert client.decr(k, 3) == 12
    assert client.decr(k, 100) == 0
    # Stored by the server, so no flags: a str.  memcached pads a number that
    # got shorter with spaces ("0 "); the digits are what must match.
    assert client.get(k).rstrip(" ") == "0"


def test_incr_on_int_value(client, k):
    assert client.set(k, 41) is True
    assert client.incr(k, 1) == 42
    assert client.get(k) == 42  # the integer flag is kept


def test_incr_non_numeric_raises(client, k):
    client.set(k, "abc")
    with pytest.raises(bmemcached.exceptions.MemcachedException) as info:
        client.incr(k, 1)
    assert info.value.code == 6


def test_delete(client, k):
    client.set(k, "v")
    assert client.delete(k) is True
    assert client.get(k) is None
    assert client.delete(k) is True  # a miss is not an error for this client


def test_delete_multi(client, k):
    client.set_multi({f"{k}-1": 1, f"{k}-2": 2})
    assert client.delete_multi([f"{k}-1", f"{k}-2"]) is True
    assert client.get_multi([f"{k}-1", f"{k}-2"]) == {}


def test_gets_and_cas(client, k):
    assert client.set(k, "v1") is True
    value, cas = client.gets(k)
    assert value == "v1" and isinstance(cas, int) and cas > 0
    assert client.cas(k, "v2", cas) is True
    assert client.get(k) == "v2"
    assert client.cas(k, "v3", cas) is False  # stale
    assert client.get(k) == "v2"


def test_gets_missing(client, k):
    assert client.gets(k) == (None, None)


def test_set_get_cas(client, k):
    ok, cas = client.set(k, "v", get_cas=True)
    assert ok is True and cas > 0
    assert client.gets(k) == ("v", cas)


def test_expired_value_is_gone(client, k):
    # > 30 days: an absolute Unix time, here in 1970.
    assert client.set(k, "v", time=2_592_001) is True
    assert client.get(k) is None


def test_flush_all(start_server):
    server = start_server()
    c = bmemcached.Client([server.address], socket_timeout=5)
    try:
        c.set_multi({"a": 1, "b": 2})
        assert c.flush_all() is True
        assert c.get_multi(["a", "b"]) == {}
    finally:
        c.disconnect_all()


def test_stats(client, server):
    got = client.stats()[server.address]
    for name in (
        "pid",
        "uptime",
        "curr_items",
        "cmd_get",
        "get_hits",
        "evictions",
        "limit_maxbytes",
    ):
        assert name in got
        int(got[name])


def test_stats_reflect_traffic(start_server):
    server = start_server()
    c = bmemcached.Client([server.address], socket_timeout=5)
    try:
        c.set("a", "1")
        c.get("a")
        c.get("missing")
        got = c.stats()[server.address]
    finally:
        c.disconnect_all()
    assert (int(got["get_hits"]), int(got["get_misses"]), int(got["curr_items"])) == (1, 1, 1)

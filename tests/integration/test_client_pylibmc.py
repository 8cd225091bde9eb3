"""pylibmc (libmemcached) speaking the binary protocol.

No touch() here: libmemcached 1.0.16 does not expect the flags that a binary
TOUCH reply carries (memcached sends them too) and stalls for its poll
timeout; TOUCH is covered byte by byte in test_binary_get_family.py.
"""

from __future__ import annotations

import pylibmc
import pytest

from .. import packets as P


@pytest.fixture
def mc(server):
    # cas: gets/cas need libmemcached's CAS support switched on.
    # Timeouts in milliseconds, so a silent server fails the test instead of hanging it.
    c = pylibmc.Client(
        [server.address],
        binary=True,
        behaviors={
            "cas": True,
            "connect_timeout": 5000,
            "receive_timeout": 5_000_000,
            "send_timeout": 5_000_000,
        },
    )
    yield c
    c.disconnect_all()


@pytest.fixture
def k(key: bytes) -> str:
    return key.decode()


@pytest.mark.parametrize(
    "value",
    [
        "text",
        "ünïcödé",
        b"\x00\xffbytes",
        0,
        123,
        -5,
        2**62,
        2**80,
        1.5,
        {"a": [1, 2]},
        ["x", None],
    ],
    ids=lambda v: type(v).__name__ + ":" + repr(v)[:16],
)
def test_set_get(mc, k, value):
    assert mc.set(k, value) is True
    got = mc.get(k)
    assert got == value
    assert type(got) is type(value)


def test_large_value(mc, k):
    value = b"L" * (512 * 1024)
    assert mc.set(k, value) is True
    assert mc.get(k) == value


def test_get_missing(mc, k):
    assert mc.get(k) is None
    assert mc.get(k, "default") == "default"


def test_gets_and_cas(mc, k):
    assert mc.set(k, "v1") is True
    value, cas = mc.gets(k)
    assert value == "v1" and isinstance(cas, int) and cas > 0
    assert mc.cas(k, "v2", cas) is True
    assert mc.get(k) == "v2"
    assert mc.cas(k, "v3", cas) is False  # stale CAS
    assert mc.get(k) == "v2"
    _, newer = mc.gets(k)
    assert newer != cas


def test_gets_missing(mc, k):
    assert mc.gets(k) == (None, None)


def test_incr_decr(mc, k):
    with pytest.raises(pylibmc.NotFound):
        mc.incr(k)
    assert mc.set(k, 10) is True
    assert mc.incr(k) == 11
    assert mc.incr(k, 9) == 20
    assert mc.decr(k, 5) == 15
    assert mc.decr(k, 100) == 0


def test_incr_wraps_at_2_64(mc, k):
    assert mc.set(k, str(2**64 - 2)) is True
    assert mc.incr(k) == 2**64 - 1
    assert mc.incr(k) == 0


def test_incr_non_numeric(mc, conn, key, k):
    mc.set(k, "abc")
    with pytest.raises(pylibmc.Error):
        mc.incr(k)
    # libmemcached drops the connection after this error; check on our own.
    assert conn.request(P.get(key)).value == b"abc"


def test_set_multi_get_multi(mc, k):
    mapping = {f"{k}-{i}": f"value-{i}" for i in range(50)}
    assert mc.set_multi(mapping) == []  # the keys that failed
    got = mc.get_multi(list(mapping) + [f"{k}-absent"])
    assert got == mapping


def test_get_multi_with_prefix(mc, k):
    mc.set_multi({"a": 1, "b": 2}, key_prefix=f"{k}:")
    assert mc.get_multi(["a", "b", "c"], key_prefix=f"{k}:") == {"a": 1, "b": 2}


def test_delete(mc, k):
    mc.set(k, "v")
    assert mc.delete(k) is True
    assert mc.get(k) is None
    assert mc.delete(k) is False


def test_delete_multi(mc, k):
    mc.set_multi({f"{k}-1": 1, f"{k}-2": 2})
    assert mc.delete_multi([f"{k}-1", f"{k}-2"]) is True
    assert mc.get_multi([f"{k}-1", f"{k}-2"]) == {}


def test_add_replace(mc, k):
    with pytest.raises(pylibmc.NotFound):
        mc.replace(k, "x")
    assert mc.add(k, "first") is True
    assert mc.add(k, "second") is False
    assert mc.get(k) == "first"
    assert mc.replace(k, "third") is True
    assert mc.get(k) == "third"


def test_append_prepend(mc, k):
    assert mc.append(k, "x") is False
    assert mc.prepend(k, "x") is False
    mc.set(k, "mid")
    assert mc.append(k, ">") is True
    assert mc.prepend(k, "<") is True
    assert mc.get(k) == "<mid>"


def test_flush_all(start_server):
    server = start_server()
    c = pylibmc.Client([server.address], binary=True)
    try:
        c.set_multi({"a": 1, "b": 2})
        assert c.flush_all() is True
        assert c.get_multi(["a", "b"]) == {}
    finally:
        c.disconnect_all()


def test_get_stats(mc, server):
    ((name, stats),) = mc.get_stats()
    assert name.decode().endswith(f":{server.port} (0)")
    for key in ("pid", "curr_items", "get_hits", "evictions"):
        assert key in stats

"""The text and meta protocols: memccapable's ASCII suite, pymemcache end to
end, items crossing between the binary and text protocols, and raw error
exchanges compared byte for byte with the reference memcached."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from .. import packets as P
from .wire import Connection

IO_TIMEOUT = 5.0


def test_memccapable_ascii_suite_passes(server, tool):
    memccapable = tool("memccapable")
    result = subprocess.run(
        # -a: ASCII protocol tests only; -t: per-I/O timeout in seconds.
        [memccapable, "-a", "-h", server.host, "-p", str(server.port), "-t", "5"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    failed = [line for line in output.splitlines() if "FAIL" in line.upper()]
    assert result.returncode == 0, output
    assert failed == [], output
    assert "All tests passed" in output
    assert output.count("[pass]") >= 20, output


# --- raw text exchanges ------------------------------------------------------


def text_exchange(host: str, port: int, data: bytes) -> bytes:
    """Send `data` then `mn`, and return everything the server answered before `MN`.

    `mn` is answered in order after every earlier request, so the reply to it
    marks the end of the replies without any waiting on wall-clock silence."""
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as s:
        s.sendall(data + b"mn\r\n")
        out = b""
        while not out.endswith(b"MN\r\n"):
            chunk = s.recv(1 << 20)
            assert chunk, f"closed before MN; received {out!r}"
            out += chunk
    return out[: -len(b"MN\r\n")]


@pytest.fixture
def text(server):
    def exchange(data: bytes) -> bytes:
        return text_exchange(server.host, server.port, data)

    return exchange


# --- pymemcache Client -------------------------------------------------------


@pytest.fixture
def mc(server):
    c = Client((server.host, server.port), connect_timeout=IO_TIMEOUT, timeout=IO_TIMEOUT)
    yield c
    c.close()


def test_pymemcache_storage_and_retrieval(mc, key):
    k = key.decode()
    assert mc.set(k, b"v1", noreply=False) is True
    assert mc.get(k) == b"v1"
    assert mc.add(k, b"v2", noreply=False) is False
    assert mc.replace(k, b"v3", noreply=False) is True
    assert mc.append(k, b"-end", noreply=False) is True
    assert mc.prepend(k, b"start-", noreply=False) is True
    assert mc.get(k) == b"start-v3-end"
    assert mc.get(k + "-missing") is None
    assert mc.delete(k, noreply=False) is True
    assert mc.delete(k, noreply=False) is False
    assert mc.append(k, b"x", noreply=False) is False


def test_pymemcache_flags_round_trip(server, key):
    # A client-side serde stores its type tag in the flags; the server returns them untouched.
    c = Client((server.host, server.port), timeout=IO_TIMEOUT)
    c.set(key, b"raw", flags=0xFFFFFFFF, noreply=False)
    assert text_exchange(server.host, server.port, b"get " + key + b"\r\n") == (
        b"VALUE " + key + b" 4294967295 3\r\nraw\r\nEND\r\n"
    )
    c.close()


def test_pymemcache_gets_and_cas(mc, key):
    k = key.decode()
    mc.set(k, b"a", noreply=False)
    value, cas = mc.gets(k)
    assert value == b"a"
    assert mc.cas(k, b"b", cas, noreply=False) is True
    assert mc.cas(k, b"c", cas, noreply=False) is False  # the CAS moved on
    assert mc.get(k) == b"b"
    assert mc.cas(k + "-missing", b"x", cas, noreply=False) is None
    assert mc.gets(k + "-missing") == (None, None)


def test_pymemcache_incr_decr(mc, key):
    k = key.decode()
    assert mc.incr(k, 1, noreply=False) is None
    mc.set(k, b"10", noreply=False)
    assert mc.incr(k, 5, noreply=False) == 15
    assert mc.decr(k, 20, noreply=False) == 0  # stops at 0
    mc.set(k, b"18446744073709551615", noreply=False)
    assert mc.incr(k, 2, noreply=False) == 1  # wraps at 2**64


def test_pymemcache_touch(mc, text, key):
    k = key.decode()
    mc.set(k, b"v", expire=1000, noreply=False)
    assert mc.touch(k, 50, noreply=False) is True
    assert text(b"mg " + key + b" t\r\n") in (b"HD t50\r\n", b"HD t49\r\n")
    assert mc.touch(k + "-missing", 50, noreply=False) is False


def test_pymemcache_many(mc, key):
    k = key.decode()
    items = {f"{k}-{i}": f"value-{i}".encode() for i in range(50)}
    assert mc.set_many(items, noreply=False) == []
    got = mc.get_many(list(items) + [k + "-missing"])
    assert got == items
    mc.delete_many(list(items)[:10], noreply=False)
    assert len(mc.get_many(list(items))) == 40


def test_pymemcache_stats_and_version(mc):
    stats = mc.stats()
    for name in (b"pid", b"uptime", b"curr_items", b"get_hits", b"cmd_set", b"curr_connections"):
        assert name in stats, stats
    assert mc.version().startswith(b"1.6.")
    settings = mc.stats("settings")
    assert b"item_size_max" in settings, settings


def test_pymemcache_flush_all(start_server):
    srv = start_server()
    c = Client((srv.host, srv.port), timeout=IO_TIMEOUT)
    c.set_many({"a": b"1", "b": b"2"}, noreply=False)
    assert c.flush_all(noreply=False) is True
    assert c.get_many(["a", "b"]) == {}
    assert c.stats()[b"curr_items"] == 0
    c.close()


def test_pymemcache_hash_client_spreads_keys(start_server):
    servers = [start_server() for _ in range(3)]
    hc = HashClient(
        [(s.host, s.port) for s in servers], connect_timeout=IO_TIMEOUT, timeout=IO_TIMEOUT
    )
    items = {f"hash-{i}": str(i).encode() for i in range(300)}
    assert hc.set_many(items, noreply=False) == []
    assert hc.get_many(list(items)) == items
    assert hc.get("hash-7") == b"7"
    counts = []
    for s in servers:
        c = Client((s.host, s.port), timeout=IO_TIMEOUT)
        counts.append(c.stats()[b"curr_items"])
        c.close()
    assert sum(counts) == 300
    assert all(n > 30 for n in counts), counts
    hc.close()


# --- cross-protocol ----------------------------------------------------------


def test_binary_set_reads_back_over_text(server, text, key):
    with Connection(server.host, server.port) as b:
        stored = b.request(P.set_(key, b"hello", flags=0xDEADBEEF, expiry=100))
        assert stored.status == P.SUCCESS
        hit = b.request(P.get(key))
    assert (hit.value, hit.flags, hit.cas) == (b"hello", 0xDEADBEEF, stored.cas)
    cas = str(stored.cas).encode()
    assert text(b"get " + key + b"\r\n") == b"VALUE " + key + b" 3735928559 5\r\nhello\r\nEND\r\n"
    assert text(b"gets " + key + b"\r\n") == (
        b"VALUE " + key + b" 3735928559 5 " + cas + b"\r\nhello\r\nEND\r\n"
    )
    reply = text(b"mg " + key + b" f c v s t\r\n")
    assert reply in (
        b"VA 5 f3735928559 c" + cas + b" s5 t" + ttl + b"\r\nhello\r\n" for ttl in (b"100", b"99")
    ), reply
    # pymemcache sees the same value and CAS.
    c = Client((server.host, server.port), timeout=IO_TIMEOUT)
    assert c.gets(key) == (b"hello", cas)
    c.close()


def test_binary_set_without_expiry_has_no_ttl_over_meta(server, text, key):
    with Connection(server.host, server.port) as b:
        assert b.request(P.set_(key, b"v", flags=7)).status == P.SUCCESS
    assert text(b"mg " + key + b" t f\r\n") == b"HD t-1 f7\r\n"


def test_text_set_reads_back_over_binary(server, text, key):
    assert text(b"set " + key + b" 42 100 5\r\nworld\r\n") == b"STORED\r\n"
    gets = text(b"gets " + key + b"\r\n")
    cas = int(gets.split(b"\r\n")[0].split()[-1])
    with Connection(server.host, server.port) as b:
        hit = b.request(P.get(key))
        assert (hit.status, hit.value, hit.flags, hit.cas) == (P.SUCCESS, b"world", 42, cas)
        # The text-side expiry is the binary side's too: touching to the past drops it.
        assert b.request(P.request(P.TOUCH, key, P.expiry_extras(100))).status == P.SUCCESS
    assert text(b"mg " + key + b" t\r\n") in (b"HD t100\r\n", b"HD t99\r\n")


def test_text_expiry_in_the_past_is_a_binary_miss(server, text, key):
    past = str(int(time.time()) - 1000).encode()  # absolute Unix time (> 30 days)
    assert text(b"set " + key + b" 0 " + past + b" 1\r\nx\r\n") == b"STORED\r\n"
    with Connection(server.host, server.port) as b:
        assert b.request(P.get(key)).status == P.KEY_NOT_FOUND


def test_meta_set_reads_back_over_binary_and_cas_crosses(server, text, key):
    reply = text(b"ms " + key + b" 3 F9 T60 c\r\nabc\r\n")
    assert reply.startswith(b"HD c"), reply
    cas = int(reply.split()[1][1:])
    with Connection(server.host, server.port) as b:
        hit = b.request(P.get(key))
        assert (hit.value, hit.flags, hit.cas) == (b"abc", 9, cas)
        # A binary CAS update with the text-side CAS succeeds; the stale one then fails.
        ok = b.request(P.set_(key, b"new", flags=1, cas=cas))
        assert ok.status == P.SUCCESS
        assert b.request(P.set_(key, b"old", cas=cas)).status == P.KEY_EXISTS
    assert text(b"cas " + key + b" 0 0 1 " + str(cas).encode() + b"\r\nz\r\n") == b"EXISTS\r\n"
    new_cas = str(ok.cas).encode()
    assert text(b"cas " + key + b" 2 0 1 " + new_cas + b"\r\nz\r\n") == b"STORED\r\n"
    with Connection(server.host, server.port) as b:
        hit = b.request(P.get(key))
        assert (hit.value, hit.flags) == (b"z", 2)


def test_counters_cross_protocols(server, text, key):
    with Connection(server.host, server.port) as b:
        created = b.request(P.counter(P.INCREMENT, key, 1, initial=40))
        assert created.counter == 40
    assert text(b"incr " + key + b" 2\r\n") == b"42\r\n"
    with Connection(server.host, server.port) as b:
        assert b.request(P.counter(P.DECREMENT, key, 2)).counter == 40
    assert text(b"get " + key + b"\r\n") == b"VALUE " + key + b" 0 2\r\n40\r\nEND\r\n"


# --- byte for byte against memcached ----------------------------------------

REFERENCE_EXCHANGES = {
    "unknown command": b"bogus\r\nBOGUS arg\r\n\r\n",
    "bad data chunk": b"set rk 0 0 3\r\nabcde\r\nget rk\r\n",
    "bad command line": b"set rk 0 0 notanumber\r\nset rk 0 0 -1\r\nget a\r\n",
    # Alone: memcached drops the earlier unsent replies of a batch when a get's key is too long.
    "key too long": b"get " + b"k" * 251 + b"\r\nget a\r\n",
    "too large": b"set big 0 0 2000000\r\n" + b"x" * 2_000_000 + b"\r\nget big\r\n",
    "too large noreply": b"set big 0 0 2000000 noreply\r\n" + b"x" * 2_000_000 + b"\r\n",
    "noreply": (
        b"set nr 5 0 1 noreply\r\nx\r\nadd nr 0 0 1 noreply\r\ny\r\n"
        b"append nr 0 0 1 noreply\r\nz\r\nincr nr 1 noreply\r\n"
        b"delete missing noreply\r\ntouch missing 1 noreply\r\nget nr\r\n"
        b"delete nr noreply\r\nget nr\r\n"
    ),
    "misses": (
        b"incr missing 1\r\ndecr missing 1\r\ntouch missing 1\r\ndelete missing\r\n"
        b"get missing\r\ngets missing\r\n"
    ),
    "non-numeric incr": b"set nn 0 0 1\r\na\r\nincr nn 1\r\nincr nn x\r\n",
    # No mn inside: text_exchange ends each exchange with its own and reads up to it.
    "meta miss": b"mg missing v\r\nmg missing v q\r\nmd missing\r\nma missing\r\n",
    "meta bad flags": b"ms mk S3\r\nabc\r\nmg\r\n",
}


@pytest.mark.parametrize("data", REFERENCE_EXCHANGES.values(), ids=REFERENCE_EXCHANGES.keys())
def test_raw_text_replies_match_memcached(start_server, memcached, data):
    # A fresh mbserver per case: the reference memcached only ever sees these keys.
    ours = start_server()
    text_exchange(memcached.host, memcached.port, b"flush_all\r\n")
    expected = text_exchange(memcached.host, memcached.port, data)
    actual = text_exchange(ours.host, ours.port, data)
    assert actual == expected


def test_connection_stays_usable_after_errors(text, key):
    k = key
    reply = text(b"bogus\r\nset %b 0 0 3\r\nabcde\r\nset %b 0 0 1\r\nv\r\nget %b\r\n" % (k, k, k))
    assert reply.endswith(b"STORED\r\nVALUE " + key + b" 0 1\r\nv\r\nEND\r\n"), reply

"""What operators see, side by side with memcached 1.6.18: stat groups, detail stats, key dumps.

Each group's field names are compared with a live memcached holding the same
items (the per-class suffixes for items and slabs, the per-connection ones
for conns); detail stats, the lru_crawler commands and the dumps with
memcached's replies to the same requests. Then what a comparison cannot
show: a dump of many items is streamed without stalling other clients, and
a crawl really reclaims expired items.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from .. import memcached_stats as MC
from .. import packets as P
from .support import Launcher
from .wire import Connection

IO_TIMEOUT = 10.0

# The same items on both servers: class 1 (small, with and without flags and
# expiry) and class 17 (3,000-byte values).
ITEMS = (
    b"set a:1 0 0 1\r\nx\r\nset a:2 5 100 10\r\n0123456789\r\nset b 0 0 2\r\nxy\r\n"
    b"set big:1 0 0 3000\r\n" + b"y" * 3000 + b"\r\n"
    b"set big:2 3 0 3000\r\n" + b"z" * 3000 + b"\r\n"
    b"get a:1 big:1 nope\r\n"
)


def text(server, data: bytes, until: bytes = b"END\r\n") -> bytes:
    """Send `data` on a connection of its own and read until the reply ends with `until`."""
    with socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT) as s:
        s.sendall(data)
        return read_until(s, until)


def read_until(sock: socket.socket, until: bytes) -> bytes:
    chunks = [b""]
    while not (chunks[-1] if len(chunks[-1]) >= len(until) else b"".join(chunks)).endswith(until):
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed before {until!r}; received {b''.join(chunks)[-200:]!r}"
        chunks.append(chunk)
    return b"".join(chunks)


def group(server, name: bytes = b"") -> list[tuple[str, str]]:
    reply = text(server, b"stats %b\r\n" % name if name else b"stats\r\n")
    lines = reply.decode().split("\r\n")
    assert lines[-2:] == ["END", ""]
    pairs = []
    for line in lines[:-2]:
        fields = line.split(" ")
        assert len(fields) == 3 and fields[0] == "STAT", f"not STAT name value: {line!r}"
        pairs.append((fields[1], fields[2]))
    return pairs


def names(pairs) -> list[str]:
    return [name for name, _ in pairs]


def per_class(pairs, pattern: str) -> dict[str, list[str]]:
    """The suffixes each class prints, by class: pattern matches (class, suffix)."""
    classes: dict[str, list[str]] = {}
    for name in names(pairs):
        match = re.fullmatch(pattern, name)
        if match:
            classes.setdefault(match.group(1), []).append(match.group(2))
    return classes


@pytest.fixture(scope="module")
def pair():
    """mbserver and memcached with the same settings (memcached's `stats sizes`
    histogram on, as mbserver's is), holding the same items."""
    ours, theirs = Launcher("mbserver"), Launcher("memcached")
    servers = ours.start(), theirs.start("-o", "track_sizes")
    for server in servers:
        text(server, ITEMS)
    yield servers
    ours.stop_all()
    theirs.stop_all()


# -- field names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [b"", b"settings"])
def test_general_and_settings_names_are_memcacheds(pair, name):
    ours, theirs = (names(group(server, name)) for server in pair)
    assert ours == theirs
    assert tuple(ours) == (MC.SETTINGS if name else MC.GENERAL)


def test_items_and_slabs_names_are_memcacheds(pair):
    ours, theirs = (group(server, b"items") for server in pair)
    ours, theirs = per_class(ours, r"items:(\d+):(\w+)"), per_class(theirs, r"items:(\d+):(\w+)")
    assert sorted(ours) == sorted(theirs) == ["1", "17"]
    assert ours == theirs
    ours, theirs = (group(server, b"slabs") for server in pair)
    assert [n for n in names(ours) if ":" not in n] == list(MC.SLABS_TOTALS)
    assert [n for n in names(ours) if ":" not in n] == [n for n in names(theirs) if ":" not in n]
    assert per_class(ours, r"(\d+):(\w+)") == per_class(theirs, r"(\d+):(\w+)")


def test_items_and_slabs_values_agree_with_memcached(pair):
    ours, theirs = (dict(group(server, b"items")) for server in pair)
    for name in ("items:1:number", "items:17:number", "items:1:mem_requested",
                 "items:17:mem_requested", "items:1:evicted"):  # fmt: skip
        assert ours[name] == theirs[name], name
    ours, theirs = (dict(group(server, b"slabs")) for server in pair)
    for name in ("1:chunk_size", "17:chunk_size", "1:chunks_per_page", "1:total_pages",
                 "1:used_chunks", "17:used_chunks", "17:total_pages", "active_slabs",
                 "total_malloced"):  # fmt: skip
        assert ours[name] == theirs[name], name


def test_sizes_names_are_memcacheds(pair):
    ours, theirs = (group(server, b"sizes") for server in pair)
    assert ours == theirs  # the same items: the same buckets and counts


def test_conns_names_are_memcacheds(pair):
    for server in pair:
        pairs = group(server, b"conns")
        listeners = [s for s, v in per_class(pairs, r"(\d+):(\w+)").items()]
        states = {ident: dict(pairs)[f"{ident}:state"] for ident in listeners}
        by_kind = {
            "listener" if state == "conn_listening" else "client": per_class(
                pairs, rf"({ident}):(\w+)"
            )[ident]
            for ident, state in states.items()
        }
        assert by_kind == {"listener": list(MC.LISTENER), "client": list(MC.CONNECTION)}, server.kind


@pytest.mark.parametrize("name", [b"", b"settings", b"items", b"slabs", b"sizes"])
def test_binary_stat_gives_the_text_groups_names(pair, name):
    ours = pair[0]
    with Connection(ours.host, ours.port) as conn:
        replies = conn.sync(P.request(P.STAT, name, opaque=3))
    assert replies[-1].key == b"" and replies[-1].status == P.SUCCESS
    assert [r.key.decode() for r in replies[:-1]] == names(group(ours, name))


# -- detail stats -------------------------------------------------------------------------

DETAIL = (
    b"stats detail on\r\nset a:1 0 0 1\r\nx\r\nset a:2 0 100 2\r\nxy\r\nset b:1 7 0 1\r\nx\r\n"
    b"set nokey 0 0 1\r\nx\r\nget a:1 a:3 nokey\r\ndelete a:9\r\ndelete a:1\r\nincr b:1 1\r\n"
    b"touch a:2 10\r\ngets a:2\r\nset x:y:z 0 0 1\r\n1\r\nset :foo 0 0 1\r\n1\r\nget foo:\r\n"
    b"stats detail\r\nstats detail foo\r\nstats detail off\r\nmn\r\n"
)


def test_detail_stats_are_memcacheds(start_server):
    ours, theirs = start_server(), Launcher("memcached")
    try:
        reference = theirs.start()
        expected = text(reference, DETAIL, until=b"MN\r\n")
        expected_dump = text(reference, b"stats detail dump\r\n")
    finally:
        theirs.stop_all()
    assert text(ours, DETAIL, until=b"MN\r\n") == expected
    # memcached lists prefixes in its hash table's order, mbserver as it met them.
    dump = text(ours, b"stats detail dump\r\n")
    assert sorted(dump.split(b"\r\n")) == sorted(expected_dump.split(b"\r\n"))
    assert dump.count(b"PREFIX ") == 5


def test_binary_detail_stats(start_server):
    server = start_server()
    with Connection(server.host, server.port) as conn:
        on = conn.sync(P.request(P.STAT, b"detail on", opaque=1))
        assert [(r.status, r.key) for r in on] == [(P.SUCCESS, b"")]
        conn.sync(P.set_(b"p:1", b"v") + P.get(b"p:1") + P.request(P.DELETE, b"p:2"))
        dump = conn.sync(P.request(P.STAT, b"detail dump", opaque=2))
        assert [(r.key, r.value) for r in dump] == [
            (b"detailed", b"PREFIX p get 1 hit 1 set 1 del 1\r\nEND\r\n"),
            (b"", b""),
        ]
        assert conn.sync(P.request(P.STAT, b"detail", opaque=3))[0].status == P.KEY_NOT_FOUND


# -- the lru_crawler commands and the dumps --------------------------------------------------

CRAWLER = [
    b"lru_crawler metadump 0\r\n",
    b"lru_crawler metadump 64\r\n",
    b"lru_crawler metadump abc\r\n",
    b"lru_crawler metadump 63\r\n",
    b"lru_crawler metadump\r\n",
    b"lru_crawler crawl all\r\n",
    b"lru_crawler crawl 0\r\n",
    b"lru_crawler tocrawl 10\r\n",
    b"lru_crawler tocrawl x\r\n",
    b"lru_crawler sleep 1000001\r\n",
    b"lru_crawler enable\r\n",
    b"lru_crawler disable\r\n",
    b"lru_crawler metadump all\r\n",
    b"lru_crawler crawl 1\r\n",
    b"lru_crawler enable\r\n",
    b"lru_crawler bogus\r\n",
    b"stats cachedump 1\r\n",
    b"stats cachedump a b\r\n",
    b"stats cachedump 64 0\r\n",
    b"stats cachedump 63 0\r\n",
]


def test_crawler_replies_are_memcacheds(start_server):
    ours = start_server()
    theirs = Launcher("memcached")
    try:
        reference = theirs.start()
        for request in CRAWLER:
            # One request per connection: memcached hands a metadump's
            # connection to its crawler thread.
            expected = text(reference, request, until=b"\r\n")
            assert text(ours, request, until=b"\r\n") == expected, request
            if request == b"lru_crawler disable\r\n":
                _crawler_stopped(reference)
    finally:
        theirs.stop_all()


def _crawler_stopped(reference) -> None:
    """Wait until memcached's crawler thread has gone after its OK to `lru_crawler disable`.

    The thread clears the setting as it exits, so until then a metadump
    finds it stopping and answers ``ERROR an unknown error happened``;
    after, ``CLIENT_ERROR lru crawler disabled``, as mbserver does at once.
    """
    deadline = time.monotonic() + 10
    while dict(group(reference, b"settings"))["lru_crawler"] != "no":
        assert time.monotonic() < deadline, "memcached's crawler thread did not stop"
        time.sleep(0.01)


def dump_fields(reply: bytes) -> list[dict[str, str]]:
    lines = reply.split(b"\n")
    assert lines[-2:] == [b"END\r", b""]
    return [dict(f.split("=", 1) for f in line.decode().split(" ")) for line in lines[:-2]]


def test_dumps_show_what_memcached_shows(start_server):
    ours = start_server()
    theirs = Launcher("memcached")
    try:
        # A flat LRU on memcached, as mbserver's: cachedump then sees every item at once.
        reference = theirs.start("-o", "no_lru_maintainer")
        results = []
        for server in (reference, ours):
            text(server, b"me nope\r\n" + ITEMS.replace(b"get ", b"mg big:2 v\r\nget "))
            time.sleep(0.05)
            results.append(
                (
                    text(server, b"lru_crawler metadump all\r\n"),
                    text(server, b"stats cachedump 1 0\r\n"),
                    text(server, b"stats cachedump 17 1\r\n"),
                )
            )
    finally:
        theirs.stop_all()
    (meta_theirs, one_theirs, big_theirs), (meta_ours, one_ours, big_ours) = results

    def comparable(fields):
        # Same keys, classes, sizes and fetched marks; times and CAS values may differ.
        return sorted((f["key"], f["cls"], f["size"], f["fetch"], f["exp"] == "-1") for f in fields)

    assert comparable(dump_fields(meta_ours)) == comparable(dump_fields(meta_theirs))
    expiry = re.compile(rb"; \d{9,} s\]")
    assert expiry.sub(b"; T s]", one_ours) == expiry.sub(b"; T s]", one_theirs)
    assert big_ours == big_theirs == b"ITEM big:2 [3000 b; 0 s]\r\nEND\r\n"


def test_a_big_dump_does_not_stall_other_clients(start_server):
    server = start_server()
    count = 100_000  # more than the socket buffers hold: the dump waits for its reader
    with socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT) as s:
        s.sendall(b"".join(b"set key:%06d 0 0 5 noreply\r\nvalue\r\n" % i for i in range(count)))
        s.sendall(b"mn\r\n")
        read_until(s, b"MN\r\n")
    dumper = socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT)
    dumper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    dumper.sendall(b"lru_crawler metadump all\r\n")
    time.sleep(0.3)  # the dump fills the socket buffers and waits for its reader
    worst = 0.0
    with socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT) as other:
        for i in range(20):  # writes: they would wait for a dump that held the lock
            started = time.monotonic()
            other.sendall(b"set new:%d 0 0 1\r\nx\r\nget key:%06d\r\n" % (i, i))
            read_until(other, b"END\r\n")
            worst = max(worst, time.monotonic() - started)
        other.sendall(b"stats\r\n")
        assert b"STAT lru_crawler_running 1\r\n" in read_until(other, b"END\r\n")  # still dumping
    received = read_until(dumper, b"END\r\n")
    dumper.close()
    assert worst < 0.5, f"a get waited {worst:.3f} s beside a dump"
    assert received.count(b"\n") == count + 1
    assert received.startswith(b"key=key%3A000000 ")


def test_crawl_reclaims_expired_items(start_server):
    server = start_server()
    text(server, b"".join(b"set t:%d 0 1 1 noreply\r\nx\r\n" % i for i in range(50)) + b"mn\r\n",
         until=b"MN\r\n")  # fmt: skip
    text(server, b"set keep 0 0 1\r\nx\r\n", until=b"STORED\r\n")
    time.sleep(2.1)  # memcached's clock has whole seconds: expired by then
    assert text(server, b"lru_crawler crawl all\r\n", until=b"\r\n") == b"OK\r\n"
    deadline = time.monotonic() + 5
    while (values := dict(group(server)))["curr_items"] != "1":
        assert time.monotonic() < deadline, values["curr_items"]
        time.sleep(0.05)
    assert values["crawler_reclaimed"] == "50"
    assert values["crawler_items_checked"] == "51"
    assert values["lru_crawler_starts"] == "1"


def test_stats_conns_lists_each_client(start_server):
    server = start_server()
    clients = [socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT)
               for _ in range(3)]  # fmt: skip
    try:
        for c in clients:
            c.sendall(b"version\r\n")
            read_until(c, b"\r\n")
        values = dict(group(server, b"conns"))
        addresses = {f"tcp:127.0.0.1:{c.getsockname()[1]}" for c in clients}
        assert addresses <= set(values.values())
        assert f"tcp:127.0.0.1:{server.port}" in set(values.values())
    finally:
        for c in clients:
            c.close()

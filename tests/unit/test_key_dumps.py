"""Unit tests for the key dumps (`lru_crawler metadump`, `stats cachedump`).

memcached's replies to bad and empty dumps are among test_text_commands'
TRANSCRIPTS; the dumps' lines are memcached 1.6.18's. The dumps are
streamed: each slice of items is sent before the next is read, with the
store lock free and other greenlets let in between. No sockets: requests go
through TextProtocol, whose send callback the tests watch.
"""

from __future__ import annotations

import gevent

from mbserver.crawler import SLICE
from mbserver.protocol.dumps import CACHEDUMP_MAX, cachedump_line, metadump_line
from mbserver.record import pack
from mbserver.store import KEY_BINARY

from .conftest import T0
from .textclient import Client


def fill(client: Client, count: int, prefix: bytes = b"k", value: bytes = b"v") -> None:
    client.send(b"".join(b"set %b%d 0 0 %d noreply\r\n%b\r\n" % (prefix, i, len(value), value)
                         for i in range(count)))  # fmt: skip


# -- the lines --------------------------------------------------------------------


def test_metadump_line_is_memcacheds():
    rec = pack(b"x", flags=5, exptime=1796074736, cas=15, atime=1796073736)
    assert metadump_line(b"k~-._!*'()az/?:", rec, 1, True) == (
        b"key=k~-._%21%2A%27%28%29az%2F%3F%3A exp=1796074736 la=1796073736 cas=15 "
        b"fetch=yes cls=1 size=79\n"
    )
    never = pack(b"", flags=0, exptime=0, cas=1, atime=7)
    assert metadump_line(b"bin\x01key", never, 3, False) == (
        b"key=bin%01key exp=-1 la=7 cas=1 fetch=no cls=3 size=66\n"
    )


def test_cachedump_line_is_memcacheds():
    assert cachedump_line(b"a:2", pack(b"xy", 0, 1796073520, 1, 0)) == (
        b"ITEM a:2 [2 b; 1796073520 s]\r\n"
    )
    assert cachedump_line(b"nul\0cut", pack(b"", 0, 0, 1, 0)) == b"ITEM nul [0 b; 0 s]\r\n"


# -- refusals ---------------------------------------------------------------------------


def test_a_disabled_crawler_refuses_metadumps(client):
    assert client.send(b"lru_crawler disable\r\n") == b"OK\r\n"
    disabled = b"CLIENT_ERROR lru crawler disabled\r\n"
    assert client.send(b"lru_crawler metadump all\r\n") == disabled
    assert client.send(b"lru_crawler metadump 0\r\n") == disabled  # before the class check
    assert client.send(b"lru_crawler enable\r\n") == b"OK\r\n"
    assert client.send(b"lru_crawler metadump all\r\n") == b"END\r\n"


def test_a_metadump_after_other_commands_in_one_read_is_refused(client):
    assert client.send(b"set a 0 0 1\r\nx\r\nlru_crawler metadump all\r\n") == (
        b"STORED\r\nERROR cannot pipeline other commands before metadump\r\n"
    )


# -- dumps ---------------------------------------------------------------------------


def test_metadump_shows_live_items_oldest_first(client, clock):
    client.store.track_fetches()
    client.send(b"set a:1 0 0 1\r\nx\r\nset b 5 100 10\r\n0123456789\r\n")
    client.send(b"set gone 0 1 1\r\nx\r\nset big 0 0 3000\r\n" + b"x" * 3000 + b"\r\n")
    client.send(b"get a:1\r\n")
    clock.advance(2)
    t0 = int(T0)
    assert client.send(b"lru_crawler metadump all\r\n") == (
        b"key=a%%3A1 exp=-1 la=%d cas=1 fetch=yes cls=1 size=63\n"
        b"key=b exp=%d la=%d cas=2 fetch=no cls=1 size=74\n"
        b"key=big exp=-1 la=%d cas=4 fetch=no cls=17 size=3062\n"
        b"END\r\n" % (t0, t0 + 100, t0, t0)
    )
    assert client.send(b"lru_crawler metadump 17\r\n").startswith(b"key=big ")
    assert client.send(b"lru_crawler metadump hash\r\n").count(b"\n") == 4


def test_cachedump_shows_a_class_newest_first(client):
    client.send(b"set a 0 0 1\r\nx\r\nset b 0 100 2\r\nxy\r\nset big 0 0 3000\r\n")
    client.send(b"x" * 3000 + b"\r\nms Zm9vYmFy 2 b\r\nhi\r\n")  # binary keys are skipped
    expiry = int(T0) + 100
    assert client.send(b"stats cachedump 1 0\r\n") == (
        b"ITEM b [2 b; %d s]\r\nITEM a [1 b; 0 s]\r\nEND\r\n" % expiry
    )
    assert client.send(b"stats cachedump 1 1\r\n") == b"ITEM b [2 b; %d s]\r\nEND\r\n" % expiry
    assert client.send(b"stats cachedump 17 5\r\n") == b"ITEM big [3000 b; 0 s]\r\nEND\r\n"
    assert client.store.marks(b"foobar") & KEY_BINARY


def test_cachedump_stops_where_memcacheds_buffer_would(client):
    key = b"k" * 240
    fill(client, 9000, prefix=key)  # items of 59 + 244 + 1 bytes: class 6
    reply = client.send(b"stats cachedump 6 0\r\n")
    assert reply.endswith(b"\r\nEND\r\n")
    lines = reply.count(b"\r\n") - 1
    line = len(b"ITEM %b0000 [1 b; 0 s]\r\n" % key)
    assert lines < 9000 and len(reply) - 5 <= CACHEDUMP_MAX - 6 < len(reply) - 5 + line


# -- streaming --------------------------------------------------------------------------


def test_a_dump_is_sent_a_slice_at_a_time_with_the_lock_free(client):
    fill(client, 3 * SLICE + 10)
    sends = []
    others = []

    def send(out):
        assert not client.lock.locked  # nothing is held while the socket is used
        sends.append(b"".join(out))
        out.clear()
        others.append(gevent.spawn(lambda: None))  # runs before the next slice is read

    client.on_send = send
    client.send(b"lru_crawler metadump all\r\n")
    assert len(sends) == 5  # four slices, then the END
    assert sends[-1] == b"END\r\n"
    assert sum(chunk.count(b"\n") for chunk in sends[:-1]) == 3 * SLICE + 10
    assert all(greenlet.dead for greenlet in others[:-1])
    assert client.commands.crawler.starts == 1 and not client.commands.crawler.running


def test_items_changed_between_slices_are_shown_as_they_are_then(client):
    fill(client, 2 * SLICE)

    def send(out):
        out.clear()
        client.store.delete(b"k%d" % (2 * SLICE - 1))  # deleted before its slice is read

    client.on_send = send
    seen = []
    real = client.commands.dump

    def dump(request):
        for entries in real(request):
            seen.extend(key for key, *_ in entries)
            yield entries

    client.commands.dump = dump
    client.send(b"lru_crawler metadump all\r\n")
    assert len(seen) == 2 * SLICE - 1 and b"k%d" % (2 * SLICE - 1) not in seen

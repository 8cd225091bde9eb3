"""Unit tests for `stats detail on|off|dump`: per-prefix counts, in both protocols.

The expected dumps are memcached 1.6.18's, recorded on loopback for the same
requests (as sets of lines: memcached prints its prefixes in hash-table
order, mbserver in the order it first saw them). No sockets: requests go
through TextProtocol and BinaryProtocol with the command layer.
"""

from __future__ import annotations

import pytest

from mbserver.commands import Commands, GetMany
from mbserver.config import Settings
from mbserver.protocol.binary import BinaryProtocol
from mbserver.rwlock import RWLock
from mbserver.stats import PrefixStats, Stats
from mbserver.store import Store

from .. import packets as P
from .textclient import Client


def dump_lines(text: bytes) -> set[bytes]:
    *lines, end = text.split(b"\r\n")[:-1]
    assert end == b"END"
    return set(lines)


# -- the table ------------------------------------------------------------------


def test_a_prefix_ends_at_the_first_delimiter():
    stats = PrefixStats(":")
    stats.record_set(b"a:b:c")
    stats.record_set(b":lead")
    stats.record_get(b"a:x", True)
    stats.record_get(b"a:y", False)
    stats.record_delete(b"plain")  # no delimiter: not counted
    stats.record_delete(b"n\0ul:x")  # memcached reads a C string: it ends at the NUL
    assert stats.dump() == (
        b"PREFIX a get 2 hit 1 set 1 del 0\r\n"
        b"PREFIX  get 0 hit 0 set 1 del 0\r\n"  # the empty prefix, as memcached prints it
        b"END\r\n"
    )


def test_the_table_stops_growing_at_memcacheds_limit():
    stats = PrefixStats("#")
    for i in range(PrefixStats.MAX_PREFIXES + 10):
        stats.record_set(b"%d#k" % i)
    stats.record_set(b"0#k")  # known prefixes still count
    dump = stats.dump()
    assert dump.count(b"\r\n") == PrefixStats.MAX_PREFIXES + 1
    assert dump.startswith(b"PREFIX 0 get 0 hit 0 set 2 del 0\r\n")
    stats.clear()
    assert stats.dump() == b"END\r\n"


# -- the text protocol ----------------------------------------------------------


def test_text_replies_and_counts_are_memcacheds(clock):
    client = Client(clock)
    assert client.send(b"stats detail dump\r\n") == b"END\r\n"
    assert client.send(b"stats detail on\r\n") == b"OK\r\n"
    client.send(
        b"set a:1 0 0 1\r\nx\r\nset a:2 0 100 2\r\nxy\r\nset b:1 7 0 1\r\nx\r\n"
        b"set nokey 0 0 1\r\nx\r\nget a:1 a:3 nokey\r\ndelete a:9\r\ndelete a:1\r\n"
        b"incr b:1 1\r\ntouch a:2 10\r\ngets a:2\r\nset x:y:z 0 0 1\r\n1\r\n"
        b"set :foo 0 0 1\r\n1\r\nget  foo:\r\n"
    )
    assert dump_lines(client.send(b"stats detail dump\r\n")) == {
        b"PREFIX  get 0 hit 0 set 1 del 0",
        b"PREFIX b get 0 hit 0 set 1 del 0",
        b"PREFIX x get 0 hit 0 set 1 del 0",
        b"PREFIX foo get 1 hit 0 set 0 del 0",
        b"PREFIX a get 3 hit 2 set 2 del 2",
    }
    usage = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
    assert client.send(b"stats detail\r\n") == usage
    assert client.send(b"stats detail foo\r\n") == usage
    assert client.send(b"stats detail on extra\r\n") == b"OK\r\n"
    assert client.send(b"stats detail off\r\n") == b"OK\r\n"
    client.send(b"get a:1\r\n")  # off: not counted, but the counts stay
    assert b"PREFIX a get 3 hit 2 set 2 del 2\r\n" in client.send(b"stats detail dump\r\n")


def test_text_gat_and_refused_sets_count_meta_commands_do_not(clock):
    client = Client(clock, max_item_size=1024)
    client.send(b"stats detail on\r\n")
    client.send(
        b"set s:1 0 0 1\r\n1\r\ngat 10 s:1 g:2\r\ngats 10 s:1\r\nmg s:1 v\r\n"
        b"ms m:1 1\r\nx\r\nmd m:1\r\nma m:2\r\nme s:1\r\nmg zz:1 v\r\n"
        b"append s:1 0 0 1\r\nx\r\ncas s:1 0 0 1 1\r\nx\r\n"
        b"set big:1 0 0 2000\r\n" + b"x" * 2000 + b"\r\n"
    )
    assert dump_lines(client.send(b"stats detail dump\r\n")) == {
        b"PREFIX g get 1 hit 0 set 0 del 0",
        b"PREFIX big get 0 hit 0 set 1 del 0",
        b"PREFIX s get 2 hit 2 set 3 del 0",
    }


def test_the_delimiter_is_a_setting(clock):
    client = Client(clock, prefix_delimiter="#")
    client.send(b"stats detail on\r\nset a#1 0 0 1\r\nx\r\nset b:1 0 0 1\r\nx\r\n")
    assert client.send(b"stats detail dump\r\n") == b"PREFIX a get 0 hit 0 set 1 del 0\r\nEND\r\n"


# -- the binary protocol ----------------------------------------------------------


class BinaryClient:
    """A binary connection's protocol object and command layer, without the socket."""

    def __init__(self, clock):
        settings = Settings()
        self.store = Store(clock=clock)
        self.lock = RWLock()
        self.commands = Commands(self.store, self.lock, Stats(clock), settings)
        self.protocol = BinaryProtocol(self.commands, settings, None, "test")

    def send(self, data: bytes) -> list[P.Response]:
        out: list = []
        self.protocol.parser.feed(data)
        while (request := self.protocol.parser.next()) is not None:
            if request.__class__ is GetMany:
                self.protocol.answer_gets(request, out, 0)
            else:
                self.protocol.answer(request, out)
            while self.protocol.unfinished is not None:
                self.protocol.resume(out)
        return P.responses(b"".join(bytes(part) for part in out))


def stat(client: BinaryClient, key: bytes) -> list[tuple[int, bytes, bytes]]:
    return [(r.status, r.key, r.value) for r in client.send(P.request(P.STAT, key, opaque=7))]


TERMINATOR = [(P.SUCCESS, b"", b"")]
NOT_FOUND = [(P.KEY_NOT_FOUND, b"", b"Not found")]


@pytest.mark.parametrize(
    ("key", "reply"),
    [
        (b"detail on", TERMINATOR),
        (b"detail onx", TERMINATOR),  # memcached compares only the first letters
        (b"detail off", TERMINATOR),
        (b"detail", NOT_FOUND),
        (b"detail foo", NOT_FOUND),
        (b"detailfoo", NOT_FOUND),
        (b"detail dump", [(P.SUCCESS, b"detailed", b"END\r\n")] + TERMINATOR),
    ],
)
def test_binary_stat_keys_as_memcached_reads_them(clock, key, reply):
    assert stat(BinaryClient(clock), key) == reply


def test_binary_counts_are_memcacheds(clock):
    client = BinaryClient(clock)
    stat(client, b"detail on")
    client.send(
        P.set_(b"s:1", b"1")
        + P.request(P.APPEND, b"ap:1", value=b"x")
        + P.request(P.APPEND, b"s:1", value=b"x")
        + P.request(P.PREPEND, b"pp:1", value=b"x")
        + P.get(b"g:1")
        + P.get(b"s:1", P.GETK)
        + P.get(b"q:1", P.GETQ)
        + P.request(P.TOUCH, b"t:1", extras=P.expiry_extras(10))
        + P.request(P.TOUCH, b"s:1", extras=P.expiry_extras(10))
        + P.request(P.GAT, b"gat:1", extras=P.expiry_extras(10))
        + P.request(P.DELETE, b"d:1")
        + P.counter(P.INCREMENT, b"i:1", 1)
        + P.set_(b"add:1", b"1", opcode=P.ADD)
        + P.set_(b"rep:1", b"1", opcode=P.REPLACE)
        + P.set_(b"cas:1", b"1", cas=99)
        + P.noop()
    )
    (status, key, value), *rest = stat(client, b"detail dump")
    assert (status, key, rest) == (P.SUCCESS, b"detailed", TERMINATOR)
    assert dump_lines(value) == {
        b"PREFIX pp get 0 hit 0 set 1 del 0",
        b"PREFIX g get 1 hit 0 set 0 del 0",
        b"PREFIX add get 0 hit 0 set 1 del 0",
        b"PREFIX cas get 0 hit 0 set 1 del 0",
        b"PREFIX gat get 1 hit 0 set 0 del 0",
        b"PREFIX ap get 0 hit 0 set 1 del 0",
        b"PREFIX t get 1 hit 0 set 0 del 0",
        b"PREFIX d get 0 hit 0 set 0 del 1",
        b"PREFIX rep get 0 hit 0 set 1 del 0",
        b"PREFIX q get 1 hit 0 set 0 del 0",
        b"PREFIX s get 2 hit 2 set 2 del 0",
    }


def test_a_key_that_is_not_utf8_dumps_as_it_is(clock):
    client = BinaryClient(clock)
    stat(client, b"detail on")
    client.send(P.set_(b"\xff\xfe:1", b"1") + P.noop())
    assert stat(client, b"detail dump")[0][2] == b"PREFIX \xff\xfe get 0 hit 0 set 1 del 0\r\nEND\r\n"


@pytest.mark.parametrize(
    ("key", "group"),
    [
        (b"resetx", b"reset"),  # memcached compares reset, settings and detail by prefix
        (b"settingsx", b"settings"),
        (b"items", b"items"),
        (b"items x", None),  # ... and every other group by the whole key
        (b"cachedump 1 1", None),
    ],
)
def test_other_binary_stat_keys_as_memcached_reads_them(clock, key, group):
    client = BinaryClient(clock)
    client.send(P.set_(b"k", b"v") + P.noop())
    replies = stat(client, key)
    if group is None:
        assert replies == NOT_FOUND
    else:
        assert replies == stat(client, group)
        assert replies[-1] == TERMINATOR[0] and (len(replies) > 1 or group == b"reset")


def test_binary_sizes_switches_send_no_terminator_as_memcached(clock):
    client = BinaryClient(clock)
    assert stat(client, b"sizes_disable") == [(P.SUCCESS, b"sizes_status", b"disabled")]
    assert stat(client, b"sizes") == [(P.SUCCESS, b"sizes_status", b"disabled")] + TERMINATOR
    assert stat(client, b"sizes_enable") == [(P.SUCCESS, b"sizes_status", b"enabled")]

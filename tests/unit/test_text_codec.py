"""Unit tests for mbserver.protocol.text: bytes in → requests; results → bytes.

No sockets, no store: every input is fed whole, byte by byte, in odd-sized
chunks, and with another command trailing behind it, as the binary codec's
tests do. The expected errors, limits and number quirks were read off
memcached 1.6.18 on loopback (tests/unit/test_text_commands.py replays whole
transcripts of it through the command layer).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbserver import PROTOCOL_VERSION
from mbserver.commands import (
    ADMIN_BAD_MODE,
    ADMIN_DISABLED,
    ADMIN_FAILED,
    ADMIN_OK,
    NO_CAS_MATCH,
    AdminRequest,
    AdminResult,
    FlushRequest,
    GetMany,
    MetaRequest,
    MetaResult,
    Request,
    Result,
    StatsRequest,
)
from mbserver.protocol.ascii import Reply, b64decode, strtol32, strtoul32, strtoull
from mbserver.protocol.text import (
    ProtocolError,
    TextGets,
    TextParser,
    get_reply,
    lone_reader,
    store_reply,
    write_text,
    write_text_gets,
)
from mbserver.record import Item, pack as record
from mbserver.store import (
    EXISTS,
    NO_MEMORY,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    OK,
    TOO_LARGE,
)

from ..lone import assert_lone_reads_as_next

MN = Reply(b"MN\r\n")


def reply(line: bytes) -> Reply:
    """What the parser returns for a reply it makes itself."""
    return Reply(line + b"\r\n")


ERROR = reply(b"ERROR")
BAD_FORMAT = reply(b"CLIENT_ERROR bad command line format")


def pieces(data: bytes, size: int | None) -> list[bytes]:
    if size is None:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]


def parse(data: bytes, size: int | None = None, max_item_size: int = 1 << 20) -> list:
    """Every request in data, fed in pieces of ``size`` bytes (None: whole)."""
    parser = TextParser(max_item_size)
    found = []
    for piece in pieces(data, size):
        parser.feed(piece)
        while (request := parser.next()) is not None:
            found.append(request)
    return found


WAYS = [None, 1, 7]  # whole, byte by byte, and in chunks that split tokens


def get(*keys: bytes, **context) -> GetMany:
    return GetMany(list(keys), TextGets(**context))


def meta(command: str, key: bytes, *flags: bytes, **fields) -> MetaRequest:
    return MetaRequest(
        command,
        key,
        order="".join(chr(flag[0]) for flag in flags),
        context=list(flags),
        **fields,
    )


# -- each command, fed every way --------------------------------------------

PARSED = [
    # retrieval
    (b"get a\r\n", [get(b"a")]),
    (b"get a b  c\r\n", [get(b"a", b"b", b"c")]),
    (b"gets a b\r\n", [get(b"a", b"b", cas=True)]),
    (b"bget a\r\n", [get(b"a")]),
    (b"gat 100 a b\r\n", [get(b"a", b"b", touch=True, exptime=100)]),
    (b"gats -1 a\r\n", [get(b"a", cas=True, touch=True, exptime=-1)]),
    (b"gat 10\r\n", [get(touch=True, exptime=10)]),
    (b"  get a\n", [get(b"a")]),  # leading spaces; a bare \n ends a line too
    (b"get noreply\r\n", [get(b"noreply")]),  # get has no noreply
    (b"get a\r\r\n", [get(b"a\r")]),  # only one \r goes
    (b"get a\tb\r\n", [get(b"a\tb")]),  # only spaces separate tokens
    (b"get a\0b c\r\n", [get(b"a")]),  # memcached reads a C string
    (b"get " + b"k " * 30 + b"\r\n", [get(*[b"k"] * 30)]),  # past 24 tokens
    # storage
    (b"set a 5 100 3\r\nxyz\r\n", [Request("set", b"a", b"xyz", 5, 100)]),
    (b"set a 0 0 0\r\n\r\n", [Request("set", b"a", b"")]),
    (b"set a 0 0 2\r\n\r\n\r\n", [Request("set", b"a", b"\r\n")]),
    (b"set a 0 0 1 noreply\r\nx\r\n", [Request("set", b"a", b"x", quiet=True)]),
    (b"set a 0 0 1 extra\r\nx\r\n", [Request("set", b"a", b"x")]),  # not noreply: ignored
    (b"add a 1 2 1\r\nx\r\n", [Request("add", b"a", b"x", 1, 2)]),
    (b"replace a 0 0 1\r\nx\r\n", [Request("replace", b"a", b"x")]),
    (b"append a 9 9 1\r\nx\r\n", [Request("append", b"a", b"x", 9, 9)]),
    (b"prepend a 0 0 1\nx\r\n", [Request("prepend", b"a", b"x")]),
    (b"cas a 0 0 1 77\r\nx\r\n", [Request("replace", b"a", b"x", cas=77)]),
    (b"cas a 0 0 1 0\r\nx\r\n", [Request("replace", b"a", b"x", cas=NO_CAS_MATCH)]),
    (b"cas a 0 0 1 7 noreply\r\nx\r\n", [Request("replace", b"a", b"x", cas=7, quiet=True)]),
    # numbers as memcached's C parsing reads them
    (b"set a +5 -1 +1\r\nx\r\n", [Request("set", b"a", b"x", 5, -1)]),
    (b"set a 4294967296 0 1\r\nx\r\n", [Request("set", b"a", b"x", 0)]),
    (b"set a 0 2147483648 1\r\nx\r\n", [Request("set", b"a", b"x", 0, -(1 << 31))]),
    (b"set a 0 0 4294967297\r\nx\r\n", [Request("set", b"a", b"x")]),
    (b"set a 5\t 0\t 1\t\r\nx\r\n", [Request("set", b"a", b"x", 5)]),
    # the rest
    (b"delete a\r\n", [Request("delete", b"a")]),
    (b"delete a 0\r\n", [Request("delete", b"a")]),
    (b"delete a noreply\r\n", [Request("delete", b"a", quiet=True)]),
    (b"delete a 0 noreply\r\n", [Request("delete", b"a", quiet=True)]),
    (b"incr a 5\r\n", [Request("incr", b"a", delta=5)]),
    (b"decr a 18446744073709551615\r\n", [Request("decr", b"a", delta=(1 << 64) - 1)]),
    (b"incr a 1 noreply\r\n", [Request("incr", b"a", delta=1, quiet=True)]),
    (b"incr a 1 foo\r\n", [Request("incr", b"a", delta=1)]),
    (b"touch a 10\r\n", [Request("touch", b"a", exptime=10)]),
    (b"touch a 10 noreply\r\n", [Request("touch", b"a", exptime=10, quiet=True)]),
    (b"flush_all\r\n", [FlushRequest()]),
    (b"flush_all 30\r\n", [FlushRequest(30)]),
    (b"flush_all noreply\r\n", [FlushRequest(quiet=True)]),
    (b"flush_all 30 noreply\r\n", [FlushRequest(30, quiet=True)]),
    (b"flush_all 30 x\r\n", [FlushRequest(30)]),
    (b"stats\r\n", [StatsRequest()]),
    (b"stats items\r\n", [StatsRequest(b"items")]),
    (b"stats reset x\r\n", [StatsRequest(b"reset", (b"x",))]),
    (b"version\r\n", [Request("version")]),
    (b"version x y\r\n", [Request("version")]),
    (b"quit\r\n", [Request("quit")]),
    # operator commands
    (b"verbosity 1\r\n", [AdminRequest("verbosity", 1)]),
    (b"verbosity 7\r\n", [AdminRequest("verbosity", 7)]),  # the command layer caps it
    (b"verbosity 1 noreply\r\n", [AdminRequest("verbosity", 1, quiet=True)]),
    (b"verbosity noreply\r\n", []),  # "noreply" is the level too: silent error
    (b"shutdown\r\n", [AdminRequest("shutdown")]),
    (b"shutdown graceful\r\n", [AdminRequest("shutdown", graceful=True)]),
    # Modes memcached refuses, after it checks -A: the command layer answers.
    (b"shutdown now\r\n", [AdminRequest("shutdown", graceful=None)]),
    (b"shutdown noreply\r\n", [AdminRequest("shutdown", graceful=None)]),
    (b"shutdown graceful x\r\n", [AdminRequest("shutdown", graceful=None)]),
    (b"cache_memlimit 8\r\n", [AdminRequest("cache_memlimit", 8)]),
    (b"cache_memlimit 1000000000\r\n", [AdminRequest("cache_memlimit", 1_000_000_000)]),
    (b"cache_memlimit 100 noreply\r\n", [AdminRequest("cache_memlimit", 100, quiet=True)]),
    (b"refresh_certs\r\n", [AdminRequest("refresh_certs")]),
    (b"refresh_certs noreply\r\n", [AdminRequest("refresh_certs", quiet=True)]),
    (b"refresh_certs a b c\r\n", [AdminRequest("refresh_certs")]),  # no token checks
    # meta
    (b"mn\r\n", [MN]),
    (b"mn x y\r\n", [MN]),
    (b"mg k\r\n", [meta("mg", b"k")]),
    (
        b"mg k v c f t s k h l O123 q u\r\n",
        [meta("mg", b"k", b"v", b"c", b"f", b"t", b"s", b"k", b"h", b"l", b"O123", b"q", b"u")],
    ),
    (
        b"mg k T30 N10 R5 P L\r\n",
        [meta("mg", b"k", b"T30", b"N10", b"R5", b"P", b"L", ttl=30, vivify=10, recache=5)],
    ),
    (b"mg k C5 MX I D3 J4\r\n", [meta("mg", b"k", b"C5", b"MX", b"I", b"D3", b"J4")]),
    (b"mg czE= b k\r\n", [meta("mg", b"s1", b"b", b"k")]),
    (b"mg k O" + b"x" * 32 + b" v\r\n", [meta("mg", b"k", b"O" + b"x" * 32, b"v", abort_at=0)]),
    (b"ms k 3\r\nabc\r\n", [meta("ms", b"k", value=b"abc", mode="set")]),
    (
        b"ms k 3 T5 F7 C9 c k O1 q I\r\nabc\r\n",
        [
            meta(
                "ms",
                b"k",
                b"T5",
                b"F7",
                b"C9",
                b"c",
                b"k",
                b"O1",
                b"q",
                b"I",
                value=b"abc",
                ttl=5,
                client_flags=7,
                compare_cas=9,
                mode="set",
            )
        ],
    ),
    (b"ms k 1 ME\r\nx\r\n", [meta("ms", b"k", b"ME", value=b"x", mode="add")]),
    (b"ms k 1 MA\r\nx\r\n", [meta("ms", b"k", b"MA", value=b"x", mode="append")]),
    (b"ms k 1 MP\r\nx\r\n", [meta("ms", b"k", b"MP", value=b"x", mode="prepend")]),
    (b"ms k 1 MR\r\nx\r\n", [meta("ms", b"k", b"MR", value=b"x", mode="replace")]),
    (b"ms k 1 MS\r\nx\r\n", [meta("ms", b"k", b"MS", value=b"x", mode="set")]),
    (
        b"ms k 1 v s t f h l u N5 D5 J5 R5\r\nx\r\n",
        [
            meta(
                "ms",
                b"k",
                b"v",
                b"s",
                b"t",
                b"f",
                b"h",
                b"l",
                b"u",
                b"N5",
                b"D5",
                b"J5",
                b"R5",
                value=b"x",
                mode="set",
                ttl=None,
            )
        ],
    ),
    (b"md k\r\n", [meta("md", b"k")]),
    (
        b"md k I T30 C4 q k O1\r\n",
        [meta("md", b"k", b"I", b"T30", b"C4", b"q", b"k", b"O1", ttl=30, compare_cas=4)],
    ),
    (b"ma k\r\n", [meta("ma", b"k", mode="incr")]),
    (
        b"ma k MD D5 J7 N0 T9 C3 v\r\n",
        [
            meta(
                "ma",
                b"k",
                b"MD",
                b"D5",
                b"J7",
                b"N0",
                b"T9",
                b"C3",
                b"v",
                mode="decr",
                delta=5,
                initial=7,
                vivify=0,
                ttl=9,
                compare_cas=3,
            )
        ],
    ),
    (b"ma k M-\r\n", [meta("ma", b"k", b"M-", mode="decr")]),
    (b"ma k M+\r\n", [meta("ma", b"k", b"M+", mode="incr")]),
    (b"me k\r\n", [MetaRequest("me", b"k")]),
    (b"me czE= b\r\n", [MetaRequest("me", b"s1", order="b")]),
]


@pytest.mark.parametrize("size", WAYS)
@pytest.mark.parametrize(("data", "expected"), PARSED)
def test_each_command_parses_alone_and_with_more_behind(data, expected, size):
    assert parse(data, size) == expected
    assert parse(data + b"mn\r\n", size) == [*expected, MN]


# -- malformed commands: memcached's reply, and the stream goes on ----------

BAD_CHUNK = reply(b"CLIENT_ERROR bad data chunk")
INVALID_META = reply(b"CLIENT_ERROR invalid or duplicate flag")

ERRORS = [
    (b"\r\n", [ERROR]),
    (b"\n", [ERROR]),
    (b"x\r\n", [ERROR]),  # no command is shorter than two bytes
    (b"GET a\r\n", [ERROR]),
    (b"get\r\n", [ERROR]),
    (b"get \r\n", [ERROR]),
    (b"gets\r\n", [ERROR]),
    (b"gat\r\n", [ERROR]),
    (b"gat x a\r\n", [reply(b"CLIENT_ERROR invalid exptime argument")]),
    (b"get " + b"k" * 251 + b"\r\n", [get(error=b"CLIENT_ERROR bad command line format\r\n")]),
    (
        b"get a " + b"k" * 251 + b" b\r\n",
        [GetMany([b"a"], TextGets(error=b"CLIENT_ERROR bad command line format\r\n"))],
    ),
    (b"set\te 0 0 1\r\nx\r\n", [ERROR, ERROR]),
    (b"set a 0 0\r\n", [ERROR]),
    (b"set a 0 0 1 noreply extra\r\nx\r\n", [ERROR, ERROR]),  # too many tokens
    (b"set " + b"a " * 30 + b"\r\n", [ERROR]),
    (b"set a 0 0 -1\r\n", [BAD_FORMAT]),
    (b"set a 0 0 -1 noreply\r\n", []),  # noreply silences the error
    (b"set a -1 0 1\r\nx\r\n", [BAD_FORMAT, ERROR]),  # the block is not swallowed
    (b"set a 1x 0 1\r\nx\r\n", [BAD_FORMAT, ERROR]),
    (b"set a 0 x 1\r\nx\r\n", [BAD_FORMAT, ERROR]),
    (b"set a 0 0 x\r\nx\r\n", [BAD_FORMAT, ERROR]),
    (b"set a 0 0 2147483646\r\nx\r\n", [BAD_FORMAT, ERROR]),  # over INT_MAX - 2
    (b"set " + b"k" * 251 + b" 0 0 1\r\nx\r\n", [BAD_FORMAT, ERROR]),
    (b"set " + b"k" * 251 + b" 0 0 1 noreply\r\nx\r\n", [ERROR]),
    (b"set e\0junk 0 0 1\r\nx\r\n", [ERROR, ERROR]),
    (b"set a 0 0 3\r\nabcde\r\n", [BAD_CHUNK, ERROR]),  # 3 + 2 bytes read, "\r\n" left
    (b"set a 0 0 3 noreply\r\nabcXY\r\n", [ERROR]),
    (b"set a 0 0 1\r\nxy\r\n", [BAD_CHUNK, ERROR]),
    (b"set a 0 0 1\r\nx\n\r\n", [BAD_CHUNK, ERROR]),
    (b"cas a 0 0 1\r\nx\r\n", [ERROR, ERROR]),
    (b"cas a 0 0 1 abc\r\nx\r\n", [BAD_FORMAT, ERROR]),
    (b"cas a 0 0 1 -1\r\nx\r\n", [BAD_FORMAT, ERROR]),
    (b"cas a 0 0 1 1 2 3\r\nx\r\n", [ERROR, ERROR]),
    (b"incr a\r\n", [ERROR]),
    (b"incr a 1 2 3\r\n", [ERROR]),
    (b"incr a abc\r\n", [reply(b"CLIENT_ERROR invalid numeric delta argument")]),
    (b"incr a -1\r\n", [reply(b"CLIENT_ERROR invalid numeric delta argument")]),
    (b"incr a 18446744073709551616\r\n", [reply(b"CLIENT_ERROR invalid numeric delta argument")]),
    (b"incr a abc noreply\r\n", []),
    (b"incr " + b"k" * 251 + b" 1\r\n", [BAD_FORMAT]),
    (b"delete\r\n", [ERROR]),
    (b"delete a x y z\r\n", [ERROR]),
    (
        b"delete a 5\r\n",
        [reply(b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]")],
    ),
    (b"delete a 5 noreply\r\n", []),
    (b"delete " + b"k" * 251 + b"\r\n", [BAD_FORMAT]),
    (b"touch a\r\n", [ERROR]),
    (b"touch a x\r\n", [reply(b"CLIENT_ERROR invalid exptime argument")]),
    (b"touch a x noreply\r\n", []),
    (b"flush_all x\r\n", [reply(b"CLIENT_ERROR invalid exptime argument")]),
    (b"flush_all x noreply\r\n", []),
    (b"flush_all noreply x\r\n", [reply(b"CLIENT_ERROR invalid exptime argument")]),
    (b"flush_all 1 2 3\r\n", [ERROR]),
    (b"verbosity\r\n", [ERROR]),
    (b"verbosity x\r\n", [BAD_FORMAT]),
    (b"verbosity -1\r\n", [BAD_FORMAT]),
    (b"verbosity 1 2 3\r\n", [ERROR]),
    (b"cache_memlimit\r\n", [ERROR]),
    (b"cache_memlimit 8 noreply x\r\n", [ERROR]),
    (b"cache_memlimit x\r\n", [ERROR]),  # ERROR, not CLIENT_ERROR, as memcached
    (b"cache_memlimit -1\r\n", [ERROR]),
    (b"cache_memlimit x noreply\r\n", []),
    (b"cache_memlimit 7\r\n", [reply(b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m")]),
    (b"cache_memlimit 0\r\n", [reply(b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m")]),
    # Truncated to 32 bits as memcached's safe_strtoul does: 2**32 is 0.
    (
        b"cache_memlimit 4294967296\r\n",
        [reply(b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m")],
    ),
    (
        b"cache_memlimit 1000000001\r\n",
        [reply(b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes")],
    ),
    (b"cache_memlimit 7 noreply\r\n", []),
    # Lines that look like HTTP but that memcached answers with ERROR.
    (b"get / HTTP/1.0\r\n", [get(b"/", b"HTTP/1.0")]),
    (b"status / HTTP/1.0\r\n", [ERROR]),  # an s... name: its "s" branch says ERROR
    (b"mx / HTTP/1.1\r\n", [ERROR]),  # two letters from m: its meta branch
    (b"lru_crawler / HTTP/1.1\r\n", [ERROR]),  # a name memcached knows
    (b"GET / HTTP/1.0 noreply\r\n", [ERROR]),  # only the last token counts
    (b"GET / http/1.0\r\n", [ERROR]),  # case matters
    (b"GET\0 / HTTP/1.0\r\n", [ERROR]),  # the line ends at the NUL
    (b"GET " + b"a " * 22 + b"HTTP/1.0\r\n", [ERROR]),  # past the 24th token
    (b"versionx\r\n", [ERROR]),
    (b"mx\r\n", [ERROR]),
    (b"mgx k\r\n", [ERROR]),
    # mg
    (b"mg\r\n", [ERROR]),
    (b"mg k zz\r\n", [reply(b"CLIENT_ERROR invalid flag")]),
    (b"mg k 1\r\n", [reply(b"CLIENT_ERROR invalid flag")]),
    (b"mg k v v\r\n", [reply(b"CLIENT_ERROR duplicate flag")]),
    (b"mg k \x80\r\n", [reply(b"CLIENT_ERROR duplicate flag")]),
    (b"mg k vx vy\r\n", [reply(b"CLIENT_ERROR duplicate flag")]),  # the letter counts
    (b"mg " + b"k" * 251 + b" v\r\n", [BAD_FORMAT]),
    (b"mg k " + b"v " * 18 + b"\r\n", [reply(b"CLIENT_ERROR options flags are too long")]),
    (b"mg k Nx\r\n", [reply(b"CLIENT_ERROR bad token in command line format")]),
    (b"mg k T\r\n", [reply(b"CLIENT_ERROR bad token in command line format")]),
    (b"mg k R\r\n", [reply(b"CLIENT_ERROR bad token in command line format")]),
    (b"mg k Cx\r\n", [reply(b"CLIENT_ERROR bad token in command line format")]),
    (b"mg k Fx\r\n", [BAD_FORMAT]),  # memcached notes F's failure without naming it
    (b"mg k Tx Fx\r\n", [reply(b"CLIENT_ERROR bad token in command line format")]),
    (b"mg k M\r\n", [reply(b"CLIENT_ERROR incorrect length for M token")]),
    (b"mg k D\r\n", [reply(b"CLIENT_ERROR invalid numeric delta value")]),
    (b"mg k Jx\r\n", [reply(b"CLIENT_ERROR invalid numeric initial value")]),
    (b"mg k Tx Nx Jx\r\n", [reply(b"CLIENT_ERROR invalid numeric initial value")]),
    (b"mg k Tx zz\r\n", [reply(b"CLIENT_ERROR invalid flag")]),
    (b"mg czE b\r\n", [reply(b"CLIENT_ERROR error decoding key")]),
    (b"mg k b\r\n", [reply(b"CLIENT_ERROR error decoding key")]),
    # ms: errors after the length swallow the data block
    (b"ms\r\n", [ERROR]),
    (b"ms k\r\n", [BAD_FORMAT]),
    (b"ms k x\r\nabc\r\n", [BAD_FORMAT, ERROR]),
    (b"ms k -1\r\nabc\r\n", [BAD_FORMAT, ERROR]),
    (b"ms " + b"k" * 251 + b" 3\r\nabc\r\n", [BAD_FORMAT, ERROR]),
    (
        b"ms k 3 " + b"v " * 17 + b"\r\nabc\r\n",
        [reply(b"CLIENT_ERROR options flags too long"), ERROR],
    ),
    (b"ms k 3 zz\r\nabc\r\n", [reply(b"CLIENT_ERROR invalid flag")]),
    (b"ms k 3 S3\r\nabc\r\n", [reply(b"CLIENT_ERROR invalid flag")]),
    (b"ms k 3 MX\r\nabc\r\n", [reply(b"CLIENT_ERROR invalid mode for ms M token")]),
    (b"ms k 3 Ma\r\nabc\r\n", [reply(b"CLIENT_ERROR invalid mode for ms M token")]),
    (b"ms k 3 MSS\r\nabc\r\n", [reply(b"CLIENT_ERROR incorrect length for M token")]),
    (b"ms k 3 F-1\r\nabc\r\n", [BAD_FORMAT]),
    (b"ms k 3 Cabc\r\nabc\r\n", [reply(b"CLIENT_ERROR bad token in command line format")]),
    (b"ms k 3 O" + b"x" * 32 + b"\r\nabc\r\n", [reply(b"CLIENT_ERROR opaque token too long")]),
    (
        b"ms k 3 MX O" + b"x" * 32 + b"\r\nabc\r\n",
        [reply(b"CLIENT_ERROR invalid mode for ms M token")],
    ),
    (b"ms k 3 q\r\nabcde\r\n", [BAD_CHUNK, ERROR]),  # q never hides an error
    # md
    (b"md\r\n", [ERROR]),
    (b"md " + b"k" * 251 + b"\r\n", [BAD_FORMAT]),
    (b"md k " + b"q " * 18 + b"\r\n", [reply(b"CLIENT_ERROR options flags too long")]),
    (b"md k zz\r\n", [INVALID_META]),
    (b"md k Cx\r\n", [INVALID_META]),
    (b"md k k k\r\n", [INVALID_META]),
    (b"md k b\r\n", [INVALID_META]),
    (b"md k O" + b"x" * 32 + b"\r\n", [reply(b"CLIENT_ERROR opaque token too long")]),
    # ma
    (b"ma\r\n", [ERROR]),
    (b"ma " + b"k" * 251 + b"\r\n", [BAD_FORMAT]),
    (b"ma k Dx\r\n", [INVALID_META]),
    (b"ma k D-1\r\n", [INVALID_META]),
    (b"ma k J-1\r\n", [INVALID_META]),
    (b"ma k M\r\n", [INVALID_META]),
    (b"ma k MX\r\n", [reply(b"CLIENT_ERROR invalid mode for ma M token")]),
    (b"ma k Mi\r\n", [reply(b"CLIENT_ERROR invalid mode for ma M token")]),
    # me
    (b"me\r\n", [BAD_FORMAT]),
    (b"me " + b"k" * 251 + b"\r\n", [BAD_FORMAT]),
    (b"me k b\r\n", [BAD_FORMAT]),
]


@pytest.mark.parametrize("size", WAYS)
@pytest.mark.parametrize(("data", "expected"), ERRORS)
def test_malformed_commands_get_memcacheds_reply_and_the_stream_goes_on(data, expected, size):
    assert parse(data, size) == expected
    assert parse(data + b"mn\r\n", size) == [*expected, MN]


# -- framing and limits -------------------------------------------------------


@pytest.mark.parametrize("size", WAYS)
def test_a_data_block_may_hold_anything(size):
    value = b"get x\r\nset \x00\x80\r\n\n\r"
    data = b"set a 0 0 %d\r\n%b\r\nmn\r\n" % (len(value), value)
    assert parse(data, size) == [Request("set", b"a", value), MN]


@pytest.mark.parametrize(
    "line",
    [
        b"GET / HTTP/1.0\r\n",
        b"POST /x HTTP/1.1\r\n",
        b"GET / HTTP/1.0\n",
        b"HTTP/1.1\r\n",
        b"   GET   /   HTTP/1.0   \r\n",
        b"foo bar HTTP/\r\n",
        b"mxx HTTP/1\r\n",
        b"GET / HTTP/1.0\0junk\r\n",
        b"GET " + b"a " * 21 + b"HTTP/1.0\r\n",  # the 23rd token: still seen
    ],
)
@pytest.mark.parametrize("size", WAYS)
def test_an_http_request_line_closes_without_a_reply(line, size):
    """As memcached 1.6.18 (compared live in tests/integration/test_http_hangup.py)."""
    parser = TextParser()
    with pytest.raises(ProtocolError) as raised:
        for piece in pieces(line + b"Host: x\r\n\r\n", size):
            parser.feed(piece)
            while parser.next() is not None:
                pass
    assert raised.value.reply == b""


def test_requests_before_an_http_line_are_still_parsed():
    parser = TextParser()
    parser.feed(b"version\r\nGET / HTTP/1.1\r\nversion\r\n")
    assert parser.next() == Request("version")
    with pytest.raises(ProtocolError):
        parser.next()


def test_a_line_without_newline_waits_up_to_2048_bytes_then_closes():
    parser = TextParser()
    parser.feed(b"x" * 2048)
    assert parser.next() is None
    parser.feed(b"x")
    with pytest.raises(ProtocolError):
        parser.next()


def test_a_long_line_that_arrives_whole_is_read_as_memcached_reads_it():
    # memcached finds the newline in its 16 KB buffer: the line is parsed.
    assert parse(b"set a 0 0 1" + b" " * 3000 + b"\r\nx\r\n") == [Request("set", b"a", b"x")]
    assert parse(b"x" * 16382 + b"\r\n") == [ERROR]
    with pytest.raises(ProtocolError):  # no newline within 16 KB: closed
        parse(b"x" * 16383 + b"\r\n")


def test_only_get_and_gets_may_be_longer():
    keys = [b"key:%05d" % i for i in range(20_000)]
    line = b"get " + b" ".join(keys) + b"\r\n"
    assert parse(line, 1000) == [get(*keys)]
    assert parse(b"gets " + b" ".join(keys) + b"\r\n", 4096) == [get(*keys, cas=True)]
    assert parse(b" " * 100 + line, 1000) == [get(*keys)]
    for refused in (b" " * 101 + line, b"gat 0 " + b" ".join(keys) + b"\r\n", b"mg " + line):
        with pytest.raises(ProtocolError):
            parse(refused, 1000)


def test_a_long_get_line_is_collected_without_rescanning():
    # 5 MB arriving 64 KB at a time: joined once, scanned once.
    keys = [b"k%07d" % i for i in range(600_000)]
    line = b"get " + b" ".join(keys) + b"\r\n"
    parser = TextParser()
    for piece in pieces(line, 1 << 16):
        parser.feed(piece)
        request = parser.next()
    assert request == get(*keys)
    assert parser.buffered == 0


@pytest.mark.parametrize("size", [None, 1 << 16, 4096])
def test_an_oversized_value_is_refused_at_once_and_never_buffered(size):
    value = b"v" * 2_000_000
    data = b"set a 0 0 %d\r\n%b\r\nmn\r\n" % (len(value), value)
    parser = TextParser()
    found = []
    for piece in pieces(data, size):
        parser.feed(piece)
        while (request := parser.next()) is not None:
            found.append(request)
        assert parser.buffered < 64  # the skipped bytes are dropped as they come
    assert found == [Request("set", b"a", refused=True), MN]


def test_the_item_size_limit_counts_key_header_and_flags_as_memcached_does():
    # With -I 1m memcached stores a 1,048,516-byte value under a 1-byte key,
    # but only 1,048,512 bytes when the flags are not 0 (4 bytes more).
    def refused(flags: int, length: int) -> bool:
        parser = TextParser(1 << 20)
        parser.feed(b"set k %d 0 %d\r\n" % (flags, length))
        request = parser.next()
        return request is not None and request.refused

    assert not refused(0, 1_048_516)
    assert refused(0, 1_048_517)
    assert not refused(1, 1_048_512)
    assert refused(1, 1_048_513)
    parser = TextParser(1 << 20)
    parser.feed(b"ms k 1048513 F1\r\n")
    assert parser.next().refused


def test_a_refused_cas_is_a_refused_replace():
    # memcached keeps the old item when a cas is too large; set drops it.
    assert parse(b"cas a 0 0 2000000 5\r\n") == [Request("replace", b"a", cas=5, refused=True)]


def test_a_refused_ms_swallows_its_block():
    value = b"v" * 2_000_000
    data = b"ms k %d T5 k\r\n%b\r\nmn\r\n" % (len(value), value)
    assert parse(data, 1 << 16) == [
        meta("ms", b"k", b"T5", b"k", ttl=5, mode="set", refused=True),
        MN,
    ]


@pytest.mark.parametrize("size", [1 << 16, 1000])
def test_a_large_value_arrives_in_pieces_and_is_joined_once(size):
    value = bytes(range(256)) * 3000
    data = b"set big 1 0 %d\r\n%b\r\n" % (len(value), value)
    assert parse(data, size) == [Request("set", b"big", value, 1)]


def test_a_storage_command_waits_for_its_whole_block():
    parser = TextParser()
    parser.feed(b"set a 0 0 5\r\nabc")
    assert parser.next() is None
    assert parser.buffered == 3
    parser.feed(b"de\r")
    assert parser.next() is None
    parser.feed(b"\n")
    assert parser.next() == Request("set", b"a", b"abcde")


def test_quit_is_a_request_and_what_follows_is_not_read_yet():
    parser = TextParser()
    parser.feed(b"quit\r\nget a\r\n")
    assert parser.next() == Request("quit")


def test_feeding_memoryviews_and_bytearrays():
    parser = TextParser()
    parser.feed(memoryview(b"get a"))
    parser.feed(bytearray(b"\r\n"))
    assert parser.next() == get(b"a")


# -- memcached's number parsing ----------------------------------------------


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (b"0", 0),
        (b"18446744073709551615", (1 << 64) - 1),
        (b"18446744073709551616", None),  # ERANGE
        (b"000000000000000000000000000000000001", 1),
        (b"9" * 5000, None),
        (b"+5", 5),
        (b"-0", 0),
        (b"-1", None),  # 2**64 - 1 has a minus sign: refused
        (b"-9223372036854775809", (1 << 63) - 1),  # strtoull negates: positive as signed
        (b"\t7", 7),
        (b"7\t", 7),
        (b"7\tjunk", 7),
        (b"7x", None),
        (b"0x10", None),
        (b"", None),
        (b"-", None),
        (b"\xff", None),
    ],
)
def test_strtoull_reads_as_memcacheds_safe_strtoull(token, expected):
    assert strtoull(token) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (b"4294967295", 4294967295),
        (b"4294967296", 0),  # a 64-bit unsigned long, stored into 32 bits
        (b"4294967301", 5),
        (b"-1", None),
        (b"x", None),
    ],
)
def test_strtoul32_truncates_as_memcached_does(token, expected):
    assert strtoul32(token) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (b"2147483647", 2147483647),
        (b"2147483648", -2147483648),  # a 64-bit long, stored into 32 bits
        (b"4294967297", 1),
        (b"-4294967295", 1),
        (b"-1", -1),
        (b"9223372036854775808", None),  # ERANGE
        (b"-9223372036854775808", 0),
        (b"1.5", None),
    ],
)
def test_strtol32_truncates_as_memcached_does(token, expected):
    assert strtol32(token) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (b"czE=", b"s1"),
        (b"YWJj", b"abc"),
        (b"AA==", b"\x00"),
        (b"czE=czE=", b"s1"),  # stops after the first padded block
        (b"c!zE=", b"s1"),  # characters outside the alphabet are skipped
        (b"czE", None),
        (b"cw=", None),
        (b"czE=x", None),
        (b"czE==", None),
        (b"A===", None),
        (b"====", None),
        (b"!!!!", None),
        (b"_-==", None),  # not the URL-safe alphabet
    ],
)
def test_base64_keys_decode_as_memcacheds_decoder(token, expected):
    assert b64decode(token) == expected


# -- writing -------------------------------------------------------------------


def rec(value: bytes, flags: int = 0, cas: int = 1) -> bytes:
    return record(value, flags, 0, cas, 0)


def written(write, *args) -> bytes:
    out: list = []
    count = write(*args, out)
    if isinstance(count, tuple):
        count = count[0]
    data = b"".join(bytes(part) for part in out)
    assert count == len(data)
    return data


def test_get_replies():
    run = get(b"a", b"b", b"c")
    records = [rec(b"xyz", 5, 9), None, rec(b"", 0, 10)]
    assert written(write_text_gets, run, records) == (
        b"VALUE a 5 3\r\nxyz\r\nVALUE c 0 0\r\n\r\nEND\r\n"
    )
    run = get(b"a", b"b", b"c", cas=True)
    assert written(write_text_gets, run, records) == (
        b"VALUE a 5 3 9\r\nxyz\r\nVALUE c 0 0 10\r\n\r\nEND\r\n"
    )
    assert written(write_text_gets, get(b"a"), [None]) == b"END\r\n"
    assert written(write_text_gets, get(touch=True), []) == b"END\r\n"
    error = GetMany([b"a"], TextGets(error=b"CLIENT_ERROR bad command line format\r\n"))
    assert written(write_text_gets, error, [rec(b"x")]) == (
        b"CLIENT_ERROR bad command line format\r\n"
    )


def test_a_large_value_is_written_without_a_copy():
    value = b"v" * 100_000
    out: list = []
    write_text_gets(get(b"big"), [rec(value, 3)], out)
    assert any(isinstance(part, memoryview) for part in out)
    assert b"".join(out) == b"VALUE big 3 100000\r\n" + value + b"\r\nEND\r\n"


class TestLone:
    """lone takes a read that is exactly one ``get <key>``, one ``get`` of
    several keys, or one plain ``set``; get_reply and store_reply answer the
    first and the last, answer_gets the get of several."""

    def test_every_connection_of_one_item_size_shares_one_reader(self):
        """As binary's: one function, reading as the parser of that limit does."""
        assert lone_reader(1 << 20) is lone_reader(1 << 20)
        small = lone_reader(100)
        assert small is not lone_reader(1 << 20)
        fits = b"set k 0 0 40\r\n" + b"v" * 40 + b"\r\n"  # 1 + 40 + memcached's 59 = 100
        too_large = b"set k 0 0 41\r\n" + b"v" * 41 + b"\r\n"
        assert small(fits) == TextParser(100).lone(fits) is not None
        assert small(too_large) is None and TextParser(100).lone(too_large) is None

    def test_one_get_gives_its_key(self):
        assert TextParser().lone(b"get " + b"k" * 250 + b"\r\n") == (b"k" * 250, b"k" * 250)

    @pytest.mark.parametrize(
        "data",
        [
            b"set k 0 0 1\r\nv\r\n",
            b"set " + b"k" * 250 + b" 999999999 999999999 0\r\n\r\n",
            b"set k 007 00 5\r\nv\r\nvv\r\n",  # leading zeros, CRLF inside the value
            b"set k\t 1 2 3\r\nabc\r\n",  # a tab is part of the key to memcached too
        ],
    )
    def test_one_set_is_the_request_next_makes(self, data):
        parser = TextParser()
        parser.feed(data)
        lone = TextParser().lone(data)
        assert isinstance(lone, Request) and lone == parser.next()

    @pytest.mark.parametrize(
        "data",
        [
            b"get a b\r\n",
            b"get " + b" ".join(b"key:%d" % i for i in range(100)) + b"\r\n",
            b"get " + b"k" * 250 + b" " + b"j" * 250 + b"\r\n",
            b"get a\tb c\x01\r\n",  # a tab or control byte is part of a key to memcached too
        ],
    )
    def test_a_get_of_several_keys_is_the_run_next_makes(self, data):
        assert isinstance(TextParser().lone(data), GetMany)
        assert_lone_reads_as_next(TextParser, data, as_run=None)

    @pytest.mark.parametrize(
        "data",
        [
            b"get a  b\r\n",  # memcached skips the empty token; the parser does that
            b"get a b \r\n",
            b"get a b\n",
            b"get a b\r\r\n",
            b"get a b\0c\r\n",
            b"get a " + b"k" * 251 + b"\r\n",
            b"get a b\r\nget c\r\n",
            b"get a\rb c\r\n",
            b"get  a\r\n",  # memcached skips the empty token; the parser does that
            b"get a \r\n",
            b"get a\n",  # no \r: memcached accepts it, the parser handles it
            b"get a\r\r\n",
            b"get a\0b\r\n",  # memcached reads the line as a C string
            b"get \r\n",
            b"get " + b"k" * 251 + b"\r\n",
            b"gets a\r\n",
            b"GET a\r\n",
            b"get a\r\nget b\r\n",
            b"get a\r",
            b"set a 0 0 1 noreply\r\nx\r\n",
            b"set a 0 0 1\r\nx\r\nget a\r\n",
            b"set a 0 0 1\r\nx",
            b"set a 0 0 1\r\nxy\r\n",  # a bad data block
            b"set a 0 0 1\r\nx\n\n",
            b"set a 0 0 1\nx\r\n",
            b"set a 0 -1 1\r\nx\r\n",
            b"set a -0 0 1\r\nx\r\n",
            b"set a 4294967295 0 1\r\nx\r\n",  # numbers this long are left to strtoul
            b"set a 0 0 01\r\nx\r\n" + b"v" * (1 << 20),
            b"set a 0 0 1048576\r\n" + b"v" * (1 << 20) + b"\r\n",  # too large
            b"set  a 0 0 1\r\nx\r\n",
            b"set a 0 0 1 \r\nx\r\n",
            b"set " + b"k" * 251 + b" 0 0 1\r\nx\r\n",
            b"add a 0 0 1\r\nx\r\n",
            b"cas a 0 0 1 1\r\nx\r\n",
        ],
    )
    def test_anything_else_is_left_to_the_parser(self, data):
        parser = TextParser()
        assert parser.lone(data) is None
        assert parser.buffered == 0  # nothing consumed: the caller feeds it

    @settings(max_examples=500, deadline=None)
    @given(
        command=st.sampled_from([b"set", b"set", b"get", b"add", b"sets"]),
        key=st.binary(min_size=0, max_size=252),
        numbers=st.lists(
            st.one_of(
                st.integers(0, 10**10).map(lambda n: b"%d" % n),
                st.sampled_from([b"-1", b"+1", b"01", b"", b"x", b"noreply"]),
            ),
            min_size=3, max_size=4,
        ),
        value=st.binary(max_size=300),
        end=st.sampled_from([b"\r\n", b"\r\n", b"\n", b"", b"\r\nget k\r\n"]),
        length_lie=st.sampled_from([0, 0, 0, -1, 1]),
    )
    def test_what_lone_takes_next_parses_the_same(
        self, command, key, numbers, value, end, length_lie
    ):
        """Whatever the line and block: lone takes a read only as next would parse it."""
        if command == b"get":
            data = b"get " + key + end
        else:
            numbers[2:3] = [b"%d" % (len(value) + length_lie)] if numbers[2:3] != [b"x"] else [b"x"]
            data = b" ".join([command, key, *numbers]) + b"\r\n" + value + end
        assert_lone_reads_as_next(
            lambda: TextParser(max_item_size=300), data, lambda lone: get(lone[0])
        )

    def test_empty_until_a_line_is_partly_buffered(self):
        """lone is asked only while the parser is empty (the connection checks)."""
        parser = TextParser()
        assert parser.empty
        parser.feed(b"get fir")
        assert parser.next() is None and not parser.empty
        parser.feed(b"st\r\n")
        assert parser.next() == get(b"first") and parser.empty

    def test_not_empty_while_a_data_block_is_awaited(self):
        parser = TextParser()
        parser.feed(b"set k 0 0 10\r\n")
        assert parser.next() is None and not parser.empty
        parser.feed(b"0123456789\r\n")
        assert parser.next().value == b"0123456789" and parser.empty

    def test_not_empty_while_a_refused_value_is_being_skipped(self):
        parser = TextParser(max_item_size=1024)
        parser.feed(b"set k 0 0 4096\r\n")
        assert parser.next().refused and not parser.empty
        parser.feed(b"v" * 4096 + b"\r\n")
        assert parser.empty

    @pytest.mark.parametrize("status", [OK, NOT_STORED, EXISTS, NOT_FOUND, TOO_LARGE, NO_MEMORY])
    @pytest.mark.parametrize("quiet", [False, True])
    def test_store_reply_is_what_the_writer_writes(self, status, quiet):
        request = TextParser().lone(b"set k 0 0 1\r\nv\r\n")._replace(quiet=quiet)
        result = Result(status, 77)
        assert store_reply(request, result) == written(write_text, request, result)

    @pytest.mark.parametrize("value", [b"", b"xyz", b"v" * 100_000])
    def test_get_reply_matches_write_text_gets(self, value):
        for record_ in (rec(value, 7, 3), None):
            assert get_reply(b"key", record_) == written(write_text_gets, get(b"key"), [record_])


@pytest.mark.parametrize("length", [0, 100, 4095, 4096, 10240, 16384, 100_000])
@pytest.mark.parametrize("flags", [0, 7])
def test_an_item_is_framed_alike_whatever_its_length(length, flags):
    """Values shorter than 4 KiB are formatted in, longer ones concatenated
    after their line, the longest sent by view: the bytes must not show it."""
    value = (bytes(range(256)) * (length // 256 + 1))[:length]
    record_ = rec(value, flags, 3)
    item = b"VALUE key %d %d\r\n" % (flags, length) + value + b"\r\n"
    item_cas = b"VALUE key %d %d 3\r\n" % (flags, length) + value + b"\r\n"
    assert get_reply(b"key", record_) == item + b"END\r\n"
    both = [record_, None, record_]
    assert written(write_text_gets, get(b"key", b"no", b"key"), both) == item * 2 + b"END\r\n"
    assert written(write_text_gets, get(b"key", b"no", b"key", cas=True), both) == item_cas * 2 + b"END\r\n"


def test_a_multi_get_is_written_in_slices():
    keys = [b"k%d" % i for i in range(10)]
    records = [rec(b"v" * 1000) if i % 3 else None for i in range(10)]
    whole = written(write_text_gets, get(*keys), records)
    out: list = []
    done, total, slices = 0, 0, 0
    while done < len(records) or slices == 0:
        count, done = write_text_gets(get(*keys), records, out, done, 2500)
        total += count
        slices += 1
    assert slices > 2
    assert b"".join(out) == whole
    assert total == len(whole)


@pytest.mark.parametrize(
    ("command", "status", "expected"),
    [
        ("set", OK, b"STORED\r\n"),
        ("add", NOT_STORED, b"NOT_STORED\r\n"),
        ("replace", EXISTS, b"EXISTS\r\n"),
        ("replace", NOT_FOUND, b"NOT_FOUND\r\n"),
        ("append", TOO_LARGE, b"SERVER_ERROR object too large for cache\r\n"),
        ("prepend", NO_MEMORY, b"SERVER_ERROR out of memory storing object\r\n"),
        ("delete", OK, b"DELETED\r\n"),
        ("delete", NOT_FOUND, b"NOT_FOUND\r\n"),
        ("incr", NOT_FOUND, b"NOT_FOUND\r\n"),
        ("decr", NON_NUMERIC, b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
        ("touch", OK, b"TOUCHED\r\n"),
        ("touch", NOT_FOUND, b"NOT_FOUND\r\n"),
        ("flush", OK, b"OK\r\n"),
        ("stats", NOT_FOUND, b"ERROR\r\n"),
        ("version", OK, b"VERSION " + PROTOCOL_VERSION.encode() + b"\r\n"),
        ("quit", OK, b""),
    ],
)
def test_replies_by_status(command, status, expected):
    request = StatsRequest(b"k") if command == "stats" else Request(command, b"k")
    assert written(write_text, request, Result(status)) == expected
    if command not in ("stats", "version", "quit"):
        quiet = request._replace(quiet=True)
        assert written(write_text, quiet, Result(status)) == b""


@pytest.mark.parametrize(
    ("request_", "result", "expected"),
    [
        (AdminRequest("verbosity", 1), AdminResult(ADMIN_OK), b"OK\r\n"),
        (AdminRequest("verbosity", 1, quiet=True), AdminResult(ADMIN_OK), b""),
        (AdminRequest("cache_memlimit", 8), AdminResult(ADMIN_OK), b"OK\r\n"),
        (AdminRequest("cache_memlimit", 8, quiet=True), AdminResult(ADMIN_OK), b""),
        (AdminRequest("shutdown"), AdminResult(ADMIN_OK), b""),  # the connection closes
        (
            AdminRequest("shutdown"),
            AdminResult(ADMIN_DISABLED),
            b"ERROR: shutdown not enabled\r\n",
        ),
        (
            AdminRequest("shutdown", graceful=None),
            AdminResult(ADMIN_BAD_MODE),
            b"CLIENT_ERROR invalid shutdown mode\r\n",
        ),
        (AdminRequest("refresh_certs"), AdminResult(ADMIN_OK), b"OK\r\n"),
        (AdminRequest("refresh_certs", quiet=True), AdminResult(ADMIN_OK), b""),
        # An error line is sent even after noreply, as memcached does.
        (
            AdminRequest("refresh_certs", quiet=True),
            AdminResult(ADMIN_FAILED, "Error TLS not enabled"),
            b"Error TLS not enabled\r\n",
        ),
    ],
)
def test_operator_command_replies(request_, result, expected):
    assert written(write_text, request_, result) == expected


def test_counter_and_stats_replies():
    assert written(write_text, Request("incr", b"k"), Result(OK, number=18446744073709551615)) == (
        b"18446744073709551615\r\n"
    )
    stats = Result(OK, stats=[("pid", "1"), ("version", "1.6.18")])
    assert written(write_text, StatsRequest(), stats) == (
        b"STAT pid 1\r\nSTAT version 1.6.18\r\nEND\r\n"
    )
    assert written(write_text, StatsRequest(b"reset"), Result(OK, stats=[])) == b"RESET\r\n"
    assert written(write_text, reply(b"ERROR"), Result(OK)) == b"ERROR\r\n"


ITEM = Item(b"abc", 7, 0, 30, 0)


@pytest.mark.parametrize(
    ("request_", "result", "expected"),
    [
        (meta("mg", b"k"), MetaResult(OK, ITEM), b"HD\r\n"),
        (meta("mg", b"k", b"v"), MetaResult(OK, ITEM), b"VA 3\r\nabc\r\n"),
        (
            meta("mg", b"k", b"s", b"v", b"f", b"c", b"k", b"t", b"h", b"l", b"O123"),
            MetaResult(OK, ITEM, ttl=-1, fetched=True, idle=4),
            b"VA 3 s3 f7 c30 kk t-1 h1 l4 O123\r\nabc\r\n",
        ),
        (meta("mg", b"k", b"q"), MetaResult(OK, ITEM), b"HD\r\n"),  # q hides only EN
        (meta("mg", b"k", b"t"), MetaResult(OK, ITEM, ttl=99, won=True), b"HD t99 W\r\n"),
        (
            meta("mg", b"k"),
            MetaResult(OK, ITEM, won=True, stale=True, win_sent=True),
            b"HD Z X W\r\n",
        ),
        (meta("mg", b"s1", b"b", b"k"), MetaResult(OK, ITEM, binary_key=True), b"HD kczE= b\r\n"),
        (meta("mg", b"s1", b"b", b"k"), MetaResult(OK, ITEM), b"HD ks1\r\n"),
        (meta("mg", b"k"), MetaResult(NOT_FOUND), b"EN\r\n"),
        (meta("mg", b"k", b"k", b"O5", b"v"), MetaResult(NOT_FOUND), b"EN kk O5\r\n"),
        (meta("mg", b"s1", b"b", b"k"), MetaResult(NOT_FOUND), b"EN kczE= b\r\n"),
        (meta("mg", b"k", b"q"), MetaResult(NOT_FOUND), b""),
        (
            meta("mg", b"k", b"O" + b"x" * 32, abort_at=0),
            MetaResult(OK, ITEM),
            b"CLIENT_ERROR opaque token too long\r\n",
        ),
        (meta("ms", b"k"), MetaResult(OK, cas=5), b"HD\r\n"),
        (meta("ms", b"k", b"c", b"k", b"O1"), MetaResult(OK, cas=5), b"HD c5 kk O1\r\n"),
        (meta("ms", b"k", b"q"), MetaResult(OK, cas=5), b""),
        (meta("ms", b"k", b"q", b"c"), MetaResult(EXISTS), b"EX c0\r\n"),
        (meta("ms", b"k"), MetaResult(NOT_STORED), b"NS\r\n"),
        (meta("ms", b"k"), MetaResult(NOT_FOUND), b"NF\r\n"),
        (meta("ms", b"k"), MetaResult(TOO_LARGE), b"SERVER_ERROR object too large for cache\r\n"),
        (meta("md", b"k", b"k", b"O7"), MetaResult(OK), b"HD kk O7\r\n"),
        (meta("md", b"k", b"q"), MetaResult(OK), b""),
        (meta("md", b"k", b"q"), MetaResult(NOT_FOUND), b"NF\r\n"),
        (meta("md", b"k", b"O7"), MetaResult(EXISTS), b"EX O7\r\n"),
        (meta("ma", b"k"), MetaResult(OK, ITEM, number=5), b"HD\r\n"),
        (
            meta("ma", b"k", b"v", b"t", b"c", b"k", b"O1"),
            MetaResult(OK, ITEM, cas=9, number=10, ttl=-1),
            b"VA 2 t-1 c9 kk O1\r\n10\r\n",
        ),
        (meta("ma", b"k", b"q", b"v"), MetaResult(OK, ITEM, number=5), b""),
        (meta("ma", b"k", b"q", b"k"), MetaResult(NOT_FOUND), b"NF kk\r\n"),
        (meta("ma", b"k"), MetaResult(EXISTS), b"EX\r\n"),
        (meta("ma", b"k"), MetaResult(NOT_STORED), b"NS\r\n"),
        (
            meta("ma", b"k", b"q"),
            MetaResult(NON_NUMERIC),
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        (
            MetaRequest("me", b"k"),
            MetaResult(OK, Item(b"x", 5, 0, 148, 0), ttl=100, idle=0, size_class=1),
            b"ME k exp=-100 la=0 cas=148 fetch=no cls=1 size=65\r\n",
        ),
        (
            MetaRequest("me", b"me1"),
            MetaResult(OK, Item(b"x", 0, 0, 153, 0), ttl=-1, fetched=True, size_class=1),
            b"ME me1 exp=-1 la=0 cas=153 fetch=yes cls=1 size=63\r\n",
        ),
        (
            MetaRequest("me", b"me600000"),
            MetaResult(OK, Item(b"x" * 600_000, 5, 0, 1, 0), ttl=100, size_class=39),
            b"ME me600000 exp=-100 la=0 cas=1 fetch=no cls=39 size=600071\r\n",
        ),
        (MetaRequest("me", b"k"), MetaResult(NOT_FOUND), b"EN\r\n"),
    ],
)
def test_meta_replies(request_, result, expected):
    assert written(write_text, request_, result) == expected


# -- arbitrary input -----------------------------------------------------------

# Pieces of real commands, so that random input reaches past the tokenizer.
WORDS = st.sampled_from(
    [
        b"get",
        b"gets",
        b"gat",
        b"gats",
        b"set",
        b"add",
        b"cas",
        b"append",
        b"incr",
        b"decr",
        b"delete",
        b"touch",
        b"flush_all",
        b"stats",
        b"verbosity",
        b"version",
        b"shutdown",
        b"graceful",
        b"cache_memlimit",
        b"refresh_certs",
        b"GET",
        b"HTTP/1.1",
        b"mg",
        b"ms",
        b"md",
        b"ma",
        b"mn",
        b"me",
        b"noreply",
        b"0",
        b"1",
        b"-1",
        b"5",
        b"99999999999",
        b"k",
        b"v",
        b"q",
        b"b",
        b"czE=",
        b"T5",
        b"N5",
        b"R5",
        b"MA",
        b"ME",
        b"MD",
        b"MX",
        b"C0",
        b"O1",
        b"I",
        b"\r\n",
        b"\n",
        b" ",
        b"\x00",
        b"\r",
        b"xyz",
    ]
)
STREAMS = st.one_of(
    st.binary(max_size=600),
    st.lists(st.one_of(WORDS, st.binary(max_size=5)), max_size=60).map(b" ".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=STREAMS, cut=st.integers(min_value=1, max_value=50))
def test_arbitrary_bytes_give_requests_or_a_protocol_error(data, cut):
    kinds = (Request, GetMany, MetaRequest, StatsRequest, FlushRequest, AdminRequest, Reply)
    try:
        whole = parse(data, max_item_size=1024)
    except ProtocolError:
        whole = None
    try:
        split = parse(data, cut, max_item_size=1024)
    except ProtocolError:
        split = None
    for found in (whole, split):
        assert found is None or all(isinstance(request, kinds) for request in found)
    if whole is not None and split is not None:
        assert whole == split  # how the bytes arrive changes nothing else

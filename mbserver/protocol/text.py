"""The memcached text protocol: sans-IO codec, and the protocol object a connection uses.

What lives here: finding command lines and data blocks in the byte stream
under memcached's limits, tokenizing and validating each classic command
exactly as memcached 1.6.18 does (its error strings and limits), writing
each result as memcached writes it, and ``TextProtocol``, which answers one
connection's requests and runs memcached's text authentication. What does
not: the meta commands (``meta``, mixed into the parser and the writer
table), the number parsing and base64 both use (``ascii``), buffering
(``buffer``), sockets (``connection``) and semantics (``commands``).

``TextParser`` reads the lines in its ``ReceiveBuffer``; ``next()`` hands
out, one at a time:

- ``GetMany`` for get, gets, gat, gats (one per command line), its context a
  ``TextGets``: answer it with ``Commands.get_many(keys)``, or for a GAT
  (``context.touch``) ``Commands.gat_many(keys, context.exptime)``, then
  ``write_text_gets``;
- ``commands.Request`` for the classic commands, with the command layer's
  names (text ``cas`` is a ``replace`` carrying a CAS; ``noreply`` is
  ``quiet``); ``StatsRequest`` and ``FlushRequest`` for stats and
  flush_all; ``MetaRequest`` for mg, ms, md, ma, me; ``AdminRequest`` for
  the operator commands shutdown, cache_memlimit, verbosity, refresh_certs;
- ``ascii.Reply`` for what the codec answers itself (errors, ``mn``).

``Request("quit")`` writes nothing: close the connection; so does a
``shutdown`` the server accepts. A line memcached would not buffer (over
2048 bytes with no newline, or no newline in its 16 KB read buffer, unless
it is a get) raises ``ProtocolError``, with no reply: close. So does an
HTTP request line (``GET / HTTP/1.1``), as memcached hangs up on one without
a byte (its defence against browsers and forged cross-protocol requests).
Nothing else closes: a bad data chunk, an oversized value (skipped as it
arrives, never buffered) and every malformed command get memcached's reply
and the stream goes on.
"""

from __future__ import annotations

import functools
import logging
import re
from itertools import repeat
from typing import Callable, NamedTuple

from .. import PROTOCOL_VERSION
from ..commands import (
    ADMIN_BAD_MODE,
    ADMIN_DISABLED,
    ADMIN_OK,
    NO_CAS_MATCH,
    AdminRequest,
    AdminResult,
    CrawlerRequest,
    CrawlerResult,
    DumpRequest,
    FlushRequest,
    GetMany,
    Request,
    Result,
    StatsRequest,
    WatchRequest,
)
from ..crawler import BADCLASS
from ..record import (
    CAS,
    CAS_OFFSET,
    FLAGS,
    FLAGS_OFFSET,
    MAX_KEY_LENGTH,
    MAX_SLAB_CLASS,
    MEMCACHED_FLAGS_SIZE,
    MEMCACHED_ITEM_HEADER,
    VALUE_OFFSET,
)
from ..watch import FETCHERS
from ..watch import KINDS as WATCH_KINDS
from ..storage import EXISTS, NO_MEMORY, NOT_FOUND, NOT_STORED, OK, TOO_LARGE
from . import COPY_LIMIT, Answering, Chunks, ProtocolError, write_run
from . import dumps, meta
from .ascii import (
    AGAIN,
    ARITH_ERRORS,
    BAD_CHUNK,
    BAD_FORMAT,
    BAD_FORMAT_REPLY,
    CRLF,
    ERROR,
    INT32_MAX,
    Reply,
    put,
    reply,
    strtol32,
    strtoul32,
    strtoull,
)
from .buffer import ReceiveBuffer

__all__ = [
    "ProtocolError",
    "TextGets",
    "TextParser",
    "TextProtocol",
    "get_reply",
    "store_reply",
    "write_text",
    "write_text_gets",
]

log = logging.getLogger("mbserver.connection")

# memcached reads into a 16 KB buffer and, finding no newline in more than
# 2 KB of it, closes the connection unless the line is a get or gets (a
# multi-get may be long; it then buffers the whole line).
READ_BUFFER_SIZE = 16384
LINE_WAIT_LIMIT = 2048
MAX_LEADING_SPACES = 100
# memcached splits a line into at most 23 tokens (the rest stays one), and
# counts one more, empty, at the end; commands check these counts.
MAX_TOKENS = 24

_new = tuple.__new__


class TextGets(NamedTuple):
    """``GetMany.context`` for get, gets, gat and gats."""

    cas: bool = False  # gets, gats: VALUE lines carry the CAS
    touch: bool = False  # gat, gats: answer with Commands.gat_many(keys, exptime)
    exptime: int = 0
    # A key over 250 bytes: memcached looks up the keys before it, then
    # answers with this error instead of their values.
    error: bytes = b""


# `get <key>` alone, a key that memcached's tokenizer takes as it is: what
# lone answers without the parser (one regex call is a third of the
# slices and scans it replaces).
_LONE_GET = re.compile(rb"get ([^ \r\n\0]{1,250})\r\n").fullmatch
# `set <key> <flags> <exptime> <bytes>` with numbers no sign, white space
# or overflow can make memcached read otherwise: what lone takes of a set.
_LONE_SET = re.compile(rb"set ([^ \r\n\0]{1,250}) ([0-9]{1,9}) ([0-9]{1,9}) ([0-9]{1,7})\r\n").match

_GET = TextGets()
_GETS = TextGets(cas=True)

_BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument"
_BAD_DELTA = b"CLIENT_ERROR invalid numeric delta argument"
_BAD_DELETE = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
_MEMLIMIT_TOO_SMALL = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m"
_MEMLIMIT_TOO_LARGE = b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes"
MIN_MEMLIMIT = 8  # MiB: memcached's floor for cache_memlimit
MAX_MEMLIMIT = 1_000_000_000  # MiB: above this memcached takes it for bytes

# memcached's dispatch (process_command_ascii) sends a command line whose
# name starts with one of these letters (or is any two-letter m...) down a
# branch that answers an unknown name with ERROR; only the rest reach its
# final branch, which hangs up when the last token starts with "HTTP/".
_FAMILY_LETTERS = frozenset(b"gsacidt")
# Names that memcached dispatches and mbserver does not know: ERROR, never
# the HTTP hang-up.
_MEMCACHED_ONLY = frozenset((b"lru_crawler", b"watch", b"lru", b"extstore"))


def _lone_gets(data: bytes) -> GetMany | None:
    """The GetMany of ``data`` if it is exactly ``get <key> <key>...\\r\\n``
    with single spaces and keys memcached's tokenizer takes as they are, as
    the parser would make it; else None. Each test is one scan in C."""
    keys = data[4:-2].split(b" ")
    if (
        b"" in keys
        or max(map(len, keys)) > MAX_KEY_LENGTH
        or data.count(b"\n") != 1
        or data.count(b"\r") != 1
        or b"\0" in data
    ):
        return None
    return _new(GetMany, (keys, _GET))


def _is_get_line(buf: bytes, pos: int) -> bool:
    """memcached's test for a line it may buffer whole: get or gets, after ≤100 spaces."""
    head = buf[pos : pos + MAX_LEADING_SPACES + 6]
    line = head.lstrip(b" ")
    if len(head) - len(line) > MAX_LEADING_SPACES:
        return False
    return line.startswith((b"get ", b"gets "))


# -- parsing ----------------------------------------------------------------


class TextParser(meta.MetaParsing):
    """Incremental text-protocol parser: ``feed(bytes)``, then ``next()`` until None."""

    # Slots: as BinaryParser's.
    __slots__ = ("max_item_size", "buffer", "feed", "_long_line", "_block", "_commands")

    def __init__(self, max_item_size: int = 1 << 20):
        self.max_item_size = max_item_size
        self.buffer = ReceiveBuffer()
        self.feed = self.buffer.feed
        self._long_line = False  # a get line past memcached's 2 KB limit
        # A storage command waiting for its data block: (length, build)
        # where build(value or None for a bad chunk) gives the request.
        self._block: tuple | None = None
        self._commands = {
            b"get": self._get,
            b"bget": self._get,
            b"gets": self._gets,
            b"gat": self._gat,
            b"gats": self._gats,
            b"set": self._set,
            b"add": self._add,
            b"replace": self._replace,
            b"append": self._append,
            b"prepend": self._prepend,
            b"cas": self._cas,
            b"delete": self._delete,
            b"incr": self._incr,
            b"decr": self._decr,
            b"touch": self._touch,
            b"flush_all": self._flush_all,
            b"stats": self._stats,
            b"version": self._version,
            b"verbosity": self._verbosity,
            b"quit": self._quit,
            b"shutdown": self._shutdown,
            b"cache_memlimit": self._cache_memlimit,
            b"refresh_certs": self._refresh_certs,
            b"watch": self._watch,
            b"lru_crawler": self._lru_crawler,
            b"mg": self._mg,
            b"ms": self._ms,
            b"md": self._md,
            b"ma": self._ma,
            b"mn": self._mn,
            b"me": self._me,
        }

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return self.buffer.buffered

    @property
    def partial(self) -> bool:
        """Part of a request is here, the rest not yet (a line, or a data block)."""
        return self.buffer.buffered > 0 or self._block is not None

    @property
    def empty(self) -> bool:
        """Holds nothing: what ``lone`` needs before it may be asked."""
        return self._block is None and self.buffer.empty

    def lone(self, data: bytes) -> tuple[bytes, bytes] | GetMany | Request | None:
        """The request ``data`` holds if it is exactly ``get <key>\\r\\n``, a
        ``get`` of several keys (a ``GetMany``), or one plain ``set`` with
        its data block; else None, and ``data`` is to be fed. Only for a
        parser that is ``empty`` (the caller checks, once per batch).

        As ``BinaryParser.lone``: the commonest requests skip feed, next and
        dispatch. A get comes back as ``(key, key)``, what ``get_reply``
        needs besides the record; a set as the ``Request`` that ``next``
        would make of it. Anything unusual (a byte memcached's tokenizer
        treats specially, noreply, a sign or a long number, a bad data
        block, a value too large) is left to the general parser.
        """
        return lone_reader(self.max_item_size)(data)

    def next(self):
        """The next request, or None until more bytes are fed."""
        buffer = self.buffer
        while True:
            if self._block is not None:
                request = self._data_block()
            else:
                if buffer.pos >= len(buffer.data):
                    return None
                line = buffer.take_line(None if self._long_line else READ_BUFFER_SIZE)
                if line is None:
                    line = self._no_line_yet()
                    if line is None:
                        return None
                self._long_line = False
                request = self._command(line)
            if request is None:
                return None
            if request is not AGAIN:
                return request

    def expect_block(self, length: int, build):
        """A storage command's line is read: its ``length``-byte data block
        comes next, and ``build(value, or None for a bad chunk)`` makes the
        request. Returns what a command parser returns meanwhile."""
        self._block = (length, build)
        return AGAIN

    # -- framing ---------------------------------------------------------

    def _no_line_yet(self) -> bytes | None:
        """No newline in memcached's window: wait, close, or (a get) read on."""
        buffer = self.buffer
        available = len(buffer.data) - buffer.pos
        if self._long_line or available <= LINE_WAIT_LIMIT:
            return None
        if not _is_get_line(buffer.data, buffer.pos):
            raise ProtocolError(
                f"no newline in {min(available, READ_BUFFER_SIZE)} bytes of a command line",
                drop_replies=True,
            )
        self._long_line = True
        return buffer.take_line(None)

    def _data_block(self):
        buffer = self.buffer
        length, build = self._block
        buf = buffer.data
        pos = buffer.pos
        end = pos + length + 2
        if len(buf) < end:
            buffer.collect(end - pos)
            return None
        self._block = None
        buffer.pos = end
        if buf[end - 2 : end] != CRLF:
            return build(None)
        return build(buf[pos : end - 2])

    # -- commands --------------------------------------------------------

    def _command(self, line: bytes):
        nul = line.find(b"\0")
        if nul >= 0:  # memcached reads the line as a C string
            line = line[:nul]
        tokens = line.split(b" ")
        if b"" in tokens:
            tokens = [token for token in tokens if token]
        ntokens = min(len(tokens), MAX_TOKENS - 1) + 1
        if ntokens < 2 or len(tokens[0]) < 2:
            return ERROR
        handler = self._commands.get(tokens[0])
        if handler is None:
            return self._unknown(tokens, ntokens)
        return handler(tokens, ntokens)

    @staticmethod
    def _unknown(tokens, ntokens):
        """ERROR; or, for what looks like an HTTP request line, hang up
        without a reply, exactly where memcached 1.6.18 does."""
        name = tokens[0]
        if (
            tokens[ntokens - 2].startswith(b"HTTP/")
            and name[0] not in _FAMILY_LETTERS
            and not (name[0] == 0x6D and len(name) == 2)  # m.: a meta command's shape
            and name not in _MEMCACHED_ONLY
        ):
            raise ProtocolError("an HTTP request line", drop_replies=True)
        return ERROR

    @staticmethod
    def _fail(line: bytes, noreply: bool):
        return AGAIN if noreply else reply(line)

    @staticmethod
    def _noreply(tokens: list[bytes], ntokens: int) -> bool:
        return tokens[ntokens - 2] == b"noreply"

    # get, gets, gat, gats

    def _get(self, tokens, ntokens):
        return self._keys(tokens, ntokens, 1, _GET)

    def _gets(self, tokens, ntokens):
        return self._keys(tokens, ntokens, 1, _GETS)

    def _gat(self, tokens, ntokens, cas=False):
        if ntokens < 3:
            return ERROR
        exptime = strtol32(tokens[1])
        if exptime is None:
            return reply(_BAD_EXPTIME)
        return self._keys(tokens, ntokens, 2, TextGets(cas, True, exptime))

    def _gats(self, tokens, ntokens):
        return self._gat(tokens, ntokens, cas=True)

    @staticmethod
    def _keys(tokens, ntokens, start, context):
        if ntokens < 3:
            return ERROR
        keys = tokens[start:]
        if keys and max(map(len, keys)) > MAX_KEY_LENGTH:
            for i, key in enumerate(keys):
                if len(key) > MAX_KEY_LENGTH:
                    return _new(GetMany, (keys[:i], context._replace(error=BAD_FORMAT + CRLF)))
        return _new(GetMany, (keys, context))

    # set, add, replace, append, prepend, cas

    def _set(self, tokens, ntokens):
        return self._update(tokens, ntokens, "set")

    def _add(self, tokens, ntokens):
        return self._update(tokens, ntokens, "add")

    def _replace(self, tokens, ntokens):
        return self._update(tokens, ntokens, "replace")

    def _append(self, tokens, ntokens):
        return self._update(tokens, ntokens, "append")

    def _prepend(self, tokens, ntokens):
        return self._update(tokens, ntokens, "prepend")

    def _cas(self, tokens, ntokens):
        # A replace carrying a CAS is the store's compare-and-swap, and like
        # memcached's cas (unlike set) a refused one leaves the old item.
        return self._update(tokens, ntokens, "replace", with_cas=True)

    def _update(self, tokens, ntokens, command, with_cas=False):
        if ntokens not in ((7, 8) if with_cas else (6, 7)):
            return ERROR
        # _noreply, _block and memcached_size written out on the commonest
        # write: each call saved is 2% of a text set (callgrind).
        noreply = tokens[ntokens - 2] == b"noreply"
        key = tokens[1]
        if len(key) > MAX_KEY_LENGTH:
            return self._fail(BAD_FORMAT, noreply)
        flags = strtoul32(tokens[2])
        exptime = strtol32(tokens[3])
        length = strtol32(tokens[4])
        if flags is None or exptime is None or length is None:
            return self._fail(BAD_FORMAT, noreply)
        cas = 0
        if with_cas:
            cas = strtoull(tokens[5])
            if cas is None:
                return self._fail(BAD_FORMAT, noreply)
            cas = cas or NO_CAS_MATCH  # memcached compares a 0 too
        if length < 0 or length > INT32_MAX - 2:
            return self._fail(BAD_FORMAT, noreply)
        size = len(key) + length + MEMCACHED_ITEM_HEADER + (MEMCACHED_FLAGS_SIZE if flags else 0)
        if size > self.max_item_size:
            # memcached answers at once and swallows the block unread.
            self.buffer.skip(length + 2)
            return _new(
                Request,
                (command, key, b"", flags, exptime, cas, 0, None, True, 0, 0, noreply, False),
            )

        def build(value):
            if value is None:
                return AGAIN if noreply else BAD_CHUNK
            return _new(
                Request,
                (command, key, value, flags, exptime, cas, 0, None, False, 0, 0, noreply, False),
            )

        self._block = (length, build)
        return AGAIN

    # the rest of the classic commands

    def _delete(self, tokens, ntokens):
        if not 3 <= ntokens <= 5:
            return ERROR
        noreply = False
        if ntokens > 3:
            zero = tokens[2] == b"0"
            noreply = self._noreply(tokens, ntokens)
            if not (ntokens == 4 and (zero or noreply) or ntokens == 5 and zero and noreply):
                return self._fail(_BAD_DELETE, noreply)
        key = tokens[1]
        if len(key) > MAX_KEY_LENGTH:
            return self._fail(BAD_FORMAT, noreply)
        return Request("delete", key, quiet=noreply)

    def _key_and_number(self, tokens, ntokens, parse, error: bytes):
        """``<command> <key> <number> [noreply]`` (incr, decr, touch):
        ``(key, number, noreply)``, or what to answer instead."""
        if ntokens not in (4, 5):
            return ERROR
        noreply = self._noreply(tokens, ntokens)
        key = tokens[1]
        if len(key) > MAX_KEY_LENGTH:
            return self._fail(BAD_FORMAT, noreply)
        number = parse(tokens[2])
        if number is None:
            return self._fail(error, noreply)
        return key, number, noreply

    def _incr(self, tokens, ntokens):
        return self._arith(tokens, ntokens, "incr")

    def _decr(self, tokens, ntokens):
        return self._arith(tokens, ntokens, "decr")

    def _arith(self, tokens, ntokens, command):
        parsed = self._key_and_number(tokens, ntokens, strtoull, _BAD_DELTA)
        if parsed.__class__ is not tuple:
            return parsed
        key, delta, noreply = parsed
        return Request(command, key, delta=delta, quiet=noreply)

    def _touch(self, tokens, ntokens):
        parsed = self._key_and_number(tokens, ntokens, strtol32, _BAD_EXPTIME)
        if parsed.__class__ is not tuple:
            return parsed
        key, exptime, noreply = parsed
        return Request("touch", key, exptime=exptime, quiet=noreply)

    def _flush_all(self, tokens, ntokens):
        if not 2 <= ntokens <= 4:
            return ERROR
        noreply = self._noreply(tokens, ntokens)
        delay = 0
        if ntokens != (3 if noreply else 2):
            delay = strtol32(tokens[1])
            if delay is None:
                return self._fail(_BAD_EXPTIME, noreply)
        return FlushRequest(delay, noreply)

    def _stats(self, tokens, ntokens):
        if ntokens <= 2:
            return StatsRequest()
        if tokens[1] == b"cachedump":
            return self._cachedump(tokens, ntokens)
        return StatsRequest(tokens[1], tuple(tokens[2 : ntokens - 1]))

    @staticmethod
    def _cachedump(tokens, ntokens):
        """`stats cachedump CLASS LIMIT`, checked as memcached checks it."""
        if ntokens < 5:
            return reply(b"CLIENT_ERROR bad command line")
        cls, limit = strtoul32(tokens[2]), strtoul32(tokens[3])
        if cls is None or limit is None:
            return BAD_FORMAT_REPLY
        if cls > MAX_SLAB_CLASS:
            return reply(b"CLIENT_ERROR Illegal slab id")
        return DumpRequest("cachedump", frozenset((cls,)), limit)

    def _lru_crawler(self, tokens, ntokens):
        """`lru_crawler crawl|metadump CLASSES`, `tocrawl N`, `sleep N`,
        `enable`, `disable`: memcached's checks and errors."""
        verb = tokens[1] if ntokens > 2 else b""
        if ntokens == 4:
            if verb == b"crawl":
                return CrawlerRequest("crawl", _classes(tokens[2]))
            if verb == b"metadump":
                return DumpRequest("metadump", _classes(tokens[2]))
            if verb in (b"tocrawl", b"sleep"):
                number = strtoul32(tokens[2])
                if number is None:
                    return BAD_FORMAT_REPLY
                if verb == b"sleep" and number > 1000000:
                    return reply(b"CLIENT_ERROR sleep must be one second or less")
                return CrawlerRequest(verb.decode(), number=number)
        elif ntokens == 3 and verb in (b"enable", b"disable"):
            return CrawlerRequest(verb.decode())
        return ERROR

    def _version(self, tokens, ntokens):
        return Request("version")

    def _quit(self, tokens, ntokens):
        return Request("quit")

    # operator commands

    def _verbosity(self, tokens, ntokens):
        if ntokens not in (3, 4):
            return ERROR
        noreply = self._noreply(tokens, ntokens)
        level = strtoul32(tokens[1])
        if level is None:
            return self._fail(BAD_FORMAT, noreply)
        return AdminRequest("verbosity", level, quiet=noreply)

    def _shutdown(self, tokens, ntokens):
        # No noreply: memcached reads "shutdown noreply" as an unknown mode.
        if ntokens == 2:
            graceful = False
        elif ntokens == 3 and tokens[1] == b"graceful":
            graceful = True
        else:
            graceful = None
        return AdminRequest("shutdown", graceful=graceful)

    def _cache_memlimit(self, tokens, ntokens):
        if ntokens not in (3, 4):
            return ERROR
        noreply = self._noreply(tokens, ntokens)
        megabytes = strtoul32(tokens[1])
        if megabytes is None:
            return AGAIN if noreply else ERROR  # not CLIENT_ERROR, as memcached
        if megabytes < MIN_MEMLIMIT:
            return self._fail(_MEMLIMIT_TOO_SMALL, noreply)
        if megabytes > MAX_MEMLIMIT:
            return self._fail(_MEMLIMIT_TOO_LARGE, noreply)
        return AdminRequest("cache_memlimit", megabytes, quiet=noreply)

    def _watch(self, tokens, ntokens):
        # As memcached: no kinds means fetchers; an unknown one is an error.
        if ntokens <= 2:
            return WatchRequest(FETCHERS)
        kinds = 0
        for token in tokens[1 : ntokens - 1]:
            kind = WATCH_KINDS.get(token)
            if kind is None:
                return ERROR
            kinds |= kind
        return WatchRequest(kinds)

    def _refresh_certs(self, tokens, ntokens):
        # memcached takes any arguments, and a last "noreply" silences only OK.
        return AdminRequest("refresh_certs", quiet=self._noreply(tokens, ntokens))


@functools.lru_cache(maxsize=None)
def lone_reader(max_item_size: int) -> Callable[[bytes], tuple[bytes, bytes] | GetMany | Request | None]:
    """``TextParser.lone`` for parsers of one item size limit, as a plain
    function that every connection of a server shares (as binary's
    ``lone_reader``)."""

    def lone(data: bytes) -> tuple[bytes, bytes] | GetMany | Request | None:
        if data.__class__ is not bytes:
            return None
        match = _LONE_GET(data)
        if match is not None:
            key = match.group(1)
            return key, key
        match = _LONE_SET(data)
        if match is None:
            if data.startswith(b"get ") and data.endswith(b"\r\n"):
                return _lone_gets(data)
            return None
        key, flags, exptime, length = match.groups()
        flags = int(flags)
        length = int(length)
        start = match.end()
        if (
            len(data) != start + length + 2
            or not data.endswith(b"\r\n")
            or len(key) + length + MEMCACHED_ITEM_HEADER + (MEMCACHED_FLAGS_SIZE if flags else 0)
            > max_item_size
        ):
            return None
        return _new(
            Request,
            (
                "set", key, data[start : start + length], flags, int(exptime),
                0, 0, None, False, 0, 0, False, False,
            ),
        )

    return lone


def _classes(text: bytes) -> frozenset[int] | None | str:
    """A crawl's or metadump's classes: ``all`` or ``hash`` (the whole
    table) is None, ``1,5,9`` those classes, anything else BADCLASS."""
    if text in (b"all", b"hash"):
        return None
    classes = set()
    for field in text.split(b","):
        if not field:
            continue  # memcached's strtok skips empty fields
        cls = strtoul32(field)
        if cls is None or not 1 <= cls <= MAX_SLAB_CLASS:
            return BADCLASS
        classes.add(cls)
    return frozenset(classes)


# -- writing ----------------------------------------------------------------

_END = b"END\r\n"
_CRLF_END = CRLF + _END
_FLAGS_UNPACK = FLAGS.unpack_from
# One item of a get reply with its value formatted in (a value shorter than
# _SHORT_VALUE): a single formatting call instead of a header, a slice and
# two joins. A longer value is concatenated after its VALUE line, never
# formatted in: PyPy's % makes a pass over every byte of a %b argument (it
# counts code points), 5 of the 6 us a text get of a 10 KiB value took
# there. Nor joined: on PyPy, line + value + CRLF costs half of a
# b"".join of the same three, a slice or a view (1.3 against 2.4-2.8 us
# for a 10 KiB value), and CPython takes the same time for either.
_SMALL_ITEM = b"VALUE %b %d %d\r\n%b\r\n"
_SMALL_ITEM_END = _SMALL_ITEM + _END
# With flags 0, the commonest, an item of a value shorter than _SHORT_VALUE
# is joined from pieces instead: "VALUE ", the key, " 0 <bytes>\r\n" from
# this table, the value, CRLF. Formatting costs a fifth more than that join,
# most of it in the %d (callgrind: 3,975 -> 3,158 instructions an item on a
# get of 100 keys). The table is about 230 KiB.
_SHORT_VALUE = 4096
_FLAGS_0_LENGTH = [b" 0 %d\r\n" % length for length in range(_SHORT_VALUE)]
_VALUE_ = b"VALUE "


def _value_line(key: bytes, rec: bytes, with_cas: bool) -> bytes:
    """``VALUE <key> <flags> <bytes> [<cas>]\\r\\n`` for an item record."""
    flags = _FLAGS_UNPACK(rec, FLAGS_OFFSET)[0]
    if with_cas:
        cas = CAS.unpack_from(rec, CAS_OFFSET)[0]
        return b"VALUE %b %d %d %d\r\n" % (key, flags, len(rec) - VALUE_OFFSET, cas)
    return b"VALUE %b %d %d\r\n" % (key, flags, len(rec) - VALUE_OFFSET)


def _frame_value(out: list, key: bytes, with_cas: bool, rec: bytes | None) -> int:
    """Append one item of a get reply (nothing for a miss); its size. A
    large value goes by view."""
    if rec is None:
        return 0
    length = len(rec) - VALUE_OFFSET
    if length < COPY_LIMIT:
        item = _one_value(key, with_cas, rec)
        out.append(item)
        return len(item)
    head = _value_line(key, rec, with_cas)
    out.append(head)
    out.append(memoryview(rec)[VALUE_OFFSET:])
    out.append(CRLF)
    return len(head) + length + 2


def _one_value(key: bytes, with_cas: bool, rec: bytes) -> bytes:
    """One item of a get reply, its value copied in."""
    length = len(rec) - VALUE_OFFSET
    if with_cas or length >= _SHORT_VALUE:
        return _value_line(key, rec, with_cas) + rec[VALUE_OFFSET:] + CRLF
    return _SMALL_ITEM % (key, _FLAGS_UNPACK(rec, FLAGS_OFFSET)[0], length, rec[VALUE_OFFSET:])


def _frame_small_values(run: GetMany, records: list) -> bytes:
    """The items of a get reply whose values are all small, at once (no END)."""
    if run.context.cas:
        return b"".join([
            _one_value(key, True, rec) for key, rec in zip(run.keys, records) if rec is not None
        ])
    unpack = _FLAGS_UNPACK
    lengths = _FLAGS_0_LENGTH
    parts: list[bytes] = []
    add = parts.extend
    for key, rec in zip(run.keys, records):
        if rec is not None:
            length = len(rec) - VALUE_OFFSET
            flags = unpack(rec, FLAGS_OFFSET)[0]
            if length >= _SHORT_VALUE:
                parts.append(_one_value(key, False, rec))
            elif not flags:
                add((_VALUE_, key, lengths[length], rec[VALUE_OFFSET:], CRLF))
            else:
                parts.append(_SMALL_ITEM % (key, flags, length, rec[VALUE_OFFSET:]))
    return b"".join(parts)


def get_reply(key: bytes, rec: bytes | None) -> bytes:
    """The reply to a lone ``get <key>``, given its item record or None.

    ``_one_value`` and END in one join or formatting call (the lone GET is
    the commonest request), and a long value concatenated after its line.
    """
    if rec is None:
        return _END
    length = len(rec) - VALUE_OFFSET
    if length < _SHORT_VALUE:
        flags = _FLAGS_UNPACK(rec, FLAGS_OFFSET)[0]
        if not flags:
            return b"".join((_VALUE_, key, _FLAGS_0_LENGTH[length], rec[VALUE_OFFSET:], _CRLF_END))
        return _SMALL_ITEM_END % (key, flags, length, rec[VALUE_OFFSET:])
    return _value_line(key, rec, False) + rec[VALUE_OFFSET:] + _CRLF_END


def write_text_gets(
    run: GetMany, records: list, out: list, start: int = 0, limit: int = 1 << 62
) -> tuple[int, int]:
    """Append the reply to a get/gets/gat/gats, given each key's record or None.

    As ``binary.write_gets``: writes from entry ``start`` on and stops once
    ``limit`` bytes are written (see ``write_run``); returns the bytes
    written and the index of the first entry not yet written. END follows
    the last entry.
    """
    context = run.context
    if context.error:
        out.append(context.error)
        return len(context.error), len(records)
    written, index = write_run(
        _frame_small_values, _frame_value, run, repeat(context.cas), records, out, start, limit
    )
    if index == len(records):
        out.append(_END)
        written += len(_END)
    return written, index


_STORE_REPLIES = {
    OK: b"STORED\r\n",
    NOT_STORED: b"NOT_STORED\r\n",
    EXISTS: b"EXISTS\r\n",
    NOT_FOUND: b"NOT_FOUND\r\n",
    TOO_LARGE: b"SERVER_ERROR object too large for cache\r\n",
    NO_MEMORY: b"SERVER_ERROR out of memory storing object\r\n",
}
_STORED = _STORE_REPLIES[OK]
_NOT_FOUND = b"NOT_FOUND\r\n"
_VERSION = b"VERSION %b\r\n" % PROTOCOL_VERSION.encode()


def store_reply(request: Request, result: Result) -> bytes:
    """The reply to a store (set, add, replace, append, prepend, cas); b"" for noreply.

    STORED is tested for first: a Status is an Enum, whose hash is a Python
    call (callgrind: 700 instructions a set).
    """
    if request.quiet:
        return b""
    status = result.status
    return _STORED if status is OK else _STORE_REPLIES[status]


def _write_store(request: Request, result: Result, out: list) -> int:
    reply = store_reply(request, result)
    return put(out, reply) if reply else 0


def _ok_or_not_found(ok: bytes):
    """A writer answering ``ok`` on success and NOT_FOUND otherwise (delete, touch)."""

    def write(request: Request, result: Result, out: list) -> int:
        if request.quiet:
            return 0
        return put(out, ok if result.status is OK else _NOT_FOUND)

    return write


_write_delete = _ok_or_not_found(b"DELETED\r\n")
_write_touch = _ok_or_not_found(b"TOUCHED\r\n")


def _write_arith(request: Request, result: Result, out: list) -> int:
    if request.quiet:
        return 0
    if result.status is OK:
        return put(out, b"%d\r\n" % result.number)
    return put(out, ARITH_ERRORS[result.status])


def _write_flush(request: FlushRequest, result: Result, out: list) -> int:
    return 0 if request.quiet else put(out, b"OK\r\n")


_DETAIL_USAGE = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"


def _write_stats(request: StatsRequest, result: Result, out: list) -> int:
    group = request.group
    if group == b"detail":
        if result.status is not OK:
            return put(out, _DETAIL_USAGE)
        if result.stats:  # dump: the PREFIX lines and END
            return put(out, result.stats[0][1].encode("utf-8", "surrogateescape"))
        return put(out, b"OK\r\n")
    if result.status is not OK:
        return put(out, b"ERROR\r\n")
    if group == b"reset":
        return put(out, b"RESET\r\n")
    lines = [b"STAT %s %s\r\n" % (name.encode(), value.encode()) for name, value in result.stats]
    if group not in (b"sizes_enable", b"sizes_disable"):  # memcached sends these without END
        lines.append(_END)
    return put(out, b"".join(lines))


def _write_lru_crawler(request: CrawlerRequest, result: CrawlerResult, out: list) -> int:
    return put(out, result.line.encode() + CRLF)


def _write_version(request: Request, result: Result, out: list) -> int:
    return put(out, _VERSION)


def _write_admin(request: AdminRequest, result: AdminResult, out: list) -> int:
    """OK (unless noreply) or memcached's refusal; an accepted shutdown
    writes nothing (``TextProtocol`` closes the connection)."""
    status = result.status
    if status == ADMIN_OK:
        if request.quiet or request.command == "shutdown":
            return 0
        return put(out, b"OK\r\n")
    if status == ADMIN_DISABLED:
        return put(out, b"ERROR: shutdown not enabled\r\n")
    if status == ADMIN_BAD_MODE:
        return put(out, b"CLIENT_ERROR invalid shutdown mode\r\n")
    # refresh_certs: memcached sends its error line even after noreply.
    return put(out, result.message.encode("utf-8", "replace") + CRLF)


def _write_nothing(request: Request, result: Result, out: list) -> int:
    return 0  # quit: the connection closes


def _write_reply(request: Reply, result: Result | None, out: list) -> int:
    return put(out, request.data)  # only write_text's callers: TextProtocol answers its own


_WRITERS = {
    "set": _write_store,
    "add": _write_store,
    "replace": _write_store,
    "append": _write_store,
    "prepend": _write_store,
    "delete": _write_delete,
    "incr": _write_arith,
    "decr": _write_arith,
    "touch": _write_touch,
    "flush": _write_flush,
    "stats": _write_stats,
    "lru_crawler": _write_lru_crawler,
    "version": _write_version,
    "quit": _write_nothing,
    "shutdown": _write_admin,
    "cache_memlimit": _write_admin,
    "verbosity": _write_admin,
    "refresh_certs": _write_admin,
    "reply": _write_reply,
    **meta.WRITERS,
}


def write_text(request, result, out: list) -> int:
    """Append the reply to ``request`` (nothing, for noreply and quit) to out.

    Returns the number of bytes appended.
    """
    return _WRITERS[request.command](request, result, out)


# -- the protocol object ------------------------------------------------------


class TextProtocol(Answering):
    """The text protocol for one connection: parse, answer, authenticate (memcached's -Y)."""

    name = "text"
    get_reply = staticmethod(get_reply)
    store_reply = staticmethod(store_reply)

    WRITERS = _WRITERS

    def __init__(self, commands, settings, auth, peer):
        super().__init__(commands, auth, peer)
        self.parser = TextParser(settings.max_item_size)
        # Until a client has authenticated, every request goes the long way.
        self.lone = lone_reader(settings.max_item_size) if auth is None else None
        self._own["reply"] = self._canned
        self._own["shutdown"] = self._shutdown
        self._own["watch"] = self._watch
        self.watcher = None  # set once the connection has become a log watcher
        self._own["dump"] = self._dump

    @staticmethod
    def _canned(request: Reply, out: list) -> int:
        return put(out, request.data)

    def _shutdown(self, request: AdminRequest, out: list) -> int:
        result = self.commands.execute(request)
        if result.status == ADMIN_OK:
            # As memcached: the connection that asked closes without a reply.
            self.closing = True
        return _write_admin(request, result, out)

    def _watch(self, request: WatchRequest, out: list) -> int:
        """`watch`: this connection stops taking commands and streams log lines."""
        watcher = self.commands.logger.add(request.kinds)
        if watcher is None:
            return put(out, b"WATCHER_TOO_MANY log watcher limit reached\r\n")
        self.watcher = watcher
        self.closing = True  # to commands: the connection streams the log from now on
        return put(out, b"OK\r\n")
    def _dump(self, request: DumpRequest, out: list) -> int:
        """A key dump, streamed: each slice of items is written and sent
        before the next is read, so neither the store lock nor the dump
        itself is ever held whole (see ``dumps``)."""
        crawler = self.commands.crawler
        if request.kind == "metadump":
            if not crawler.enabled:
                return put(out, b"CLIENT_ERROR lru crawler disabled\r\n")
            if out:  # replies still to send: memcached hands the socket to its crawler
                return put(out, b"ERROR cannot pipeline other commands before metadump\r\n")
        if request.classes == BADCLASS:
            return put(out, BADCLASS.encode() + CRLF)
        self.unfinished = Chunks(dumps.chunks(self.commands, request))
        return 0

    def answer_gets(self, run: GetMany, out: list, pending: int) -> int:
        if not self.authenticated:
            return pending + self._before_auth(run, out)
        context = run.context
        if context.error:
            records = []
        elif context.touch:
            records = self.commands.gat_many(run.keys, context.exptime)
        else:
            records = self.commands.get_many(run.keys)
        return self._write_run(write_text_gets, run, records, out, pending)

    def _before_auth(self, request, out: list) -> int:
        """memcached's text-protocol authentication (its -Y): the first command
        must be a ``set`` whose value is ``user password``; anything else, or
        a wrong password, is refused and the connection closed."""
        refusal = b"CLIENT_ERROR unauthenticated\r\n"
        if request.__class__ is Request and request.command == "set" and not request.refused:
            self.stats.auth_cmds += 1
            user, _, password = request.value.partition(b" ")
            name = self.auth.check(user, password)
            if name is not None:
                self.authenticated = True
                log.info("%s: authenticated as %s", self.peer, name)
                return 0 if request.quiet else put(out, b"STORED\r\n")
            refusal = b"CLIENT_ERROR authentication failure\r\n"
        self.stats.auth_errors += 1
        return self._closing_after(refusal, out, "text command without authentication")

"""The memcached text protocol and its meta commands, sans I/O: bytes in → requests; results → bytes.

What lives here: finding command lines and data blocks in the byte stream
under memcached's limits, tokenizing and validating each command exactly as
memcached 1.6.18 does (its error strings, its C number parsing, its base64
keys), and writing each result as memcached writes it. What does not:
sockets (``connection``) and command semantics (``commands``).

``TextParser`` buffers what it is fed; ``next()`` hands out, one at a time:

- ``GetMany`` for get, gets, gat, gats (one per command line), its context a
  ``TextGets``: answer it with ``Commands.get_many(keys)``, or for a GAT
  (``context.touch``) ``Commands.gat_many(keys, context.exptime)``, then
  ``write_text_gets``;
- ``commands.Request`` for the classic commands, with the command layer's
  names (text ``cas`` is a ``replace`` carrying a CAS; ``flush_all`` is
  ``flush``; ``noreply`` is ``quiet``), and for replies the codec makes
  itself: command ``"unknown"`` with the reply bytes in ``value`` (errors,
  ``verbosity``, ``mn``), which the command layer executes as a no-op;
- ``commands.MetaRequest`` for mg, ms, md, ma, me.

Every one of them is executed with ``Commands.execute`` (GetMany aside) and
written with ``write_text``. ``Request("quit")`` writes nothing: close the
connection. A line memcached would not buffer (over 2048 bytes with no
newline, or no newline in its 16 KB read buffer, unless it is a get) raises
``ProtocolError``, with no reply: close. Nothing else closes: a bad data
chunk, an oversized value (skipped as it arrives, never buffered) and every
malformed command get memcached's reply and the stream goes on.
"""

from __future__ import annotations

import base64
import re
import struct
from typing import NamedTuple

from .. import PROTOCOL_VERSION
from ..commands import NO_CAS_MATCH, GetMany, MetaRequest, MetaResult, Request, Result
from ..store import (
    CAS_OFFSET,
    EXISTS,
    FLAGS_OFFSET,
    MAX_KEY_LENGTH,
    MEMCACHED_ITEM_HEADER,
    NO_MEMORY,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    OK,
    TOO_LARGE,
    VALUE_OFFSET,
)
from .binary import ProtocolError

__all__ = [
    "ProtocolError",
    "TextGets",
    "TextParser",
    "write_text",
    "write_text_gets",
]

# memcached reads into a 16 KB buffer and, finding no newline in more than
# 2 KB of it, closes the connection unless the line is a get or gets (a
# multi-get may be long; it then buffers the whole line).
READ_BUFFER_SIZE = 16384
LINE_WAIT_LIMIT = 2048
MAX_LEADING_SPACES = 100
# memcached splits a line into at most 23 tokens (the rest stays one), and
# counts one more, empty, at the end; commands check these counts.
MAX_TOKENS = 24
META_MAX_TOKENS = 20  # MFLAG_MAX_OPT_LENGTH: a meta command with more is refused
MAX_OPAQUE_LENGTH = 32  # an O token, its letter included
INT32_MAX = (1 << 31) - 1
UINT64_MAX = (1 << 64) - 1
_FLAGS_COST = 4  # a non-zero client flags field makes memcached's item 4 bytes larger

_new = tuple.__new__
_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")
CRLF = b"\r\n"


class TextGets(NamedTuple):
    """``GetMany.context`` for get, gets, gat and gats."""

    cas: bool = False  # gets, gats: VALUE lines carry the CAS
    touch: bool = False  # gat, gats: answer with Commands.gat_many(keys, exptime)
    exptime: int = 0
    # A key over 250 bytes: memcached looks up the keys before it, then
    # answers with this error instead of their values.
    error: bytes = b""


_GET = TextGets()
_GETS = TextGets(cas=True)


def _reply(line: bytes) -> Request:
    """A request the codec answers itself with ``line``."""
    return Request("unknown", value=line + CRLF)


ERROR = _reply(b"ERROR")
BAD_FORMAT = b"CLIENT_ERROR bad command line format"
_BAD_FORMAT = _reply(BAD_FORMAT)
_BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument"
_BAD_DELTA = b"CLIENT_ERROR invalid numeric delta argument"
_BAD_DELETE = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
_BAD_CHUNK = _reply(b"CLIENT_ERROR bad data chunk")
_OPAQUE_TOO_LONG = b"CLIENT_ERROR opaque token too long\r\n"
_MN = _reply(b"MN")
_OK = _reply(b"OK")
_SHUTDOWN = _reply(b"ERROR: shutdown not enabled")
_INVALID_META = _reply(b"CLIENT_ERROR invalid or duplicate flag")
_TOO_MANY_META = _reply(b"CLIENT_ERROR options flags too long")
# A line that was consumed and has nothing to say (noreply), or a storage
# command now waiting for its data block: look at the stream again.
_AGAIN = object()


# -- numbers, as memcached's safe_strto* read them --------------------------

# strtoull and friends: optional leading white space, a sign, digits; the
# number must then end or be followed by white space. Possessive, so that a
# line of digits cannot make the match backtrack.
_NUMBER = re.compile(rb"[ \t\n\v\f\r]*+([+-]?)([0-9]++)(?:[ \t\n\v\f\r]|\Z)")


def _digits(token: bytes) -> tuple[bool, int] | None:
    match = _NUMBER.match(token)
    if match is None:
        return None
    digits = match.group(2).lstrip(b"0")
    if len(digits) > 20:  # past 2**64 (and past what int() parses quickly)
        return match.group(1) == b"-", UINT64_MAX + 1
    return match.group(1) == b"-", int(digits or b"0")


def strtoull(token: bytes) -> int | None:
    """memcached's safe_strtoull: an unsigned 64-bit number, or None.

    As C's strtoull, "-5" is 2**64 - 5, which memcached then refuses
    because it sees a minus sign on a number that is negative as signed.
    """
    if len(token) < 20 and token.isdigit():
        return int(token)
    parsed = _digits(token)
    if parsed is None:
        return None
    negative, number = parsed
    if number > UINT64_MAX:
        return None  # ERANGE
    if negative and number:
        number = (1 << 64) - number
        if number >> 63:
            return None
    return number


def strtoul32(token: bytes) -> int | None:
    """memcached's safe_strtoul into a uint32: a 64-bit strtoul, truncated."""
    if len(token) < 10 and token.isdigit():
        return int(token)
    number = strtoull(token)
    return None if number is None else number & 0xFFFFFFFF


def strtol32(token: bytes) -> int | None:
    """memcached's safe_strtol into an int32: a 64-bit strtol, truncated."""
    if len(token) < 10 and token.isdigit():
        return int(token)
    parsed = _digits(token)
    if parsed is None:
        return None
    negative, number = parsed
    if negative:
        number = -number
    if not -(1 << 63) <= number < 1 << 63:
        return None  # ERANGE
    return ((number + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


# -- base64 keys, as memcached's decoder reads them --------------------------

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUES = [-1] * 256
for _i, _c in enumerate(_B64_ALPHABET):
    _B64_VALUES[_c] = _i
_B64_VALUES[ord("=")] = 0


def b64decode(token: bytes) -> bytes | None:
    """memcached's base64_decode: the key, or None where it reports failure.

    It skips characters outside the alphabet, needs a multiple of four
    that remain, and stops after the first block with padding.
    """
    values = _B64_VALUES
    kept = [c for c in token if values[c] >= 0]
    if not kept or len(kept) % 4:
        return None
    out = bytearray()
    pad = 0
    for i in range(0, len(kept), 4):
        block = kept[i : i + 4]
        pad += block.count(61)
        a, b, c, d = (values[x] for x in block)
        out += bytes(((a << 2 | b >> 4) & 255, (b << 4 | c >> 2) & 255, (c << 6 | d) & 255))
        if pad:
            if pad > 2:
                return None
            del out[-pad:]
            break
    return bytes(out)


def _key_token(key: bytes, binary: bool) -> bytes:
    """A meta reply's k flag: the key, base64-encoded (and flagged b) if it came so."""
    return b" k" + base64.b64encode(key) + b" b" if binary else b" k" + key


# -- parsing ----------------------------------------------------------------


class _Flags:
    """A meta command's flags, as memcached's _meta_flag_preparse leaves them."""

    __slots__ = (
        "binary",
        "cas",
        "client_flags",
        "delta",
        "initial",
        "key",
        "mode",
        "recache",
        "ttl",
        "vivify",
    )

    def __init__(self, key: bytes):
        self.key = key
        self.binary = False
        self.ttl = self.vivify = self.recache = self.cas = None
        self.client_flags = 0
        self.mode = ""
        self.delta = 1
        self.initial = 0


def _preparse(tokens: list[bytes], start: int) -> tuple[_Flags, bytes | None]:
    """Parse meta flags from tokens[start:]: (flags, None) or (flags, the error line).

    As memcached: an unknown or repeated flag ends the parse; other bad
    tokens are noted and the parse goes on, the last one naming the error.
    """
    flags = _Flags(tokens[1])
    seen = set()
    error = None
    failed = False
    for token in tokens[start:]:
        letter = token[0]
        if letter >= 127 or letter in seen:
            return flags, b"CLIENT_ERROR duplicate flag"
        seen.add(letter)
        if letter == 98:  # b
            key = b64decode(flags.key)
            if key is None:
                error, failed = b"CLIENT_ERROR error decoding key", True
            else:
                flags.key = key
                flags.binary = True
        elif letter in (78, 84, 82):  # N T R
            number = strtol32(token[1:])
            if number is None:
                error, failed = b"CLIENT_ERROR bad token in command line format", True
            elif letter == 78:
                flags.vivify = number
            elif letter == 84:
                flags.ttl = number
            else:
                flags.recache = number
        elif letter == 70:  # F: memcached notes the failure but not its name
            number = strtoul32(token[1:])
            if number is None:
                failed = True
            else:
                flags.client_flags = number
        elif letter == 67:  # C
            flags.cas = strtoull(token[1:])
            if flags.cas is None:
                error, failed = b"CLIENT_ERROR bad token in command line format", True
        elif letter == 77:  # M
            if len(token) != 2:
                error, failed = b"CLIENT_ERROR incorrect length for M token", True
            else:
                flags.mode = chr(token[1])
        elif letter == 74:  # J
            number = strtoull(token[1:])
            if number is None:
                error, failed = b"CLIENT_ERROR invalid numeric initial value", True
            else:
                flags.initial = number
        elif letter == 68:  # D
            number = strtoull(token[1:])
            if number is None:
                error, failed = b"CLIENT_ERROR invalid numeric delta value", True
            else:
                flags.delta = number
        elif letter not in _PLAIN_FLAGS:
            return flags, b"CLIENT_ERROR invalid flag"
    if failed:
        return flags, error or BAD_FORMAT
    return flags, None


# Flags memcached accepts on any meta command without a token to parse.
_PLAIN_FLAGS = frozenset(b"lOPLkstcfvhuqI")

_MS_MODES = {"": "set", "S": "set", "E": "add", "A": "append", "P": "prepend", "R": "replace"}
_MA_MODES = {"": "incr", "I": "incr", "+": "incr", "D": "decr", "-": "decr"}


def _opaque_too_long(tokens: list[bytes], start: int) -> int | None:
    """The index (among the flags) of the first O token over 32 bytes, or None."""
    for i, token in enumerate(tokens[start:]):
        if token[0] == 79 and len(token) > MAX_OPAQUE_LENGTH:
            return i
    return None


def _order(tokens: list[bytes], start: int) -> str:
    return "".join([chr(token[0]) for token in tokens[start:]])


def _is_get_line(buf: bytes, pos: int) -> bool:
    """memcached's test for a line it may buffer whole: get or gets, after ≤100 spaces."""
    head = buf[pos : pos + MAX_LEADING_SPACES + 6]
    line = head.lstrip(b" ")
    if len(head) - len(line) > MAX_LEADING_SPACES:
        return False
    return line.startswith((b"get ", b"gets "))


class TextParser:
    """Incremental text-protocol parser: ``feed(bytes)``, then ``next()`` until None."""

    # A line or data block still incomplete past this size is collected as a
    # list of chunks and joined once whole, so a large value or multi-get
    # costs one copy however many reads it arrives in.
    _COLLECT_AT = 1 << 16

    def __init__(self, max_item_size: int = 1 << 20):
        self.max_item_size = max_item_size
        self._buf = b""
        self._pos = 0
        self._skip = 0  # bytes of a refused data block still to discard
        self._chunks: list[bytes] | None = None  # collecting a large line or block
        self._collected = 0
        self._wanted = 0  # the block's size; 0 while collecting a line
        self._scanned = 0  # bytes from _pos known to hold no newline
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
            b"mg": self._mg,
            b"ms": self._ms,
            b"md": self._md,
            b"ma": self._ma,
            b"mn": self._mn,
            b"me": self._me,
        }

    def lone_get(self, data: bytes) -> tuple[bytes, bytes] | None:
        """``(key, key)`` if ``data`` is exactly ``get <key>\\r\\n`` and nothing
        is buffered; else None, and ``data`` is to be fed.

        As ``BinaryParser.lone_get``: the commonest request skips feed and
        next. The second element is what ``get_reply`` needs besides the
        record. Anything unusual in the key (a byte memcached's tokenizer
        treats specially) is left to the general parser.
        """
        if (
            data[:4] == b"get "
            and data[-2:] == CRLF
            and self._pos >= len(self._buf)
            and self._chunks is None
            and self._block is None
            and not self._skip
            and data.__class__ is bytes
        ):
            key = data[4:-2]
            if (
                0 < len(key) <= MAX_KEY_LENGTH
                and b" " not in key
                and b"\n" not in key
                and b"\r" not in key
                and b"\0" not in key
            ):
                return key, key
        return None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        if self._chunks is not None:
            return self._collected
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if data.__class__ is not bytes:
            data = bytes(data)
        if self._chunks is not None:
            self._chunks.append(data)
            self._collected += len(data)
            if (self._collected >= self._wanted) if self._wanted else (b"\n" in data):
                if not self._wanted:
                    self._scanned = self._collected - len(data)
                self._buf = b"".join(self._chunks)
                self._pos = 0
                self._chunks = None
            return
        if self._pos >= len(self._buf):
            if self._skip:
                dropped = min(self._skip, len(data))
                self._skip -= dropped
                data = data[dropped:]
            self._buf = data
        else:
            self._buf = self._buf[self._pos :] + data
        self._pos = 0

    def next(self) -> Request | GetMany | MetaRequest | None:
        """The next request, or None until more bytes are fed."""
        while True:
            if self._chunks is not None:
                return None
            buf = self._buf
            pos = self._pos
            if self._skip:
                dropped = min(self._skip, len(buf) - pos)
                self._skip -= dropped
                pos = self._pos = pos + dropped
                if self._skip:
                    return None
            if self._block is not None:
                request = self._data_block(buf, pos)
            else:
                line = self._line(buf, pos)
                if line is None:
                    return None
                request = self._command(line)
            if request is None:
                return None
            if request is not _AGAIN:
                return request

    # -- framing ---------------------------------------------------------

    def _line(self, buf: bytes, pos: int) -> bytes | None:
        end = len(buf)
        avail = end - pos
        if avail <= 0:
            return None
        if self._long_line:
            nl = buf.find(b"\n", pos + self._scanned)
        else:
            window = pos + READ_BUFFER_SIZE
            nl = buf.find(b"\n", pos + self._scanned, window)
            if nl < 0:
                if avail <= LINE_WAIT_LIMIT:
                    self._scanned = avail
                    return None
                if not _is_get_line(buf, pos):
                    raise ProtocolError(
                        f"no newline in {min(avail, READ_BUFFER_SIZE)} bytes of a command line"
                    )
                self._long_line = True
                nl = buf.find(b"\n", min(window, end))
        if nl < 0:
            self._scanned = avail
            if avail > self._COLLECT_AT:
                self._collect(buf, pos, 0)
            return None
        self._long_line = False
        self._scanned = 0
        self._pos = nl + 1
        # As memcached: one \r before the \n goes, unless it is all the line.
        if nl - pos > 1 and buf[nl - 1] == 13:
            nl -= 1
        return buf[pos:nl]

    def _collect(self, buf: bytes, pos: int, wanted: int) -> None:
        self._chunks = [buf[pos:]]
        self._collected = len(buf) - pos
        self._wanted = wanted
        self._buf = b""
        self._pos = 0

    def _data_block(self, buf: bytes, pos: int):
        length, build = self._block
        end = pos + length + 2
        if len(buf) < end:
            if end - pos > self._COLLECT_AT:
                self._collect(buf, pos, end - pos)
            return None
        self._block = None
        self._pos = end
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
            return ERROR
        return handler(tokens, ntokens)

    @staticmethod
    def _fail(line: bytes, noreply: bool):
        return _AGAIN if noreply else _reply(line)

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
            return _reply(_BAD_EXPTIME)
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
        size = len(key) + length + MEMCACHED_ITEM_HEADER + (_FLAGS_COST if flags else 0)
        if size > self.max_item_size:
            # memcached answers at once and swallows the block unread.
            self._skip = length + 2
            return _new(
                Request,
                (command, key, b"", flags, exptime, cas, 0, None, True, 0, 0, noreply, False),
            )

        def build(value):
            if value is None:
                return _AGAIN if noreply else _BAD_CHUNK
            return _new(
                Request,
                (command, key, value, flags, exptime, cas, 0, None, False, 0, 0, noreply, False),
            )

        self._block = (length, build)
        return _AGAIN

    # the rest of the classic commands

    def _delete(self, tokens, ntokens):
        if not 3 <= ntokens <= 5:
            return ERROR
        noreply = False
        if ntokens > 3:
            zero = tokens[2] == b"0"
            noreply = tokens[ntokens - 2] == b"noreply"
            if not (ntokens == 4 and (zero or noreply) or ntokens == 5 and zero and noreply):
                return self._fail(_BAD_DELETE, noreply)
        key = tokens[1]
        if len(key) > MAX_KEY_LENGTH:
            return self._fail(BAD_FORMAT, noreply)
        return Request("delete", key, quiet=noreply)

    def _incr(self, tokens, ntokens):
        return self._arith(tokens, ntokens, "incr")

    def _decr(self, tokens, ntokens):
        return self._arith(tokens, ntokens, "decr")

    def _arith(self, tokens, ntokens, command):
        if ntokens not in (4, 5):
            return ERROR
        noreply = tokens[ntokens - 2] == b"noreply"
        key = tokens[1]
        if len(key) > MAX_KEY_LENGTH:
            return self._fail(BAD_FORMAT, noreply)
        delta = strtoull(tokens[2])
        if delta is None:
            return self._fail(_BAD_DELTA, noreply)
        return Request(command, key, delta=delta, quiet=noreply)

    def _touch(self, tokens, ntokens):
        if ntokens not in (4, 5):
            return ERROR
        noreply = tokens[ntokens - 2] == b"noreply"
        key = tokens[1]
        if len(key) > MAX_KEY_LENGTH:
            return self._fail(BAD_FORMAT, noreply)
        exptime = strtol32(tokens[2])
        if exptime is None:
            return self._fail(_BAD_EXPTIME, noreply)
        return Request("touch", key, exptime=exptime, quiet=noreply)

    def _flush_all(self, tokens, ntokens):
        if not 2 <= ntokens <= 4:
            return ERROR
        noreply = tokens[ntokens - 2] == b"noreply"
        delay = 0
        if ntokens != (3 if noreply else 2):
            delay = strtol32(tokens[1])
            if delay is None:
                return self._fail(_BAD_EXPTIME, noreply)
        return Request("flush", exptime=delay, quiet=noreply)

    def _stats(self, tokens, ntokens):
        return Request("stats", tokens[1] if ntokens > 2 else b"")

    def _version(self, tokens, ntokens):
        return Request("version")

    def _verbosity(self, tokens, ntokens):
        if ntokens not in (3, 4):
            return ERROR
        noreply = tokens[ntokens - 2] == b"noreply"
        if strtoul32(tokens[1]) is None:
            return self._fail(BAD_FORMAT, noreply)
        return _AGAIN if noreply else _OK

    def _quit(self, tokens, ntokens):
        return Request("quit")

    def _shutdown(self, tokens, ntokens):
        return _SHUTDOWN  # as memcached started without --enable-shutdown

    # meta commands

    def _mn(self, tokens, ntokens):
        return _MN

    def _mg(self, tokens, ntokens):
        if ntokens < 3:
            return ERROR
        if len(tokens[1]) > MAX_KEY_LENGTH:
            return _BAD_FORMAT
        if ntokens > META_MAX_TOKENS:
            return _reply(b"CLIENT_ERROR options flags are too long")
        flags, error = _preparse(tokens, 2)
        if error is not None:
            return _reply(error)
        return MetaRequest(
            "mg",
            flags.key,
            order=_order(tokens, 2),
            ttl=flags.ttl,
            vivify=flags.vivify,
            recache=flags.recache,
            abort_at=_opaque_too_long(tokens, 2),
            context=tokens[2:],
        )

    def _ms(self, tokens, ntokens):
        if ntokens < 3:
            return ERROR
        if len(tokens[1]) > MAX_KEY_LENGTH or ntokens == 3:
            return _BAD_FORMAT
        if ntokens > META_MAX_TOKENS:
            return _TOO_MANY_META
        length = strtol32(tokens[2])
        if length is None or length < 0 or length > INT32_MAX - 2:
            return _BAD_FORMAT
        flags, error = _preparse(tokens, 3)
        mode = _MS_MODES.get(flags.mode)
        if error is None and mode is None:
            error = b"CLIENT_ERROR invalid mode for ms M token"
        if error is None and _opaque_too_long(tokens, 3) is not None:
            error = _OPAQUE_TOO_LONG[:-2]
        if error is not None:
            self._skip = length + 2  # memcached swallows the block after an error
            return _reply(error)
        key = flags.key
        request = MetaRequest(
            "ms",
            key,
            order=_order(tokens, 3),
            ttl=flags.ttl,
            client_flags=flags.client_flags,
            compare_cas=flags.cas,
            mode=mode,
            context=tokens[3:],
        )
        size = len(key) + length + MEMCACHED_ITEM_HEADER
        if size + (_FLAGS_COST if flags.client_flags else 0) > self.max_item_size:
            self._skip = length + 2
            return request._replace(refused=True)

        def build(value):
            return _BAD_CHUNK if value is None else request._replace(value=value)

        self._block = (length, build)
        return _AGAIN

    @staticmethod
    def _meta_flags(tokens, ntokens):
        """The flags of an md or ma line, or the error reply memcached gives it."""
        if ntokens < 3:
            return None, ERROR
        if len(tokens[1]) > MAX_KEY_LENGTH:
            return None, _BAD_FORMAT
        if ntokens > META_MAX_TOKENS:
            return None, _TOO_MANY_META
        flags, error = _preparse(tokens, 2)
        if error is not None:
            return None, _INVALID_META
        return flags, None

    def _md(self, tokens, ntokens):
        flags, error = self._meta_flags(tokens, ntokens)
        if error is not None:
            return error
        if _opaque_too_long(tokens, 2) is not None:
            return _reply(_OPAQUE_TOO_LONG[:-2])
        return MetaRequest(
            "md",
            flags.key,
            order=_order(tokens, 2),
            ttl=flags.ttl,
            compare_cas=flags.cas,
            context=tokens[2:],
        )

    def _ma(self, tokens, ntokens):
        flags, error = self._meta_flags(tokens, ntokens)
        if error is not None:
            return error
        mode = _MA_MODES.get(flags.mode)
        if mode is None:
            return _reply(b"CLIENT_ERROR invalid mode for ma M token")
        return MetaRequest(
            "ma",
            flags.key,
            order=_order(tokens, 2),
            ttl=flags.ttl,
            vivify=flags.vivify,
            compare_cas=flags.cas,
            mode=mode,
            delta=flags.delta,
            initial=flags.initial,
            abort_at=_opaque_too_long(tokens, 2),
            context=tokens[2:],
        )

    def _me(self, tokens, ntokens):
        key = tokens[1] if ntokens >= 3 else b""
        if ntokens < 3 or len(key) > MAX_KEY_LENGTH:
            return _BAD_FORMAT
        binary = ntokens >= 4 and tokens[2] == b"b"
        if binary:
            key = b64decode(key)
            if key is None:
                return _BAD_FORMAT
        return MetaRequest("me", key, order="b" if binary else "")


# -- writing ----------------------------------------------------------------

# Values up to this size are copied into their reply line; larger ones are
# sent from their record without a copy.
_COPY_LIMIT = 1 << 14
_END = b"END\r\n"
_CRLF_END = CRLF + _END


def _value_line(key: bytes, rec: bytes, with_cas: bool) -> bytes:
    """``VALUE <key> <flags> <bytes> [<cas>]\\r\\n`` for an item record."""
    flags = _UINT32.unpack_from(rec, FLAGS_OFFSET)[0]
    if with_cas:
        cas = _UINT64.unpack_from(rec, CAS_OFFSET)[0]
        return b"VALUE %b %d %d %d\r\n" % (key, flags, len(rec) - VALUE_OFFSET, cas)
    return b"VALUE %b %d %d\r\n" % (key, flags, len(rec) - VALUE_OFFSET)


# One item of a get reply with its value formatted in (a small value):
# a single formatting call instead of a header, a slice and two joins.
_SMALL_ITEM = b"VALUE %b %d %d\r\n%b\r\n"
_SMALL_ITEM_END = _SMALL_ITEM + _END


def get_reply(key: bytes, rec: bytes | None) -> bytes:
    """The reply to ``get <key>`` (one key), given its item record or None."""
    if rec is None:
        return _END
    length = len(rec) - VALUE_OFFSET
    if length < _COPY_LIMIT:
        flags = _UINT32.unpack_from(rec, FLAGS_OFFSET)[0]
        return _SMALL_ITEM_END % (key, flags, length, rec[VALUE_OFFSET:])
    return b"".join((_value_line(key, rec, False), memoryview(rec)[VALUE_OFFSET:], _CRLF_END))


def write_text_gets(
    run: GetMany, records: list, out: list, start: int = 0, limit: int = 1 << 62
) -> tuple[int, int]:
    """Append the reply to a get/gets/gat/gats, given each key's record or None.

    As ``binary.write_gets``: writes from entry ``start`` on and stops once
    ``limit`` bytes are written, so the caller can send before going on;
    returns the bytes written and the index of the first entry not yet
    written. END follows the last entry.
    """
    context = run.context
    if context.error:
        out.append(context.error)
        return len(context.error), len(records)
    append = out.append
    with_cas = context.cas
    keys = run.keys
    total = len(records)
    if start:
        keys, records = keys[start:], records[start:]
    unpack_flags = _UINT32.unpack_from
    written = 0
    index = start
    for key, rec in zip(keys, records):
        index += 1
        if rec is None:
            continue
        length = len(rec) - VALUE_OFFSET
        if length >= _COPY_LIMIT:
            head = _value_line(key, rec, with_cas)
            append(head)
            append(memoryview(rec)[VALUE_OFFSET:])
            append(CRLF)
            written += len(head) + length + 2
        else:
            if with_cas:
                item = _value_line(key, rec, True) + rec[VALUE_OFFSET:] + CRLF
            else:
                item = _SMALL_ITEM % (key, unpack_flags(rec, FLAGS_OFFSET)[0], length, rec[VALUE_OFFSET:])
            append(item)
            written += len(item)
        if written >= limit:
            break
    if index == total:
        append(_END)
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
_ARITH_ERRORS = {
    NOT_FOUND: b"NOT_FOUND\r\n",
    NON_NUMERIC: b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    NO_MEMORY: b"SERVER_ERROR out of memory\r\n",
}
_NOT_FOUND = b"NOT_FOUND\r\n"
_VERSION = b"VERSION %b\r\n" % PROTOCOL_VERSION.encode()


def _put(out: list, data: bytes) -> int:
    out.append(data)
    return len(data)


def _write_store(request: Request, result: Result, out: list) -> int:
    if request.quiet:
        return 0
    return _put(out, _STORE_REPLIES[result.status])


def _ok_or_not_found(ok: bytes):
    """A writer answering ``ok`` on success and NOT_FOUND otherwise (delete, touch)."""

    def write(request: Request, result: Result, out: list) -> int:
        if request.quiet:
            return 0
        return _put(out, ok if result.status is OK else _NOT_FOUND)

    return write


_write_delete = _ok_or_not_found(b"DELETED\r\n")
_write_touch = _ok_or_not_found(b"TOUCHED\r\n")


def _write_arith(request: Request, result: Result, out: list) -> int:
    if request.quiet:
        return 0
    if result.status is OK:
        return _put(out, b"%d\r\n" % result.number)
    return _put(out, _ARITH_ERRORS[result.status])


def _write_flush(request: Request, result: Result, out: list) -> int:
    return 0 if request.quiet else _put(out, b"OK\r\n")


def _write_stats(request: Request, result: Result, out: list) -> int:
    if result.status is not OK:
        return _put(out, b"ERROR\r\n")
    if request.key == b"reset":
        return _put(out, b"RESET\r\n")
    lines = [b"STAT %s %s\r\n" % (name.encode(), value.encode()) for name, value in result.stats]
    lines.append(_END)
    return _put(out, b"".join(lines))


def _write_version(request: Request, result: Result, out: list) -> int:
    return _put(out, _VERSION)


def _write_nothing(request: Request, result: Result, out: list) -> int:
    return 0  # quit: the connection closes


def _write_canned(request: Request, result: Result, out: list) -> int:
    return _put(out, request.value)


def _flag_tail(request: MetaRequest, binary_key: bool, cas: int = 0) -> bytes:
    """The O, k and c flags of a reply without an item, in request order."""
    parts = []
    for token in request.context:
        letter = token[0]
        if letter == 79:  # O
            parts.append(b" " + token)
        elif letter == 107:  # k
            parts.append(_key_token(request.key, binary_key))
        elif letter == 99 and request.command == "ms":  # c
            parts.append(b" c%d" % cas)
    return b"".join(parts)


def _write_mg(request: MetaRequest, result: MetaResult, out: list) -> int:
    if request.abort_at is not None:
        return _put(out, _OPAQUE_TOO_LONG)
    item = result.item
    if item is None:
        if "q" in request.order:
            return 0
        return _put(out, b"EN" + _flag_tail(request, "b" in request.order) + CRLF)
    value = item.value
    with_value = "v" in request.order
    parts = [b"VA %d" % len(value) if with_value else b"HD"]
    for token in request.context:
        letter = token[0]
        if letter == 115:  # s
            parts.append(b" s%d" % len(value))
        elif letter == 116:  # t
            parts.append(b" t%d" % result.ttl)
        elif letter == 99:  # c
            parts.append(b" c%d" % item.cas)
        elif letter == 102:  # f
            parts.append(b" f%d" % item.flags)
        elif letter == 108:  # l
            parts.append(b" l%d" % result.idle)
        elif letter == 104:  # h
            parts.append(b" h1" if result.fetched else b" h0")
        elif letter == 79:  # O
            parts.append(b" " + token)
        elif letter == 107:  # k
            parts.append(_key_token(request.key, result.binary_key))
    if result.win_sent:
        parts.append(b" Z")
    if result.stale:
        parts.append(b" X")
    if result.won:
        parts.append(b" W")
    parts.append(CRLF)
    if with_value:
        if len(value) < _COPY_LIMIT:
            parts.append(value)
            parts.append(CRLF)
        else:
            head = b"".join(parts)
            out += (head, value, CRLF)
            return len(head) + len(value) + 2
    return _put(out, b"".join(parts))


_META_CODES = {
    OK: b"HD",
    NOT_STORED: b"NS",
    EXISTS: b"EX",
    NOT_FOUND: b"NF",
}
_META_ERRORS = {
    TOO_LARGE: b"SERVER_ERROR object too large for cache\r\n",
    NO_MEMORY: b"SERVER_ERROR out of memory storing object\r\n",
}


def _write_ms(request: MetaRequest, result: MetaResult, out: list) -> int:
    status = result.status
    if status is OK and "q" in request.order:
        return 0
    error = _META_ERRORS.get(status)
    if error is not None:
        return _put(out, error)
    tail = _flag_tail(request, "b" in request.order, result.cas)
    return _put(out, _META_CODES[status] + tail + CRLF)


def _write_md(request: MetaRequest, result: MetaResult, out: list) -> int:
    status = result.status
    if status is OK and "q" in request.order:
        return 0
    return _put(out, _META_CODES[status] + _flag_tail(request, "b" in request.order) + CRLF)


def _write_ma(request: MetaRequest, result: MetaResult, out: list) -> int:
    status = result.status
    if status is NON_NUMERIC or status is NO_MEMORY:
        return _put(out, _ARITH_ERRORS[status])
    if request.abort_at is not None:
        return _put(out, _OPAQUE_TOO_LONG)
    binary = "b" in request.order
    if status is not OK:
        return _put(out, _META_CODES[status] + _flag_tail(request, binary) + CRLF)
    if "q" in request.order:
        return 0
    number = b"%d" % result.number
    with_value = "v" in request.order
    parts = [b"VA %d" % len(number) if with_value else b"HD"]
    for token in request.context:
        letter = token[0]
        if letter == 99:  # c
            parts.append(b" c%d" % result.cas)
        elif letter == 116:  # t
            parts.append(b" t%d" % result.ttl)
        elif letter == 79:  # O
            parts.append(b" " + token)
        elif letter == 107:  # k
            parts.append(_key_token(request.key, binary))
    parts.append(CRLF)
    if with_value:
        parts.append(number)
        parts.append(CRLF)
    return _put(out, b"".join(parts))


def _slab_classes(smallest: int = 96, largest: int = 1 << 19, factor: float = 1.25) -> list[int]:
    """memcached's default slab class sizes (-n 48, -f 1.25, 512 KB chunks)."""
    sizes = []
    size = smallest
    while size <= largest / factor:
        sizes.append(size)
        size = (int(size * factor) + 7) // 8 * 8
    sizes.append(largest)
    return sizes


_SLAB_CLASSES = _slab_classes()


def _write_me(request: MetaRequest, result: MetaResult, out: list) -> int:
    item = result.item
    if item is None:
        return _put(out, b"EN\r\n")
    key = request.key
    shown = base64.b64encode(key) if result.binary_key else key
    # memcached's item: header, CAS, key + NUL, value + CRLF, flags if set.
    size = MEMCACHED_ITEM_HEADER + len(key) + len(item.value) + (_FLAGS_COST if item.flags else 0)
    slab = next((i for i, s in enumerate(_SLAB_CLASSES, 1) if size <= s), len(_SLAB_CLASSES))
    line = b"ME %b exp=%d la=%d cas=%d fetch=%b cls=%d size=%d\r\n" % (
        shown,
        -1 if result.ttl == -1 else -result.ttl,
        result.idle,
        item.cas,
        b"yes" if result.fetched else b"no",
        slab,
        size,
    )
    return _put(out, line)


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
    "version": _write_version,
    "quit": _write_nothing,
    "unknown": _write_canned,
    "mg": _write_mg,
    "ms": _write_ms,
    "md": _write_md,
    "ma": _write_ma,
    "me": _write_me,
}


def write_text(request: Request | MetaRequest, result: Result | MetaResult, out: list) -> int:
    """Append the reply to ``request`` (nothing, for noreply and quit) to out.

    Returns the number of bytes appended.
    """
    return _WRITERS[request.command](request, result, out)

"""The text protocol's meta commands (mg ms md ma mn me), sans I/O: their flags and replies.

What lives here: reading a meta command's flags as memcached 1.6.18's
_meta_flag_preparse does (its errors and their order), ``MetaParsing`` (the
meta commands' half of ``text.TextParser``, which mixes it in), and the
writers of their replies (``WRITERS``, merged into the text protocol's
table). What does not: the classic commands and the line framing
(``text``), the numbers and base64 both use (``ascii``), and what the
commands do (``commands.Commands._mg`` and friends).
"""

from __future__ import annotations

from ..commands import MetaRequest, MetaResult
from ..record import MAX_KEY_LENGTH, memcached_size
from ..storage import EXISTS, NO_MEMORY, NON_NUMERIC, NOT_FOUND, NOT_STORED, OK, TOO_LARGE
from . import COPY_LIMIT
from .ascii import (
    ARITH_ERRORS,
    BAD_CHUNK,
    BAD_FORMAT,
    BAD_FORMAT_REPLY,
    CRLF,
    ERROR,
    INT32_MAX,
    b64decode,
    b64encode,
    put,
    reply,
    strtol32,
    strtoul32,
    strtoull,
)
from .buffer import ReceiveBuffer

META_MAX_TOKENS = 20  # MFLAG_MAX_OPT_LENGTH: a meta command with more is refused
MAX_OPAQUE_LENGTH = 32  # an O token, its letter included

# The flags, as the byte a flag token starts with.
BASE64_KEY = ord("b")  # the key is base64
CLIENT_FLAGS = ord("F")  # ms: the client flags to store
COMPARE_CAS = ord("C")
DELTA = ord("D")  # ma
HIT_BEFORE = ord("h")  # mg: return whether the item was read before
INITIAL = ord("J")  # ma: the value a vivified counter starts at
LAST_ACCESS = ord("l")  # mg: return the seconds since the last access
MODE = ord("M")
OPAQUE = ord("O")  # echoed back
RECACHE = ord("R")  # mg: win the recache if the TTL left is below this
RETURN_CAS = ord("c")
RETURN_FLAGS = ord("f")
RETURN_KEY = ord("k")
RETURN_SIZE = ord("s")
RETURN_TTL = ord("t")
TTL = ord("T")  # a new TTL
VIVIFY = ord("N")  # create on a miss, with this TTL

MN = reply(b"MN")
TOO_MANY_FLAGS = reply(b"CLIENT_ERROR options flags too long")
INVALID_FLAG = reply(b"CLIENT_ERROR invalid or duplicate flag")
OPAQUE_TOO_LONG = b"CLIENT_ERROR opaque token too long"
_OPAQUE_TOO_LONG_LINE = OPAQUE_TOO_LONG + CRLF


def _key_token(key: bytes, binary: bool) -> bytes:
    """A meta reply's k flag: the key, base64-encoded (and flagged b) if it came so."""
    return b" k" + b64encode(key) + b" b" if binary else b" k" + key


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
        if letter == BASE64_KEY:
            key = b64decode(flags.key)
            if key is None:
                error, failed = b"CLIENT_ERROR error decoding key", True
            else:
                flags.key = key
                flags.binary = True
        elif letter in (VIVIFY, TTL, RECACHE):
            number = strtol32(token[1:])
            if number is None:
                error, failed = b"CLIENT_ERROR bad token in command line format", True
            elif letter == VIVIFY:
                flags.vivify = number
            elif letter == TTL:
                flags.ttl = number
            else:
                flags.recache = number
        elif letter == CLIENT_FLAGS:  # memcached notes the failure but not its name
            number = strtoul32(token[1:])
            if number is None:
                failed = True
            else:
                flags.client_flags = number
        elif letter == COMPARE_CAS:
            flags.cas = strtoull(token[1:])
            if flags.cas is None:
                error, failed = b"CLIENT_ERROR bad token in command line format", True
        elif letter == MODE:
            if len(token) != 2:
                error, failed = b"CLIENT_ERROR incorrect length for M token", True
            else:
                flags.mode = chr(token[1])
        elif letter == INITIAL:
            number = strtoull(token[1:])
            if number is None:
                error, failed = b"CLIENT_ERROR invalid numeric initial value", True
            else:
                flags.initial = number
        elif letter == DELTA:
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
        if token[0] == OPAQUE and len(token) > MAX_OPAQUE_LENGTH:
            return i
    return None


def _order(tokens: list[bytes], start: int) -> str:
    return "".join([chr(token[0]) for token in tokens[start:]])


class MetaParsing:
    """The meta commands' parsers, mixed into ``text.TextParser``: each takes
    a command line's tokens and returns a request, a ``Reply``, or what
    ``TextParser.expect_block`` returns while ms waits for its data."""

    __slots__ = ()  # TextParser's slots are its own

    max_item_size: int
    buffer: ReceiveBuffer

    def _mn(self, tokens, ntokens):
        return MN

    def _mg(self, tokens, ntokens):
        if ntokens < 3:
            return ERROR
        if len(tokens[1]) > MAX_KEY_LENGTH:
            return BAD_FORMAT_REPLY
        if ntokens > META_MAX_TOKENS:
            return reply(b"CLIENT_ERROR options flags are too long")
        flags, error = _preparse(tokens, 2)
        if error is not None:
            return reply(error)
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
            return BAD_FORMAT_REPLY
        if ntokens > META_MAX_TOKENS:
            return TOO_MANY_FLAGS
        length = strtol32(tokens[2])
        if length is None or length < 0 or length > INT32_MAX - 2:
            return BAD_FORMAT_REPLY
        flags, error = _preparse(tokens, 3)
        mode = _MS_MODES.get(flags.mode)
        if error is None and mode is None:
            error = b"CLIENT_ERROR invalid mode for ms M token"
        if error is None and _opaque_too_long(tokens, 3) is not None:
            error = OPAQUE_TOO_LONG
        if error is not None:
            self.buffer.skip(length + 2)  # memcached swallows the block after an error
            return reply(error)
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
        if memcached_size(len(key), length, flags.client_flags) > self.max_item_size:
            self.buffer.skip(length + 2)
            return request._replace(refused=True)

        def build(value):
            return BAD_CHUNK if value is None else request._replace(value=value)

        return self.expect_block(length, build)

    @staticmethod
    def _meta_flags(tokens, ntokens):
        """The flags of an md or ma line, or the error reply memcached gives it."""
        if ntokens < 3:
            return None, ERROR
        if len(tokens[1]) > MAX_KEY_LENGTH:
            return None, BAD_FORMAT_REPLY
        if ntokens > META_MAX_TOKENS:
            return None, TOO_MANY_FLAGS
        flags, error = _preparse(tokens, 2)
        if error is not None:
            return None, INVALID_FLAG
        return flags, None

    def _md(self, tokens, ntokens):
        flags, error = self._meta_flags(tokens, ntokens)
        if error is not None:
            return error
        if _opaque_too_long(tokens, 2) is not None:
            return reply(OPAQUE_TOO_LONG)
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
            return reply(b"CLIENT_ERROR invalid mode for ma M token")
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
            return BAD_FORMAT_REPLY
        binary = ntokens >= 4 and tokens[2] == b"b"
        if binary:
            key = b64decode(key)
            if key is None:
                return BAD_FORMAT_REPLY
        return MetaRequest("me", key, order="b" if binary else "")


# -- writing ----------------------------------------------------------------


def _flag_tail(request: MetaRequest, binary_key: bool, cas: int = 0) -> bytes:
    """The O, k and c flags of a reply without an item, in request order."""
    parts = []
    for token in request.context:
        letter = token[0]
        if letter == OPAQUE:
            parts.append(b" " + token)
        elif letter == RETURN_KEY:
            parts.append(_key_token(request.key, binary_key))
        elif letter == RETURN_CAS and request.command == "ms":
            parts.append(b" c%d" % cas)
    return b"".join(parts)


def _write_mg(request: MetaRequest, result: MetaResult, out: list) -> int:
    if request.abort_at is not None:
        return put(out, _OPAQUE_TOO_LONG_LINE)
    item = result.item
    if item is None:
        if "q" in request.order:
            return 0
        return put(out, b"EN" + _flag_tail(request, "b" in request.order) + CRLF)
    value = item.value
    with_value = "v" in request.order
    parts = [b"VA %d" % len(value) if with_value else b"HD"]
    for token in request.context:
        letter = token[0]
        if letter == RETURN_SIZE:
            parts.append(b" s%d" % len(value))
        elif letter == RETURN_TTL:
            parts.append(b" t%d" % result.ttl)
        elif letter == RETURN_CAS:
            parts.append(b" c%d" % item.cas)
        elif letter == RETURN_FLAGS:
            parts.append(b" f%d" % item.flags)
        elif letter == LAST_ACCESS:
            parts.append(b" l%d" % result.idle)
        elif letter == HIT_BEFORE:
            parts.append(b" h1" if result.fetched else b" h0")
        elif letter == OPAQUE:
            parts.append(b" " + token)
        elif letter == RETURN_KEY:
            parts.append(_key_token(request.key, result.binary_key))
    if result.win_sent:
        parts.append(b" Z")
    if result.stale:
        parts.append(b" X")
    if result.won:
        parts.append(b" W")
    parts.append(CRLF)
    if with_value:
        if len(value) < COPY_LIMIT:
            parts.append(value)
            parts.append(CRLF)
        else:
            head = b"".join(parts)
            out += (head, value, CRLF)
            return len(head) + len(value) + 2
    return put(out, b"".join(parts))


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
        return put(out, error)
    tail = _flag_tail(request, "b" in request.order, result.cas)
    return put(out, _META_CODES[status] + tail + CRLF)


def _write_md(request: MetaRequest, result: MetaResult, out: list) -> int:
    status = result.status
    if status is OK and "q" in request.order:
        return 0
    return put(out, _META_CODES[status] + _flag_tail(request, "b" in request.order) + CRLF)


def _write_ma(request: MetaRequest, result: MetaResult, out: list) -> int:
    status = result.status
    if status is NON_NUMERIC or status is NO_MEMORY:
        return put(out, ARITH_ERRORS[status])
    if request.abort_at is not None:
        return put(out, _OPAQUE_TOO_LONG_LINE)
    binary = "b" in request.order
    if status is not OK:
        return put(out, _META_CODES[status] + _flag_tail(request, binary) + CRLF)
    if "q" in request.order and not result.created:
        return 0  # as memcached: q silences a success, but not a counter N created
    number = b"%d" % result.number
    with_value = "v" in request.order
    parts = [b"VA %d" % len(number) if with_value else b"HD"]
    for token in request.context:
        letter = token[0]
        if letter == RETURN_CAS:
            parts.append(b" c%d" % result.cas)
        elif letter == RETURN_TTL:
            parts.append(b" t%d" % result.ttl)
        elif letter == OPAQUE:
            parts.append(b" " + token)
        elif letter == RETURN_KEY:
            parts.append(_key_token(request.key, binary))
    parts.append(CRLF)
    if with_value:
        parts.append(number)
        parts.append(CRLF)
    return put(out, b"".join(parts))


def _write_me(request: MetaRequest, result: MetaResult, out: list) -> int:
    item = result.item
    if item is None:
        return put(out, b"EN\r\n")
    key = request.key
    shown = b64encode(key) if result.binary_key else key
    size = memcached_size(len(key), len(item.value), item.flags)
    line = b"ME %b exp=%d la=%d cas=%d fetch=%b cls=%d size=%d\r\n" % (
        shown,
        -1 if result.ttl == -1 else -result.ttl,
        result.idle,
        item.cas,
        b"yes" if result.fetched else b"no",
        result.size_class,
        size,
    )
    return put(out, line)


WRITERS = {
    "mg": _write_mg,
    "ms": _write_ms,
    "md": _write_md,
    "ma": _write_ma,
    "me": _write_me,
}

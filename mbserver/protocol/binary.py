"""The memcached binary protocol: sans-IO codec, and the protocol object a connection uses.

What lives here: packet framing, the per-opcode length rules, turning every
quiet opcode into "the loud command + quiet" at parse time, writing each
Result as memcached 1.6 writes it (one writer per command, in a table), and
``BinaryProtocol``, which answers one connection's requests and runs its
SASL authentication. What does not: sockets (``connection``), command
semantics (``commands``), and buffering (``buffer``).

``BinaryParser`` reads the packets in its ``ReceiveBuffer`` and hands out
one ``Request`` per complete packet (a run of GET-family packets as one
``GetMany``). Sizes are checked from the header before any body is
buffered: a value over the item size limit is skipped as it arrives (the
request still reaches the command layer, marked ``refused``), and a header
whose lengths do not fit its opcode raises ``ProtocolError`` carrying the
0x04 reply to send before closing, as memcached does.
"""

from __future__ import annotations

import enum
import functools
import logging
import struct
from typing import Callable

from .. import PROTOCOL_VERSION
from ..auth import MECHANISMS
from ..commands import FlushRequest, GetMany, Request, Result, StatsRequest
from ..record import CAS_OFFSET, FLAGS_OFFSET, MAX_KEY_LENGTH, MEMCACHED_ITEM_HEADER, VALUE_OFFSET
from ..storage import (
    EXISTS,
    NO_MEMORY,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    OK,
    TOO_LARGE,
)
from . import COPY_LIMIT, Answering, ProtocolError, write_run
from .buffer import ReceiveBuffer

log = logging.getLogger("mbserver.connection")

REQUEST_MAGIC = 0x80
RESPONSE_MAGIC = 0x81
HEADER = struct.Struct(">BBHBBHIIQ")
HEADER_SIZE = HEADER.size  # 24
_UINT32 = struct.Struct(">I")
_FLAGS_EXPTIME = struct.Struct(">II")
_ARITH = struct.Struct(">QQI")
_COUNTER = struct.Struct(">Q")
NO_CREATE = 0xFFFFFFFF  # incr/decr expiry meaning "don't create a missing key"
# Builds a NamedTuple from a tuple of all its fields without the Python-level
# __new__ a NamedTuple call runs: this is on every request's path.
_new = tuple.__new__


class Opcode(enum.IntEnum):
    GET = 0x00
    SET = 0x01
    ADD = 0x02
    REPLACE = 0x03
    DELETE = 0x04
    INCREMENT = 0x05
    DECREMENT = 0x06
    QUIT = 0x07
    FLUSH = 0x08
    GETQ = 0x09
    NOOP = 0x0A
    VERSION = 0x0B
    GETK = 0x0C
    GETKQ = 0x0D
    APPEND = 0x0E
    PREPEND = 0x0F
    STAT = 0x10
    SETQ = 0x11
    ADDQ = 0x12
    REPLACEQ = 0x13
    DELETEQ = 0x14
    INCREMENTQ = 0x15
    DECREMENTQ = 0x16
    QUITQ = 0x17
    FLUSHQ = 0x18
    APPENDQ = 0x19
    PREPENDQ = 0x1A
    TOUCH = 0x1C
    GAT = 0x1D
    GATQ = 0x1E
    GATK = 0x23
    GATKQ = 0x24
    SASL_LIST_MECHS = 0x20
    SASL_AUTH = 0x21
    SASL_STEP = 0x22


class ResponseStatus(enum.IntEnum):
    SUCCESS = 0x00
    KEY_NOT_FOUND = 0x01
    KEY_EXISTS = 0x02
    VALUE_TOO_LARGE = 0x03
    INVALID_ARGUMENTS = 0x04
    ITEM_NOT_STORED = 0x05
    NON_NUMERIC = 0x06
    AUTH_ERROR = 0x20
    AUTH_CONTINUE = 0x21
    UNKNOWN_COMMAND = 0x81
    OUT_OF_MEMORY = 0x82


# The text memcached puts in the body of each error reply.
ERROR_TEXT = {
    ResponseStatus.KEY_NOT_FOUND: b"Not found",
    ResponseStatus.KEY_EXISTS: b"Data exists for key.",
    ResponseStatus.VALUE_TOO_LARGE: b"Too large.",
    ResponseStatus.INVALID_ARGUMENTS: b"Invalid arguments",
    ResponseStatus.ITEM_NOT_STORED: b"Not stored.",
    ResponseStatus.NON_NUMERIC: b"Non-numeric server-side value for incr or decr",
    ResponseStatus.AUTH_ERROR: b"Auth failure.",
    ResponseStatus.UNKNOWN_COMMAND: b"Unknown command",
    ResponseStatus.OUT_OF_MEMORY: b"Out of memory",
}


# -- the per-opcode rules ---------------------------------------------------

# Key rules: the key must be present, absent, or may be either.
_KEY, _NO_KEY, _ANY_KEY = "key", "no key", "any key"


class _Rule:
    """How one opcode is framed, and which command it means."""

    __slots__ = ("command", "quiet", "echo_key", "extras", "key", "value")

    def __init__(self, command, extras, key, value, quiet=False, echo_key=False):
        self.command = command
        self.extras = extras  # allowed extras lengths
        self.key = key
        self.value = value  # may the packet carry a value?
        self.quiet = quiet
        self.echo_key = echo_key


def _rules() -> dict[int, _Rule]:
    op = Opcode
    rules = {
        op.GET: _Rule("get", (0,), _KEY, False),
        op.GETQ: _Rule("get", (0,), _KEY, False, quiet=True),
        op.GETK: _Rule("get", (0,), _KEY, False, echo_key=True),
        op.GETKQ: _Rule("get", (0,), _KEY, False, quiet=True, echo_key=True),
        op.DELETE: _Rule("delete", (0,), _KEY, False),
        op.DELETEQ: _Rule("delete", (0,), _KEY, False, quiet=True),
        op.INCREMENT: _Rule("incr", (20,), _KEY, False),
        op.INCREMENTQ: _Rule("incr", (20,), _KEY, False, quiet=True),
        op.DECREMENT: _Rule("decr", (20,), _KEY, False),
        op.DECREMENTQ: _Rule("decr", (20,), _KEY, False, quiet=True),
        op.QUIT: _Rule("quit", (0,), _NO_KEY, False),
        op.QUITQ: _Rule("quit", (0,), _NO_KEY, False, quiet=True),
        op.FLUSH: _Rule("flush", (0, 4), _NO_KEY, False),
        op.FLUSHQ: _Rule("flush", (0, 4), _NO_KEY, False, quiet=True),
        op.NOOP: _Rule("noop", (0,), _NO_KEY, False),
        op.VERSION: _Rule("version", (0,), _NO_KEY, False),
        op.STAT: _Rule("stats", (0,), _ANY_KEY, False),
        op.TOUCH: _Rule("touch", (4,), _KEY, False),
        op.GAT: _Rule("gat", (4,), _KEY, False),
        op.GATQ: _Rule("gat", (4,), _KEY, False, quiet=True),
        op.GATK: _Rule("gat", (4,), _KEY, False, echo_key=True),
        op.GATKQ: _Rule("gat", (4,), _KEY, False, quiet=True, echo_key=True),
    }
    for loud, quiet, command in (
        (op.SET, op.SETQ, "set"),
        (op.ADD, op.ADDQ, "add"),
        (op.REPLACE, op.REPLACEQ, "replace"),
    ):
        rules[loud] = _Rule(command, (8,), _KEY, True)
        rules[quiet] = _Rule(command, (8,), _KEY, True, quiet=True)
    for loud, quiet, command in (
        (op.APPEND, op.APPENDQ, "append"),
        (op.PREPEND, op.PREPENDQ, "prepend"),
    ):
        rules[loud] = _Rule(command, (0,), _KEY, True)
        rules[quiet] = _Rule(command, (0,), _KEY, True, quiet=True)
    return rules


RULES = _rules()
# The header fields the GET paths read: unpacking fewer than all nine saves
# a fifth of a microsecond on the commonest request.
# magic and opcode as one number, key length, extras length, body length, opaque
_GET_FIELDS = struct.Struct(">HHB3xII")
_GET_MAGIC_OPCODE = REQUEST_MAGIC << 8  # a request (0x80), GET (0x00)
_SET_MAGIC_OPCODE = REQUEST_MAGIC << 8 | Opcode.SET  # a request (0x80), SET (0x01)
_SET = int(Opcode.SET)
# A SET's CAS (the header's last field) and its extras: flags and expiry;
# its key follows them.
_LONE_SET_FIELDS = struct.Struct(">16xQII")
_SET_KEY = HEADER_SIZE + 8
_GET_OPCODES = frozenset(int(op) for op in (Opcode.GET, Opcode.GETQ, Opcode.GETK, Opcode.GETKQ))
# A GET-family request's magic and opcode as _GET_FIELDS reads them:
# one test where a run of GETs would make two per key.
_GET_MAGIC_OPCODES = frozenset(REQUEST_MAGIC << 8 | opcode for opcode in _GET_OPCODES)

# memcached without SASL still checks the shape of SASL requests (a protocol
# error closes the connection) before answering "unknown command".
_SASL_RULES = {
    Opcode.SASL_LIST_MECHS: _Rule("unknown", (0,), _NO_KEY, False),
    Opcode.SASL_AUTH: _Rule("unknown", (0,), _KEY, True),
    Opcode.SASL_STEP: _Rule("unknown", (0,), _KEY, True),
}
# With authentication on, they are commands: the key names the mechanism,
# the value carries its data.
SASL_COMMANDS = frozenset(("sasl_list", "sasl_auth", "sasl_step"))
_SASL_ENABLED_RULES = {
    Opcode.SASL_LIST_MECHS: _Rule("sasl_list", (0,), _NO_KEY, False),
    Opcode.SASL_AUTH: _Rule("sasl_auth", (0,), _KEY, True),
    Opcode.SASL_STEP: _Rule("sasl_step", (0,), _KEY, True),
}


def _fits(rule: _Rule, keylen: int, extlen: int, bodylen: int) -> bool:
    if extlen not in rule.extras:
        return False
    if rule.key is _KEY and keylen == 0 or rule.key is _NO_KEY and keylen:
        return False
    return rule.value or bodylen == keylen + extlen


# -- parsing ----------------------------------------------------------------


class BinaryParser:
    """Incremental request parser: ``feed(bytes)``, then ``next()`` until None."""

    # Slots: every request that is not a lone one reads the parser, and
    # with 1,000 busy connections each object it touches is likely a cache
    # miss (the lone ones skip it: see lone_reader).
    __slots__ = ("max_item_size", "_sasl", "buffer", "feed")

    def __init__(self, max_item_size: int = 1 << 20, sasl: bool = False):
        self.max_item_size = max_item_size
        self._sasl = sasl  # parse SASL opcodes as commands (authentication is on)
        self.buffer = ReceiveBuffer()
        self.feed = self.buffer.feed

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return self.buffer.buffered

    @property
    def partial(self) -> bool:
        """Part of a request is here, the rest not yet."""
        return self.buffer.buffered > 0

    @property
    def empty(self) -> bool:
        """Holds nothing: what ``lone`` needs before it may be asked."""
        return self.buffer.empty

    def next(self) -> Request | StatsRequest | FlushRequest | GetMany | None:
        """The next complete request, or None until more bytes are fed.

        A run of GET-family packets comes back as one ``GetMany``. The rules
        for GET opcodes only validate, or wait for the rest of a GET: one
        that passes them and is all here always joins a run, so no "get"
        Request is ever made.
        """
        buffer = self.buffer
        buf = buffer.data
        pos = buffer.pos
        if len(buf) - pos < HEADER_SIZE:
            return None
        (magic, opcode, keylen, extlen, _dtype, _vbucket, bodylen, opaque, cas) = (
            HEADER.unpack_from(buf, pos)
        )
        if opcode in _GET_OPCODES:
            run, end = self._get_run(buf, pos)
            if run is not None:
                buffer.pos = end
                return run
            # Malformed (rejected below), or not all here yet (waited for below).
        if magic != REQUEST_MAGIC:
            raise ProtocolError(f"bad magic byte 0x{magic:02x}")
        if keylen > MAX_KEY_LENGTH:
            raise self._invalid(opcode, opaque, keylen, extlen, bodylen)
        if keylen + extlen > bodylen:
            # memcached reads such a header as a command it cannot know.
            raise ProtocolError(
                f"opcode 0x{opcode:02x}: key {keylen} + extras {extlen} > body {bodylen}",
                error_reply(opcode, opaque, ResponseStatus.UNKNOWN_COMMAND),
            )
        rule = RULES.get(opcode)
        if rule is None and self._sasl:
            rule = _SASL_ENABLED_RULES.get(opcode)
        if rule is None:
            sasl = _SASL_RULES.get(opcode)
            if sasl is not None and not _fits(sasl, keylen, extlen, bodylen):
                raise self._invalid(opcode, opaque, keylen, extlen, bodylen)
            # Unknown (or SASL, which needs a SASL build): answer, skip its body.
            buffer.pos = pos + HEADER_SIZE
            buffer.skip(bodylen)
            return Request("unknown", opcode=opcode, opaque=opaque)
        # _fits, written out: every request but a GET passes here.
        if (
            extlen not in rule.extras
            or (not keylen if rule.key is _KEY else (keylen and rule.key is _NO_KEY))
            or (not rule.value and bodylen != keylen + extlen)
        ):
            raise self._invalid(opcode, opaque, keylen, extlen, bodylen)
        start = pos + HEADER_SIZE
        value_len = bodylen - keylen - extlen
        refused = (
            rule.value and keylen + value_len + MEMCACHED_ITEM_HEADER > self.max_item_size
        )
        needed = HEADER_SIZE + (extlen + keylen if refused else bodylen)
        if len(buf) - pos < needed:
            buffer.collect(needed)
            return None
        key_start = start + extlen
        key = buf[key_start : key_start + keylen]
        end = start + bodylen
        command = rule.command
        if command == "stats":
            buffer.pos = end
            return _stats_request(key, opcode, opaque)
        if command == "flush":
            buffer.pos = end
            delay = _UINT32.unpack_from(buf, start)[0] if extlen == 4 else 0
            return FlushRequest(delay, rule.quiet, opcode, opaque)
        if refused:
            buffer.pos = key_start + keylen
            buffer.skip(value_len)
            value = b""
        else:
            buffer.pos = end
            value = buf[key_start + keylen : end] if value_len else b""
        flags = exptime = delta = 0
        initial = None
        if extlen == 8:
            flags, exptime = _FLAGS_EXPTIME.unpack_from(buf, start)
        elif extlen == 4:
            (exptime,) = _UINT32.unpack_from(buf, start)
        elif extlen == 20:
            delta, initial, exptime = _ARITH.unpack_from(buf, start)
            if exptime == NO_CREATE:
                initial, exptime = None, 0
        return _new(
            Request,
            (
                command,
                key,
                value,
                flags,
                exptime,
                cas,
                delta,
                initial,
                refused,
                opcode,
                opaque,
                rule.quiet,
                rule.echo_key,
            ),
        )

    @staticmethod
    def _get_run(buf: bytes, pos: int) -> tuple[GetMany | None, int]:
        """The complete GET-family packets from pos on, as one GetMany (None
        if there are none), and where they end.

        A pipelined or multi-get batch is answered with one store call, not
        one per key. The run stops at anything else, which ``next`` then
        parses (and rejects, if malformed) on its own.
        """
        size = len(buf)
        unpack = _GET_FIELDS.unpack_from
        keys: list[bytes] = []
        opcodes: list[int] = []
        opaques: list[int] = []
        while size - pos >= HEADER_SIZE:
            magic_opcode, keylen, extlen, bodylen, opaque = unpack(buf, pos)
            start = pos + HEADER_SIZE
            end = start + keylen
            if (
                magic_opcode not in _GET_MAGIC_OPCODES
                or extlen
                or bodylen != keylen
                or not 0 < keylen <= MAX_KEY_LENGTH
                or end > size
            ):
                break
            keys.append(buf[start:end])
            opcodes.append(magic_opcode & 0xFF)
            opaques.append(opaque)
            pos = end
        if not keys:
            return None, pos
        return _new(GetMany, (keys, (opcodes, opaques))), pos

    def lone(self, data: bytes) -> tuple[bytes, int] | GetMany | Request | None:
        """The request ``data`` holds if it is exactly one plain GET (opcode
        0x00) or SET (0x01), or one run of GET-family packets (a pipelined
        multi-get, as the ``GetMany`` that ``next`` makes); else None, and
        ``data`` is to be fed. Only for a parser that is ``empty`` (the
        caller checks, once per batch).

        A read holding one GET or one SET is the commonest request of all;
        this lets it skip the buffering, run building and dispatch of feed
        and next. A GET comes back as ``(key, opaque)``, what ``get_reply``
        needs besides the record; a SET as the ``Request`` that ``next``
        would make of it. The checks are ``next``'s for these two opcodes,
        and a value too large to accept is left to ``next`` too.
        """
        return lone_reader(self.max_item_size)(data)

    @staticmethod
    def _invalid(opcode, opaque, keylen, extlen, bodylen) -> ProtocolError:
        return ProtocolError(
            f"opcode 0x{opcode:02x} with key {keylen}, extras {extlen}, body {bodylen} bytes",
            error_reply(opcode, opaque, ResponseStatus.INVALID_ARGUMENTS),
        )


@functools.lru_cache(maxsize=None)
def lone_reader(max_item_size: int) -> Callable[[bytes], tuple[bytes, int] | GetMany | Request | None]:
    """``BinaryParser.lone`` for parsers of one item size limit, as a plain
    function that every connection of a server shares. The connection
    calls it on each read holding one request; with 1,000 busy connections
    a bound method of each one's own parser was one more object, and one
    more cache miss, a request (README, Performance)."""

    def lone(data: bytes) -> tuple[bytes, int] | GetMany | Request | None:
        try:
            magic_opcode, keylen, extlen, bodylen, opaque = _GET_FIELDS.unpack_from(data)
        except struct.error:  # shorter than a header
            return None
        if data.__class__ is not bytes:
            return None
        if len(data) != HEADER_SIZE + bodylen:
            if magic_opcode in _GET_MAGIC_OPCODES:
                # Exactly a run of GET-family packets: the GetMany next
                # would make of it.
                run, end = BinaryParser._get_run(data, 0)
                if end == len(data):
                    return run
            return None
        if magic_opcode == _GET_MAGIC_OPCODE:
            if bodylen == keylen and not extlen and 0 < keylen <= MAX_KEY_LENGTH:
                return data[HEADER_SIZE:], opaque
            return None
        if (
            magic_opcode == _SET_MAGIC_OPCODE
            and extlen == 8
            and 0 < keylen <= MAX_KEY_LENGTH
            and keylen + extlen <= bodylen
            and bodylen + MEMCACHED_ITEM_HEADER - extlen <= max_item_size
        ):
            cas, flags, exptime = _LONE_SET_FIELDS.unpack_from(data)
            key_end = _SET_KEY + keylen
            return _new(
                Request,
                (
                    "set",
                    data[_SET_KEY:key_end],
                    data[key_end:],
                    flags,
                    exptime,
                    cas,
                    0,
                    None,
                    False,
                    _SET,
                    opaque,
                    False,
                    False,
                ),
            )
        return None

    return lone


# -- writing ----------------------------------------------------------------


def _stats_request(key: bytes, opcode: int, opaque: int) -> StatsRequest:
    """A STAT key read as memcached's process_bin_stat reads it: ``reset``,
    ``settings`` and ``detail`` by their first letters (so "detail onx" is
    "detail on"), every other group by its whole key."""
    for group in (b"reset", b"settings"):
        if key.startswith(group):
            return StatsRequest(group, (), opcode, opaque)
    if key.startswith(b"detail"):
        rest = key[6:]
        for verb in (b"dump", b"on", b"off"):
            if rest.startswith(b" " + verb):
                return StatsRequest(b"detail", (verb,), opcode, opaque)
        return StatsRequest(b"detail", (), opcode, opaque)
    return StatsRequest(key, (), opcode, opaque)


def _header(opcode, keylen, extlen, status, bodylen, opaque, cas) -> bytes:
    return HEADER.pack(RESPONSE_MAGIC, opcode, keylen, extlen, 0, status, bodylen, opaque, cas)


def error_reply(opcode: int, opaque: int, status: ResponseStatus) -> bytes:
    text = ERROR_TEXT.get(status, b"")
    return _header(opcode, 0, 0, status, len(text), opaque, 0) + text


_REPLY_PREFIX = struct.Struct(">BBHBBHII")  # a response header up to its CAS
_GET, _GETQ, _GETK = int(Opcode.GET), int(Opcode.GETQ), int(Opcode.GETK)
_NO_KEY_GETS = frozenset((_GET, _GETQ))
# A record's bytes from CAS_OFFSET on are the CAS, the 4-byte flags and the
# value: exactly a GET reply's header tail, extras and value (see record),
# so a hit costs one header prefix and one slice. The reply's body is the
# flags and the value: the record from FLAGS_OFFSET on.
_PACK_PREFIX = _REPLY_PREFIX.pack
# A hit's reply to GET or GETQ, up to its CAS, is a fixed 8 bytes (magic,
# opcode, no key, 4 bytes of extras, type and status 0), the body length
# and the opaque: packed as three fields, not eight.
_HIT_PREFIX = {
    opcode: _PACK_PREFIX(RESPONSE_MAGIC, opcode, 0, 4, 0, 0, 0, 0)[:8]
    for opcode in (_GET, _GETQ)
}
_PACK_HIT = struct.Struct(">8sII").pack
_GET_HIT_PREFIX = _HIT_PREFIX[_GET]


def _one_get(key: bytes, opcode: int, opaque: int, rec: bytes | None) -> bytes:
    """The reply to one GET of a run, its value copied in (b"" for a quiet miss)."""
    if rec is None:
        if opcode == _GET:
            return _header(opcode, 0, 0, 1, 9, opaque, 0) + b"Not found"
        if opcode == _GETK:
            return _header(opcode, len(key), 0, 1, len(key), opaque, 0) + key
        return b""  # GETQ and GETKQ stay silent on a miss
    body = len(rec) - FLAGS_OFFSET
    if opcode in _NO_KEY_GETS:
        return _PACK_PREFIX(RESPONSE_MAGIC, opcode, 0, 4, 0, 0, body, opaque) + rec[CAS_OFFSET:]
    keylen = len(key)
    return b"".join((
        _PACK_PREFIX(RESPONSE_MAGIC, opcode, keylen, 4, 0, 0, body + keylen, opaque),
        rec[CAS_OFFSET:VALUE_OFFSET],
        key,
        rec[VALUE_OFFSET:],
    ))


def _frame_get(out: list, key: bytes, context: tuple[int, int], rec: bytes | None) -> int:
    """Append the reply to one GET of a run; its size. A large value goes by view."""
    opcode, opaque = context
    if rec is None or len(rec) - VALUE_OFFSET < COPY_LIMIT:
        reply = _one_get(key, opcode, opaque, rec)
        if reply:
            out.append(reply)
        return len(reply)
    keylen = 0 if opcode in _NO_KEY_GETS else len(key)
    body = len(rec) - FLAGS_OFFSET + keylen
    out.append(
        _PACK_PREFIX(RESPONSE_MAGIC, opcode, keylen, 4, 0, 0, body, opaque)
        + rec[CAS_OFFSET:VALUE_OFFSET]
        + (key if keylen else b"")
    )
    out.append(memoryview(rec)[VALUE_OFFSET:])
    return HEADER_SIZE + body


def _frame_small_gets(run: GetMany, records: list) -> bytes:
    """The replies to a run of GETs whose values are all small, at once."""
    opcodes, opaques = run.context
    pack, prefixes = _PACK_HIT, _HIT_PREFIX
    return b"".join([
        pack(prefixes[opcode], len(rec) - FLAGS_OFFSET, opaque) + rec[CAS_OFFSET:]
        if rec is not None and opcode in prefixes
        else _one_get(key, opcode, opaque, rec)
        for key, opcode, opaque, rec in zip(run.keys, opcodes, opaques, records)
    ])


def write_gets(
    run: GetMany, records: list, out: list, start: int = 0, limit: int = 1 << 62
) -> tuple[int, int]:
    """Append the replies to a run of GETs, given each key's item record or None.

    Writes from entry ``start`` on and stops once ``limit`` bytes are
    written (see ``write_run``); returns the bytes written and the index of
    the first entry not yet written.
    """
    opcodes, opaques = run.context
    return write_run(
        _frame_small_gets, _frame_get, run, zip(opcodes, opaques), records, out, start, limit
    )


def get_reply(opaque: int, rec: bytes | None) -> bytes:
    """The reply to a lone plain GET (opcode 0x00), given the item record or None.

    ``_one_get``'s GET case, written out (the lone GET is the commonest
    request: a call is a tenth of it), and a large value by view.
    """
    if rec is None:
        return _header(_GET, 0, 0, 1, 9, opaque, 0) + b"Not found"
    body = len(rec) - FLAGS_OFFSET
    header = _PACK_HIT(_GET_HIT_PREFIX, body, opaque)
    if body < COPY_LIMIT:
        return header + rec[CAS_OFFSET:]
    return b"".join((header, memoryview(rec)[CAS_OFFSET:]))


# How a non-OK status of each command family reads on the wire.
_STATUS = {
    NOT_FOUND: ResponseStatus.KEY_NOT_FOUND,
    EXISTS: ResponseStatus.KEY_EXISTS,
    TOO_LARGE: ResponseStatus.VALUE_TOO_LARGE,
    NO_MEMORY: ResponseStatus.OUT_OF_MEMORY,
    NON_NUMERIC: ResponseStatus.NON_NUMERIC,
}
# memcached answers a refused add "exists", a refused replace "not found",
# and a refused append/prepend "not stored".
_NOT_STORED_STATUS = {
    "add": ResponseStatus.KEY_EXISTS,
    "replace": ResponseStatus.KEY_NOT_FOUND,
    "append": ResponseStatus.ITEM_NOT_STORED,
    "prepend": ResponseStatus.ITEM_NOT_STORED,
    "set": ResponseStatus.ITEM_NOT_STORED,
}


def _put(out: list, reply: bytes) -> int:
    out.append(reply)
    return len(reply)


def _write_error(request, status: ResponseStatus, out: list) -> int:
    return _put(out, error_reply(request.opcode, request.opaque, status))


def store_reply(request: Request, result: Result) -> bytes:
    """The reply to a store (set, add, replace, append, prepend); b"" for a quiet success."""
    status = result.status
    if status is not OK:
        if status is NOT_STORED:
            return error_reply(request.opcode, request.opaque, _NOT_STORED_STATUS[request.command])
        return error_reply(request.opcode, request.opaque, _STATUS[status])
    if request.quiet:
        return b""
    return HEADER.pack(RESPONSE_MAGIC, request.opcode, 0, 0, 0, 0, 0, request.opaque, result.cas)


def _write_store(request: Request, result: Result, out: list) -> int:
    reply = store_reply(request, result)
    if reply:
        out.append(reply)
    return len(reply)


def _write_gat(request: Request, result: Result, out: list) -> int:
    item = result.item
    opcode, opaque = request.opcode, request.opaque
    if item is None:
        if request.quiet:
            return 0
        if request.echo_key:
            key = request.key
            return _put(out, _header(opcode, len(key), 0, 1, len(key), opaque, 0) + key)
        return _write_error(request, ResponseStatus.KEY_NOT_FOUND, out)
    key = request.key if request.echo_key else b""
    value = item.value
    head = (
        _header(opcode, len(key), 4, 0, 4 + len(key) + len(value), opaque, item.cas)
        + _UINT32.pack(item.flags)
        + key
    )
    out.append(head)
    out.append(value)
    return len(head) + len(value)


def _write_counter(request: Request, result: Result, out: list) -> int:
    if result.status is not OK:
        return _write_error(request, _STATUS[result.status], out)
    if request.quiet:
        return 0
    return _put(
        out,
        _header(request.opcode, 0, 0, 0, 8, request.opaque, result.cas)
        + _COUNTER.pack(result.number),
    )


def _write_touch(request: Request, result: Result, out: list) -> int:
    if result.status is not OK:
        return _write_error(request, _STATUS[result.status], out)
    return _put(
        out,
        _header(request.opcode, 0, 4, 0, 4, request.opaque, result.cas)
        + _UINT32.pack(result.item.flags),
    )


def _write_empty(request, result: Result, out: list) -> int:
    """An empty success reply, or an error (delete, flush, noop, quit)."""
    if result.status is not OK:
        return _write_error(request, _STATUS[result.status], out)
    if request.quiet:
        return 0
    return _put(out, _header(request.opcode, 0, 0, 0, 0, request.opaque, 0))


def _write_stats(request: StatsRequest, result: Result, out: list) -> int:
    if result.status is not OK:
        return _write_error(request, _STATUS[result.status], out)
    opcode, opaque = request.opcode, request.opaque
    parts = []
    for name, value in result.stats:
        name_b = name.encode()
        value_b = value.encode("utf-8", "surrogateescape")
        parts.append(
            _header(opcode, len(name_b), 0, 0, len(name_b) + len(value_b), opaque, 0)
            + name_b
            + value_b
        )
    if request.group not in (b"sizes_enable", b"sizes_disable"):  # memcached ends these without one
        parts.append(_header(opcode, 0, 0, 0, 0, opaque, 0))
    return _put(out, b"".join(parts))


_VERSION_TEXT = PROTOCOL_VERSION.encode()


def _write_version(request: Request, result: Result, out: list) -> int:
    text = _VERSION_TEXT
    return _put(out, _header(request.opcode, 0, 0, 0, len(text), request.opaque, 0) + text)


def _write_unknown(request: Request, result: Result, out: list) -> int:
    return _write_error(request, ResponseStatus.UNKNOWN_COMMAND, out)


_WRITERS = {
    "gat": _write_gat,
    "set": _write_store,
    "add": _write_store,
    "replace": _write_store,
    "append": _write_store,
    "prepend": _write_store,
    "delete": _write_empty,
    "incr": _write_counter,
    "decr": _write_counter,
    "touch": _write_touch,
    "flush": _write_empty,
    "noop": _write_empty,
    "quit": _write_empty,
    "stats": _write_stats,
    "version": _write_version,
    "unknown": _write_unknown,
}


def write_response(request: Request, result: Result, out: list) -> int:
    """Append the reply to ``request`` (nothing, for a silent quiet one) to out.

    Returns the number of bytes appended.
    """
    return _WRITERS[request.command](request, result, out)


def write_sasl(request: Request, answer: bytes | None, out: list) -> int:
    """Reply to a SASL command: ``answer`` is the mechanism list, or the
    success text of an authentication; None means authentication failed."""
    if answer is None:
        return _write_error(request, ResponseStatus.AUTH_ERROR, out)
    return _put(out, _header(request.opcode, 0, 0, 0, len(answer), request.opaque, 0) + answer)


def auth_required_reply(request: Request | GetMany) -> bytes:
    """The 0x20 reply to a command sent before authenticating (memcached then closes)."""
    if request.__class__ is GetMany:
        opcodes, opaques = request.context
        return error_reply(opcodes[0], opaques[0], ResponseStatus.AUTH_ERROR)
    return error_reply(request.opcode, request.opaque, ResponseStatus.AUTH_ERROR)


# -- the protocol object ------------------------------------------------------


class BinaryProtocol(Answering):
    """The binary protocol for one connection: parse, answer, authenticate (SASL PLAIN)."""

    name = "binary"
    REQUEST_MAGIC = REQUEST_MAGIC
    get_reply = staticmethod(get_reply)
    store_reply = staticmethod(store_reply)

    WRITERS = _WRITERS

    def __init__(self, commands, settings, auth, peer):
        super().__init__(commands, auth, peer)
        self.parser = BinaryParser(settings.max_item_size, sasl=auth is not None)
        # Until a client has authenticated, every request goes the long way.
        self.lone = lone_reader(settings.max_item_size) if auth is None else None
        self._own.update(dict.fromkeys(SASL_COMMANDS, self._sasl))

    def answer_gets(self, run: GetMany, out: list, pending: int) -> int:
        if not self.authenticated:
            return pending + self._before_auth(run, out)
        records = self.commands.get_many(run.keys)
        return self._write_run(write_gets, run, records, out, pending)

    def _before_auth(self, request, out: list) -> int:
        """Answer a request from a client that has not authenticated yet.

        As memcached: SASL and VERSION are answered; anything else gets 0x20
        and the connection closes.
        """
        if request.__class__ is not GetMany:
            if request.command in SASL_COMMANDS:
                return self._sasl(request, out)
            if request.command == "version":
                return write_response(request, self.commands.execute(request), out)
        self.stats.auth_errors += 1
        return self._closing_after(
            auth_required_reply(request), out, "command before authentication"
        )

    def _sasl(self, request: Request, out: list) -> int:
        if request.command == "sasl_list":
            return write_sasl(request, MECHANISMS, out)
        self.stats.auth_cmds += 1
        user = None
        if request.command == "sasl_auth" and self.auth is not None:
            user = self.auth.plain(request.key, request.value)
        if user is None:
            self.stats.auth_errors += 1
            log.info("%s: authentication failed", self.peer)
            return write_sasl(request, None, out)
        self.authenticated = True
        log.info("%s: authenticated as %s", self.peer, user)
        return write_sasl(request, b"Authenticated", out)

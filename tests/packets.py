"""Build and parse memcached binary-protocol packets, with no sockets.

Both test suites describe requests with these builders and read the
server's bytes back through `ResponseParser`, so the byte-level expectations
live in one place.  Socket handling lives in `wire.py`, not here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">BBHBBHIIQ")
HEADER_SIZE = HEADER.size

REQUEST_MAGIC = 0x80
RESPONSE_MAGIC = 0x81

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
SASL_LIST_MECHS = 0x20
SASL_AUTH = 0x21
SASL_STEP = 0x22
GATK = 0x23
GATKQ = 0x24

SUCCESS = 0x00
KEY_NOT_FOUND = 0x01
KEY_EXISTS = 0x02
TOO_LARGE = 0x03
INVALID_ARGUMENTS = 0x04
NOT_STORED = 0x05
NON_NUMERIC = 0x06
UNKNOWN_COMMAND = 0x81
OUT_OF_MEMORY = 0x82

# memcached 1.6's error texts, sent as the value of an error reply.
ERROR_TEXT = {
    KEY_NOT_FOUND: b"Not found",
    KEY_EXISTS: b"Data exists for key.",
    TOO_LARGE: b"Too large.",
    INVALID_ARGUMENTS: b"Invalid arguments",
    NOT_STORED: b"Not stored.",
    NON_NUMERIC: b"Non-numeric server-side value for incr or decr",
    UNKNOWN_COMMAND: b"Unknown command",
    OUT_OF_MEMORY: b"Out of memory",
}

NO_EXPIRY_CREATE = 0xFFFFFFFF  # INCR/DECR expiry meaning "do not create"


def request(
    opcode: int,
    key: bytes = b"",
    extras: bytes = b"",
    value: bytes = b"",
    *,
    opaque: int = 0,
    cas: int = 0,
    magic: int = REQUEST_MAGIC,
    datatype: int = 0,
    vbucket: int = 0,
    keylen: int | None = None,
    extlen: int | None = None,
    bodylen: int | None = None,
) -> bytes:
    """Return one request packet; the length overrides forge malformed headers."""
    kl = len(key) if keylen is None else keylen
    el = len(extras) if extlen is None else extlen
    bl = len(extras) + len(key) + len(value) if bodylen is None else bodylen
    header = HEADER.pack(magic, opcode, kl, el, datatype, vbucket, bl, opaque, cas)
    return header + extras + key + value


def storage_extras(flags: int = 0, expiry: int = 0) -> bytes:
    """Extras of SET/ADD/REPLACE and their quiet forms."""
    return struct.pack(">II", flags, expiry)


def counter_extras(delta: int, initial: int = 0, expiry: int = 0) -> bytes:
    """Extras of INCREMENT/DECREMENT and their quiet forms."""
    return struct.pack(">QQI", delta, initial, expiry)


def expiry_extras(expiry: int) -> bytes:
    """Extras of TOUCH, GAT, GATQ, GATK, GATKQ and FLUSH-with-delay."""
    return struct.pack(">I", expiry)


def set_(key: bytes, value: bytes, flags: int = 0, expiry: int = 0, **kw) -> bytes:
    return request(kw.pop("opcode", SET), key, storage_extras(flags, expiry), value, **kw)


def get(key: bytes, opcode: int = GET, **kw) -> bytes:
    return request(opcode, key, **kw)


def counter(opcode: int, key: bytes, delta: int, initial: int = 0, expiry: int = 0, **kw) -> bytes:
    return request(opcode, key, counter_extras(delta, initial, expiry), **kw)


def noop(opaque: int = 0) -> bytes:
    return request(NOOP, opaque=opaque)


@dataclass(frozen=True, slots=True)
class Response:
    magic: int
    opcode: int
    status: int
    opaque: int
    cas: int
    datatype: int = 0
    extras: bytes = b""
    key: bytes = b""
    value: bytes = b""

    @property
    def flags(self) -> int:
        """The 4-byte flags of a GET-family hit (or TOUCH reply)."""
        assert len(self.extras) == 4, f"expected 4 bytes of flags, got {self.extras!r}"
        return struct.unpack(">I", self.extras)[0]

    @property
    def counter(self) -> int:
        """The 8-byte counter value of an INCREMENT/DECREMENT success."""
        assert len(self.value) == 8, f"expected an 8-byte counter, got {self.value!r}"
        return struct.unpack(">Q", self.value)[0]


class ProtocolViolation(Exception):
    """The server sent bytes that are not a binary-protocol response."""


class ResponseParser:
    """Incremental response parser: `feed(bytes)`, then `next()` until None."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet part of a complete response."""
        return bytes(self._buf)

    def next(self) -> Response | None:
        if len(self._buf) < HEADER_SIZE:
            return None
        magic, opcode, keylen, extlen, datatype, status, bodylen, opaque, cas = HEADER.unpack_from(
            self._buf
        )
        if magic != RESPONSE_MAGIC:
            raise ProtocolViolation(
                f"bad response magic 0x{magic:02x} in {bytes(self._buf[:HEADER_SIZE]).hex()}"
            )
        if keylen + extlen > bodylen:
            raise ProtocolViolation(f"key {keylen} + extras {extlen} > body {bodylen}")
        if len(self._buf) < HEADER_SIZE + bodylen:
            return None
        body = bytes(self._buf[HEADER_SIZE : HEADER_SIZE + bodylen])
        del self._buf[: HEADER_SIZE + bodylen]
        return Response(
            magic=magic,
            opcode=opcode,
            status=status,
            opaque=opaque,
            cas=cas,
            datatype=datatype,
            extras=body[:extlen],
            key=body[extlen : extlen + keylen],
            value=body[extlen + keylen :],
        )


def responses(data: bytes) -> list[Response]:
    """Every response in ``data``, which must hold whole responses only."""
    parser = ResponseParser()
    parser.feed(data)
    out = []
    while (response := parser.next()) is not None:
        out.append(response)
    if parser.pending:
        raise ProtocolViolation(f"partial response: {parser.pending[:48].hex()}")
    return out

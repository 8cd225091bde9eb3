"""The soak benchmark's wire formats: model operations to bytes, replies back to model replies.

What lives here, sans-IO (bytes in, objects out, nothing that touches a
socket or a clock):

- ``Call``: one request on the wire -- its bytes, the model operations it
  carries (a text ``get a b c`` carries three), and how its reply is read;
- builders for the binary protocol (every opcode the soak uses, loud and
  quiet), the text protocol and the meta commands;
- ``ReplyBuffer`` and the readers that turn what a server sent into
  ``soakmodel.Reply`` objects, raising ``Garbled`` for anything that is not
  a well-formed reply to the request it answers (wrong opcode or opaque, a
  reply out of order, lengths that do not add up, an unknown line).
- ``silent(call)``: what a call's missing reply means (a quiet GET's miss,
  a quiet SET's success, a text ``noreply`` whose outcome is not known).

What does not live here: judging whether a well-formed reply is *right*
(soakmodel.py) and the I/O, workload and report (soak.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mcclient import HEADER, RESPONSE, request
from soakmodel import (
    MISS, NOREPLY, Arith, Delete, Get, Mode, Op, Reply, Status, Store, Touch, done, hit, number,
)

OPCODES = {
    "get": 0x00, "set": 0x01, "add": 0x02, "replace": 0x03, "delete": 0x04, "incr": 0x05, "decr": 0x06,
    "quit": 0x07, "flush": 0x08, "getq": 0x09, "noop": 0x0A, "version": 0x0B, "getk": 0x0C, "getkq": 0x0D,
    "append": 0x0E, "prepend": 0x0F, "stat": 0x10, "setq": 0x11, "addq": 0x12, "replaceq": 0x13,
    "deleteq": 0x14, "incrq": 0x15, "decrq": 0x16, "quitq": 0x17, "appendq": 0x19, "prependq": 0x1A,
    "touch": 0x1C, "gat": 0x1D, "gatq": 0x1E, "gatk": 0x23, "gatkq": 0x24,
}
KEYED_REPLIES = {0x0C, 0x0D, 0x23, 0x24}  # GETK, GETKQ, GATK, GATKQ echo the key
NO_CREATE = 0xFFFFFFFF  # INCR/DECR expiry meaning "do not create on a miss"
STORAGE_EXTRAS = struct.Struct(">II")
COUNTER_EXTRAS = struct.Struct(">QQI")
EXPIRY_EXTRAS = struct.Struct(">I")
FLAGS = struct.Struct(">I")
COUNTER = struct.Struct(">Q")

OUT_OF_MEMORY = b"SERVER_ERROR out of memory"
NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value"
MAX_LINE = 8192


class Garbled(Exception):
    """The server sent something that is not a well-formed reply to what was asked."""


@dataclass(slots=True, eq=False)
class Call:
    """One request on the wire.

    ``reply``: how its reply is read (binary: "get", "store", "delete",
    "arith", "touch", "stat", "plain"; text: "retrieval", "store", "delete",
    "arith", "touch", "mg", "ms", "md", "ma", "mn", "version", "stats",
    "flush"). ``quiet``: the reply may be missing (binary quiet opcodes and
    meta ``q``, matched by opaque); ``noreply``: never answered.
    """

    name: str
    data: bytes
    reply: str
    ops: tuple[Op, ...] = ()
    quiet: bool = False
    noreply: bool = False
    opaque: int = 0
    opcode: int = -1
    flags: str = ""  # meta commands: the flags asked for
    tag: object = None  # the caller's own bookkeeping

    @property
    def writes(self) -> bool:
        return any(not isinstance(op, Get) or op.touch is not None for op in self.ops)


def silent(call: Call) -> Reply:
    """What it means that ``call`` got no reply."""
    if call.noreply:
        return NOREPLY
    op = call.ops[0]
    if isinstance(op, Get):
        return MISS
    if isinstance(op, Store):
        return done(Status.STORED)
    if isinstance(op, Delete):
        return done(Status.DELETED)
    if isinstance(op, Arith):
        return number(None)
    raise ValueError(f"{call.name} cannot be quiet")


# ---------------------------------------------------------------- binary


def binary_call(name: str, op: Op | None = None, opaque: int = 0, group: bytes = b"") -> Call:
    """A binary request: ``name`` is an OPCODES name ("getkq", "setq", "noop", ...)."""
    opcode = OPCODES[name]
    if op is None:
        return Call(name, request(opcode, group, opaque=opaque), "admin", opaque=opaque, opcode=opcode)
    cas = 0
    value = b""
    if isinstance(op, Get):
        extras = b"" if op.touch is None else EXPIRY_EXTRAS.pack(op.touch)
        kind = "get"
    elif isinstance(op, Store):
        extras = b"" if op.mode in (Mode.APPEND, Mode.PREPEND) else STORAGE_EXTRAS.pack(op.flags, op.ttl)
        value, cas, kind = op.value, op.cas, "store"
    elif isinstance(op, Delete):
        extras, cas, kind = b"", op.cas, "delete"
    elif isinstance(op, Arith):
        initial, expiry = (0, NO_CREATE) if op.initial is None else (op.initial, op.ttl)
        extras, kind = COUNTER_EXTRAS.pack(op.delta, initial, expiry), "arith"
    else:
        extras, kind = EXPIRY_EXTRAS.pack(op.ttl), "touch"
    data = request(opcode, op.key, extras, value, opaque=opaque, cas=cas)
    return Call(name, data, kind, (op,), quiet=name.endswith("q"), opaque=opaque, opcode=opcode)


@dataclass(frozen=True, slots=True)
class Response:
    opcode: int
    status: int
    opaque: int
    cas: int
    extras: bytes
    key: bytes
    value: bytes


class ReplyBuffer:
    """Bytes received and not yet read; ``read_*`` return None until a whole reply is there."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.pos = 0

    def feed(self, chunk: bytes) -> None:
        if self.pos and (self.pos == len(self.data) or self.pos > 1 << 16):
            del self.data[: self.pos]
            self.pos = 0
        self.data += chunk

    @property
    def pending(self) -> int:
        return len(self.data) - self.pos

    def line(self) -> bytes | None:
        """The next line without its CRLF, consumed; None if it has not all arrived."""
        end = self.data.find(b"\r\n", self.pos)
        if end < 0:
            if len(self.data) - self.pos > MAX_LINE:
                raise Garbled(f"no line end in {MAX_LINE} bytes: {bytes(self.data[self.pos:self.pos + 60])!r}")
            return None
        line = bytes(self.data[self.pos : end])
        self.pos = end + 2
        return line

    def block(self, size: int) -> bytes | None:
        """A data block of ``size`` bytes and its CRLF, consumed; None if not all there."""
        if len(self.data) - self.pos < size + 2:
            return None
        end = self.pos + size
        if self.data[end : end + 2] != b"\r\n":
            raise Garbled(f"data block of {size} bytes not followed by CRLF")
        data = bytes(self.data[self.pos : end])
        self.pos = end + 2
        return data

    def read_binary(self) -> Response | None:
        if len(self.data) - self.pos < HEADER.size:
            return None
        magic, opcode, keylen, extlen, _, status, bodylen, opaque, cas = HEADER.unpack_from(self.data, self.pos)
        if magic != RESPONSE:
            raise Garbled(f"bad response magic 0x{magic:02x}")
        if keylen + extlen > bodylen:
            raise Garbled(f"key {keylen} + extras {extlen} > body {bodylen}")
        start = self.pos + HEADER.size
        if len(self.data) < start + bodylen:
            return None
        body = bytes(self.data[start : start + bodylen])
        self.pos = start + bodylen
        return Response(opcode, status, opaque, cas, body[:extlen], body[extlen : extlen + keylen],
                        body[extlen + keylen :])


def check_admin(call: Call, resp: Response) -> bool:
    """A binary NOOP/VERSION/FLUSH/STAT reply must be a success; True when ``call`` is answered in full.

    STAT answers with one packet per statistic and ends with an empty key.
    """
    if resp.opcode != call.opcode or resp.status != 0:
        raise Garbled(f"{call.name} answered opcode 0x{resp.opcode:02x} status 0x{resp.status:02x}")
    if call.name == "version" and not resp.value:
        raise Garbled("empty VERSION")
    return call.name != "stat" or not resp.key


def decode_binary(call: Call, resp: Response) -> Reply:
    """The model reply for a binary response already matched to ``call`` by opaque."""
    if resp.opcode != call.opcode:
        raise Garbled(f"{call.name} answered with opcode 0x{resp.opcode:02x}")
    status, kind, op = resp.status, call.reply, call.ops[0]
    if status != 0 and resp.extras:
        raise Garbled(f"{call.name}: error status 0x{status:02x} with extras")
    if kind == "get":
        if status == 0:
            if len(resp.extras) != 4:
                raise Garbled(f"{call.name} hit with {len(resp.extras)} bytes of extras")
            if resp.key != (op.key if call.opcode in KEYED_REPLIES else b""):
                raise Garbled(f"{call.name} hit echoed key {resp.key!r}")
            return hit(resp.value, FLAGS.unpack(resp.extras)[0], resp.cas)
        if status == 1:
            if resp.key not in (b"", op.key):
                raise Garbled(f"{call.name} miss echoed key {resp.key!r}")
            return MISS
    elif kind == "store":
        if status == 0:
            return done(Status.STORED, resp.cas)
        if status == 0x82:
            return done(Status.OUT_OF_MEMORY)
        if op.cas and status in (1, 2):
            return done(Status.NOT_FOUND if status == 1 else Status.EXISTS)
        refused = {Mode.ADD: 2, Mode.REPLACE: 1, Mode.APPEND: 5, Mode.PREPEND: 5}.get(op.mode)
        if status == refused:
            return done(Status.NOT_STORED)
    elif kind == "delete":
        statuses = {0: Status.DELETED, 1: Status.NOT_FOUND, 2: Status.EXISTS}
        if status in statuses:
            return done(statuses[status])
    elif kind == "arith":
        if status == 0:
            if len(resp.value) != 8:
                raise Garbled(f"{call.name} answered a {len(resp.value)}-byte counter")
            return number(COUNTER.unpack(resp.value)[0], resp.cas)
        statuses = {1: Status.NOT_FOUND, 6: Status.NON_NUMERIC, 0x82: Status.OUT_OF_MEMORY}
        if status in statuses:
            return done(statuses[status])
    elif kind == "touch" and status in (0, 1):
        return done(Status.TOUCHED if status == 0 else Status.NOT_FOUND)
    return Reply(Status.ERROR, text=f"binary status 0x{status:02x} {resp.value[:60]!r}")


# ---------------------------------------------------------------- text


def text_get(name: str, ops: list[Get]) -> Call:
    """get/gets of several keys, or gat/gats (all ``ops`` with the same ``touch``)."""
    keys = b" ".join(op.key for op in ops)
    line = b"%s %s" % (name.encode(), keys) if ops[0].touch is None else b"%s %d %s" % (
        name.encode(), ops[0].touch, keys)
    return Call(name, line + b"\r\n", "retrieval", tuple(ops))


def text_call(name: str, op: Op | None = None, noreply: bool = False, cas: int = 0) -> Call:
    """A classic text command other than a retrieval; ``name`` is the command word."""
    tail = b" noreply" if noreply else b""
    if op is None:
        line = {"stats": b"stats", "version": b"version", "flush_all": b"flush_all", "mn": b"mn"}[name]
        kinds = {"stats": "stats", "version": "version", "flush_all": "flush", "mn": "mn"}
        return Call(name, line + b"\r\n", kinds[name])
    if isinstance(op, Store):
        word = b"cas" if op.cas else op.mode.value.encode()
        cas_part = b" %d" % op.cas if op.cas else b""
        data = b"%s %s %d %d %d%s%s\r\n%s\r\n" % (
            word, op.key, op.flags, op.ttl, len(op.value), cas_part, tail, op.value)
        return Call(word.decode(), data, "store", (op,), noreply=noreply)
    if isinstance(op, Delete):
        return Call("delete", b"delete %s%s\r\n" % (op.key, tail), "delete", (op,), noreply=noreply)
    if isinstance(op, Arith):
        word = b"incr" if op.incr else b"decr"
        return Call(word.decode(), b"%s %s %d%s\r\n" % (word, op.key, op.delta, tail), "arith", (op,),
                    noreply=noreply)
    if isinstance(op, Touch):
        return Call("touch", b"touch %s %d%s\r\n" % (op.key, op.ttl, tail), "touch", (op,), noreply=noreply)
    raise ValueError(name)


def meta_call(op: Op, flags: str = "", opaque: int | None = None) -> Call:
    """mg/ms/md/ma for ``op``; ``flags`` are the return flags wanted ("v", "c", "f", "s", "t", "k", "q")."""
    # Flags act in order: a T (touch) before t makes t report the new TTL.
    words = [f"T{op.touch}"] if isinstance(op, Get) and op.touch is not None else []
    words += list(flags)
    if opaque is not None:
        words.append(f"O{opaque}")
    quiet = "q" in flags
    if quiet and opaque is None:
        raise ValueError("a quiet meta command needs an opaque to be matched")
    if isinstance(op, Get):
        name, payload = "mg", b""
    elif isinstance(op, Store):
        mode = {Mode.SET: "S", Mode.ADD: "E", Mode.REPLACE: "R", Mode.APPEND: "A", Mode.PREPEND: "P"}[op.mode]
        words += [f"M{mode}", f"F{op.flags}", f"T{op.ttl}"] + ([f"C{op.cas}"] if op.cas else [])
        name, payload = "ms", b" %d" % len(op.value)
    elif isinstance(op, Delete):
        words += [f"C{op.cas}"] if op.cas else []
        name, payload = "md", b""
    elif isinstance(op, Arith):
        words += [f"M{'I' if op.incr else 'D'}", f"D{op.delta}"]
        if op.initial is not None:
            words += [f"N{op.ttl}", f"J{op.initial}"]
        name, payload = "ma", b""
    else:
        raise ValueError("meta commands touch through mg T")
    line = b"%s %s%s %s\r\n" % (name.encode(), op.key, payload, " ".join(words).encode())
    if isinstance(op, Store):
        line += op.value + b"\r\n"
    return Call(name, line, name, (op,), quiet=quiet, opaque=-1 if opaque is None else opaque, flags=flags)


def _meta_tokens(call: Call, words: list[bytes]) -> dict[str, bytes]:
    tokens: dict[str, bytes] = {}
    for word in words:
        if not word:
            raise Garbled(f"{call.name}: empty return flag")
        tokens[chr(word[0])] = word[1:]
    if call.opaque >= 0 and tokens.get("O") != b"%d" % call.opaque:
        raise Garbled(f"{call.name}: opaque {tokens.get('O')!r}, expected {call.opaque}")
    if "k" in tokens and tokens["k"] != call.ops[0].key:
        raise Garbled(f"{call.name}: key {tokens['k']!r}, expected {call.ops[0].key!r}")
    return tokens


def _int_token(call: Call, tokens: dict[str, bytes], flag: str) -> int | None:
    if flag not in tokens:
        return None
    try:
        return int(tokens[flag])
    except ValueError:
        raise Garbled(f"{call.name}: flag {flag} is {tokens[flag]!r}") from None


def is_reply_to(buf: ReplyBuffer, call: Call) -> bool | None:
    """For a quiet meta call: is the next reply line its own (by opaque)? None until a line is there."""
    end = buf.data.find(b"\r\n", buf.pos)
    if end < 0:
        return None
    words = bytes(buf.data[buf.pos : end]).split(b" ")
    return words[0] in (b"VA", b"HD", b"EN", b"NS", b"EX", b"NF") and b"O%d" % call.opaque in words[1:]


def read_text(buf: ReplyBuffer, call: Call) -> list[Reply] | None:
    """The replies (one per op) to ``call``, consumed; None if not all there yet (nothing consumed)."""
    start = buf.pos
    try:
        replies = _read_text(buf, call)
    except _Incomplete:
        buf.pos = start
        return None
    return replies


class _Incomplete(Exception):
    pass


def _line(buf: ReplyBuffer) -> bytes:
    line = buf.line()
    if line is None:
        raise _Incomplete
    return line


def _block(buf: ReplyBuffer, size: int) -> bytes:
    data = buf.block(size)
    if data is None:
        raise _Incomplete
    return data


def _read_text(buf: ReplyBuffer, call: Call) -> list[Reply]:
    kind = call.reply
    if kind == "retrieval":
        return _read_values(buf, call)
    line = _line(buf)
    if kind in ("store", "delete", "arith", "touch"):
        if line.startswith(OUT_OF_MEMORY) and kind in ("store", "arith"):
            return [done(Status.OUT_OF_MEMORY)]
        if kind == "arith" and line.isdigit():
            return [number(int(line))]
        if kind == "arith" and line == NON_NUMERIC:
            return [done(Status.NON_NUMERIC)]
        statuses = {
            b"STORED": Status.STORED, b"NOT_STORED": Status.NOT_STORED, b"EXISTS": Status.EXISTS,
            b"NOT_FOUND": Status.NOT_FOUND, b"DELETED": Status.DELETED, b"TOUCHED": Status.TOUCHED,
        }
        allowed = {
            "store": (b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND"), "delete": (b"DELETED", b"NOT_FOUND"),
            "arith": (b"NOT_FOUND",), "touch": (b"TOUCHED", b"NOT_FOUND"),
        }[kind]
        if line in allowed:
            return [done(statuses[line])]
        return [Reply(Status.ERROR, text=line[:80].decode(errors="replace"))]
    if kind in ("mg", "ms", "md", "ma"):
        return [_read_meta(buf, call, line)]
    if kind == "stats":
        names = set()
        while line != b"END":
            words = line.split(b" ", 2)
            if len(words) != 3 or words[0] != b"STAT":
                raise Garbled(f"stats line {line[:60]!r}")
            names.add(words[1])
            line = _line(buf)
        if b"pid" not in names or b"evictions" not in names:
            raise Garbled("stats without pid or evictions")
        return []
    expected = {"mn": b"MN", "flush": b"OK"}.get(kind)
    if (line == expected) if expected else line.startswith(b"VERSION ") and len(line) > 8:
        return []
    raise Garbled(f"{call.name} answered {line[:80]!r}")


def _read_values(buf: ReplyBuffer, call: Call) -> list[Reply]:
    replies: list[Reply] = []
    ops = call.ops
    with_cas = call.name in ("gets", "gats")
    while True:
        line = _line(buf)
        if line == b"END":
            return replies + [MISS] * (len(ops) - len(replies))
        words = line.split(b" ")
        if words[0] != b"VALUE" or len(words) != (5 if with_cas else 4):
            raise Garbled(f"{call.name} answered {line[:80]!r}")
        # Hits come in the order asked; the keys skipped over missed.
        while len(replies) < len(ops) and ops[len(replies)].key != words[1]:
            replies.append(MISS)
        if len(replies) == len(ops):
            raise Garbled(f"{call.name}: VALUE for {words[1]!r}, not asked for (or out of order)")
        try:
            flags, size = int(words[2]), int(words[3])
            cas = int(words[4]) if with_cas else None
        except ValueError:
            raise Garbled(f"{call.name}: bad VALUE line {line[:80]!r}") from None
        replies.append(hit(_block(buf, size), flags, cas))


def _read_meta(buf: ReplyBuffer, call: Call, line: bytes) -> Reply:
    if line == NON_NUMERIC and call.name == "ma":
        return done(Status.NON_NUMERIC)
    if line.startswith(OUT_OF_MEMORY) and call.name in ("ms", "ma"):
        return done(Status.OUT_OF_MEMORY)
    words = line.split(b" ")
    code = words[0]
    if code == b"VA":
        if len(words) < 2 or not words[1].isdigit():
            raise Garbled(f"{call.name}: bad VA line {line[:80]!r}")
        tokens = _meta_tokens(call, words[2:])
        data = _block(buf, int(words[1]))
    elif code in (b"HD", b"EN", b"NS", b"EX", b"NF"):
        tokens = _meta_tokens(call, words[1:])
        data = None
    else:
        return Reply(Status.ERROR, text=line[:80].decode(errors="replace"))
    cas = _int_token(call, tokens, "c") if code in (b"VA", b"HD") else None  # a refusal may say c0
    if call.name == "mg":
        if code == b"EN":
            return MISS
        if code not in (b"VA", b"HD"):
            return Reply(Status.ERROR, text=line[:80].decode(errors="replace"))
        if (code == b"VA") != ("v" in call.flags):
            raise Garbled(f"mg answered {code!r} to flags {call.flags!r}")
        size = _int_token(call, tokens, "s")
        if data is not None and size is not None and size != len(data):
            raise Garbled(f"mg: s{size} with a {len(data)}-byte value")
        return hit(data, _int_token(call, tokens, "f"), cas, _int_token(call, tokens, "t"), size)
    if call.name == "ma":
        if code == b"VA":
            if not data.isdigit():
                raise Garbled(f"ma: value {data[:40]!r} is not a number")
            return number(int(data), cas)
        if code == b"HD":
            return number(None, cas)
        statuses = {b"NF": Status.NOT_FOUND, b"NS": Status.OUT_OF_MEMORY, b"EX": Status.EXISTS}
    elif call.name == "ms":
        statuses = {b"HD": Status.STORED, b"NS": Status.NOT_STORED, b"EX": Status.EXISTS, b"NF": Status.NOT_FOUND}
    else:
        statuses = {b"HD": Status.DELETED, b"NF": Status.NOT_FOUND, b"EX": Status.EXISTS}
    if code not in statuses:
        return Reply(Status.ERROR, text=line[:80].decode(errors="replace"))
    return done(statuses[code], cas)

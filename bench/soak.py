"""Soak a memcached-compatible server and check every reply: `python bench/soak.py [--duration S]`.

For ``--duration`` seconds (default 600) ``--connections`` logical clients
(default 300) each open connection after connection -- binary or text, each
living for a random number of requests, closed politely, with QUIT, after a
half-close, or abruptly (replies left unread, a reset, a request cut in
half) -- and send a mix of every command: single requests, pipelines (quiet
binary opcodes ended by NOOP; text ``noreply`` and meta ``q`` ended by
``mn``), and on a few connections slow reading. Values run from 10 B to
500 KiB, mostly small, over a working set about three times ``--memory-mib``,
so the server must evict.

Flush is sent rarely: once by default (``--flushes N``), spread over the
run after warm-up (at 60% for one). Every flush empties the cache at once
for all clients, undoing the memory pressure the soak exists to keep up and
putting a dip into the RSS curve that has nothing to do with leaks; one is
enough to check, under load, that it kills exactly what it should (every
item whose write was answered before the flush was sent is a miss once the
flush is answered) and that memory refills to the same level.

Every reply is checked against soakmodel.Model (each client owns its keys,
so the model knows exactly what each may hold) or, for a few keys every
client shares, soakmodel.SharedKeys. Each second the server's RSS and open
descriptors are sampled from /proc, and its ``stats``. The report gives
operations by command, wrong replies (must be 0), errors by class, RSS at
its first second, after warm-up, in the middle and at the end (flat
within 5% after warm-up, see soakreport.memory_verdict),
descriptors at baseline and after every soak connection closed, connections
opened and evictions. Exit status: 0 when every check passed; 1 when one
failed (the report says which); 2 on a usage error; 3 when the server could
not be started or died.

What lives here: the command line, the server it starts (or the one it is
pointed at), the clients and the I/O, the sampler and the report's figures.
What does not: judging replies (soakmodel.py), the wire formats
(soakwire.py), judging memory and printing the report (soakreport.py).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

import mcclient  # noqa: E402
import servers  # noqa: E402
from soakmodel import (  # noqa: E402
    Absent, Arith, Delete, Get, Item, Mode, Model, Reply, SharedKeys, Status, Store, Touch, Values, counter_value,
)
from soakreport import WARMUP_SHARE, memory_verdict, print_report  # noqa: E402
from soakwire import (  # noqa: E402
    Call, Garbled, ReplyBuffer, binary_call, check_admin, decode_binary, is_reply_to, meta_call, read_text, silent,
    text_call, text_get,
)

# Value sizes: 80% 10 B-1 KiB, 17% 1-64 KiB, 3% 64-500 KiB, log-uniform within each tier.
SIZE_TIERS = ((0.80, 10, 1024), (0.17, 1024, 64 * 1024), (0.03, 64 * 1024, 500 * 1024))
MEAN_SIZE = sum(share * (hi - lo) / math.log(hi / lo) for share, lo, hi in SIZE_TIERS)
MAX_VALUE = 500 * 1024
WORKING_SET = 3  # owned keys hold about this many times the memory limit
ITEM_OVERHEAD = 64  # key and item header, roughly, on top of the value
COUNTER_EVERY = 8  # one owned key in 8 is a counter
SHARED_KEYS = 32
REPLY_TIMEOUT = 20.0
CONNECT_TIMEOUT = 10.0
SETTLE = 15  # seconds the server gets to close its side of every soak connection
LINGER = 45  # and how much longer the report watches descriptors it did not close
EXIT_FAILED, EXIT_NO_SERVER = 1, 3
SERVER_DIED = "the server died"
INF_TIME = float("inf")

# What each connection does: weights of single requests (and shared-key
# steps) and of the commands inside pipelines, per protocol.
BINARY_SINGLE = {
    "get": 8, "getk": 3, "gat": 2, "gatk": 1, "set": 9, "add": 2, "replace": 2, "cas": 3, "replace-cas": 1,
    "append": 2, "prepend": 2, "delete": 3, "delete-cas": 1, "incr": 3, "decr": 2, "incr-create": 2,
    "decr-create": 1, "touch": 2, "noop": 1, "version": 0.5, "stat": 0.3, "shared": 2,
}
BINARY_BATCH = {
    "getq": 4, "getkq": 4, "gatq": 1, "gatkq": 1, "get": 1, "getk": 1, "setq": 4, "addq": 1, "replaceq": 1,
    "appendq": 1, "prependq": 1, "deleteq": 1, "incrq": 1, "decrq": 1, "set": 1, "delete": 0.5, "touch": 0.5,
}
TEXT_SINGLE = {
    "get": 4, "gets": 3, "gat": 2, "gats": 1, "set": 7, "add": 2, "replace": 2, "append": 2, "prepend": 1,
    "cas": 3, "delete": 3, "incr": 2, "decr": 2, "touch": 2, "version": 0.3, "stats": 0.2, "mg": 6, "ms": 5,
    "md": 2, "ma": 3, "mn": 0.5, "shared": 2,
}
TEXT_BATCH = {
    "get": 2, "gets": 1, "set-noreply": 3, "add-noreply": 0.5, "append-noreply": 0.5, "delete-noreply": 1,
    "incr-noreply": 1, "touch-noreply": 1, "mg-q": 4, "ms-q": 3, "md-q": 1, "ma-q": 1, "set": 1, "mg": 1,
}
# Every command the soak sends (flush aside, which it sends --flushes times);
# the report lists any that did not run.
COMMANDS = sorted(
    {f"bin {name}" for name in ("get", "getq", "getk", "getkq", "gat", "gatq", "gatk", "gatkq", "set", "setq",
                                "add", "addq", "replace", "replaceq", "append", "appendq", "prepend", "prependq",
                                "delete", "deleteq", "incr", "incrq", "decr", "decrq", "touch", "noop",
                                "version", "stat")}
    | {f"text {name}" for name in ("get", "gets", "gat", "gats", "set", "add", "replace", "append", "prepend",
                                   "cas", "delete", "incr", "decr", "touch", "version", "stats", "mg", "ms",
                                   "md", "ma", "mn")}
)


def weighted(rng: random.Random, table: dict[str, float]) -> str:
    return rng.choices(list(table), list(table.values()))[0]


def value_size(rng: random.Random) -> int:
    r = rng.random()
    for share, lo, hi in SIZE_TIERS:
        if r < share:
            return int(lo * (hi / lo) ** rng.random())
        r -= share
    return SIZE_TIERS[-1][2]


class ConnError(Exception):
    """The connection failed: ``kind`` classifies it for the report."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass
class Tally:
    """Everything the report counts."""

    commands: Counter = field(default_factory=Counter)
    wrong: int = 0
    wrong_samples: list[str] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    closes: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    connections: int = 0
    slow_connections: int = 0
    open_now: int = 0
    open_peak: int = 0
    pipelines: int = 0
    quarantined: int = 0

    def mark_wrong(self, reason: str) -> None:
        self.wrong += 1
        if len(self.wrong_samples) < 20:
            self.wrong_samples.append(reason)

    def mark_error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{kind}: {detail}")


class Conn:
    """One client socket, its reply buffer and, for slow readers, a slow way of reading."""

    def __init__(self, address: tuple[str, int], rng: random.Random, slow: bool):
        self.rng, self.slow = rng, slow
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if slow:  # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rng.choice((4096, 8192, 16384)))
        self.sock.settimeout(CONNECT_TIMEOUT)
        try:
            self.sock.connect(address)
        except socket.timeout:
            self.sock.close()
            raise ConnError("connect timeout") from None
        except OSError as exc:
            self.sock.close()
            raise ConnError("connect failed", str(exc)) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(REPLY_TIMEOUT)
        self.buf = ReplyBuffer()
        self.opaque = 0
        self.sender: gevent.Greenlet | None = None
        self.send_error: ConnError | None = None

    def next_opaque(self) -> int:
        self.opaque = (self.opaque + 1) & 0xFFFFFFFF
        return self.opaque

    def send(self, data: bytes) -> None:
        """Send ``data``; a large one goes from its own greenlet, so replies are read meanwhile.

        (A server that has stopped reading until its replies are read, and a
        client that reads only after sending everything, would wait for each
        other until a timeout.)
        """
        if len(data) <= 1 << 16:
            self._sendall(data)
            if self.send_error:
                raise self.send_error
        else:
            self.sender = gevent.spawn(self._sendall, data)

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            self.send_error = ConnError("send timeout")
        except OSError as exc:
            self.send_error = ConnError("send failed", str(exc))

    def sent(self) -> None:
        """Wait for a background send to finish (it has, once its replies are in)."""
        if self.sender is not None:
            sender, self.sender = self.sender, None
            sender.join(REPLY_TIMEOUT)
            if not sender.ready():
                sender.kill()
                raise ConnError("send timeout")
        if self.send_error:
            raise self.send_error

    def fill(self) -> None:
        if self.send_error:
            raise self.send_error
        try:
            if self.slow:
                gevent.sleep(self.rng.uniform(0.002, 0.02))
                data = self.sock.recv(self.rng.choice((1024, 4096, 16384)))
            else:
                data = self.sock.recv(1 << 18)
        except socket.timeout:
            raise ConnError("reply timeout") from None
        except OSError as exc:
            raise ConnError("connection reset", str(exc)) from None
        if not data:
            raise ConnError("closed by server")
        self.buf.feed(data)

    def close(self, reset: bool = False) -> None:
        """Close; with ``reset``, abortively (an RST instead of a FIN)."""
        if self.sender is not None:
            self.sender.kill()
        if reset:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # the server reset it first
        self.sock.close()

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise ConnError("connection reset", str(exc)) from None

    def expect_eof(self) -> None:
        """After QUIT or a half-close: the server must close, sending nothing more."""
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            raise ConnError("reply timeout", "no close after quit") from None
        except OSError:
            return  # a reset is a close too
        if data:
            raise Garbled(f"{data[:60]!r} after the last reply")


class Client:
    """One logical client: owns its keys, and uses them across its successive connections."""

    def __init__(self, soak: "Soak", index: int, keys: int):
        self.soak, self.model, self.tally = soak, soak.model, soak.tally
        self.rng = random.Random(f"{soak.seed}:{index}")
        names = [b"%s:o%d:%d" % (soak.tag, index, i) for i in range(keys)]
        self.counters = names[::COUNTER_EVERY]
        self.blobs = [name for i, name in enumerate(names) if i % COUNTER_EVERY]
        self.serial = 0
        self.answered = 0  # how many calls of the current exchange were answered (and judged)

    # -- the life of a client: connection after connection

    def run(self) -> None:
        while time.monotonic() < self.soak.deadline:
            self.one_connection()
            gevent.sleep(self.rng.uniform(0, 0.005))

    def one_connection(self) -> None:
        rng, tally = self.rng, self.tally
        binary = rng.random() < 0.5
        slow = rng.random() < 0.04
        budget = rng.choice((rng.randint(1, 3), rng.randint(4, 50), rng.randint(4, 50), rng.randint(50, 500)))
        if slow:
            budget = min(budget, 20)
        try:
            conn = Conn(self.soak.address, rng, slow)
        except ConnError as exc:
            tally.mark_error(exc.kind, str(exc))
            gevent.sleep(0.1)
            return
        tally.connections += 1
        tally.slow_connections += slow
        tally.open_now += 1
        tally.open_peak = max(tally.open_peak, tally.open_now)
        calls: list[Call] = []
        try:
            while budget > 0 and time.monotonic() < self.soak.deadline:
                if rng.random() < 0.25:
                    calls = self.batch(conn, binary)
                    tally.pipelines += 1
                    self.exchange(conn, calls, binary)
                elif (name := weighted(rng, BINARY_SINGLE if binary else TEXT_SINGLE)) == "shared":
                    calls = []
                    self.shared_step(conn, binary)
                else:
                    calls = [call] if (call := self.single(conn, name, binary)) else []
                    if calls:
                        self.exchange(conn, calls, binary)
                budget -= max(len(calls), 1)
            calls = []
            self.end(conn, binary)
        except (ConnError, Garbled) as exc:
            if isinstance(exc, Garbled):
                tally.mark_wrong(f"garbled reply: {exc}")
            else:
                tally.mark_error(exc.kind, str(exc))
            self.quarantine(calls[self.answered :])
            conn.close()
        except BaseException:
            conn.close()  # a crash of the soak itself must not look like a descriptor the server leaked
            raise
        finally:
            tally.open_now -= 1

    def end(self, conn: Conn, binary: bool) -> None:
        """Close the connection one of the ways clients do."""
        rng, tally = self.rng, self.tally
        how = weighted(rng, {"close": 55, "quit": 15, "half-close": 5, "unread": 10, "reset": 10, "cut": 5})
        tally.closes[how] += 1
        if how == "quit":
            if binary:
                name = rng.choice(("quit", "quitq"))
                call = binary_call(name, opaque=conn.next_opaque())
                if name == "quit":
                    self.exchange(conn, [call], binary)
                else:
                    conn.send(call.data)
            else:
                conn.send(b"quit\r\n")
            conn.expect_eof()
        elif how == "half-close":
            calls = self.reads(conn, binary)
            sent = time.monotonic()
            conn.send(b"".join(call.data for call in calls))
            conn.shutdown_write()
            self.exchange(conn, calls, binary, sent=sent)
            conn.expect_eof()
        elif how == "unread":  # replies are left unread: reads only, so nothing is left undecided
            conn.send(b"".join(call.data for call in self.reads(conn, binary)))
        elif how == "cut":  # a strict prefix of a request is never a whole one, so never runs
            fallback = binary_call("noop") if binary else text_call("version")
            data = (self.single(conn, "set", binary) or fallback).data
            conn.send(data[: rng.randint(1, len(data) - 1)])
        conn.close(reset=how == "reset" or (how == "unread" and rng.random() < 0.5))

    # -- requests

    def reads(self, conn: Conn, binary: bool) -> list[Call]:
        """A pipeline of plain reads of own keys, ended by a loud request."""
        keys = self.rng.sample(self.blobs + self.counters, min(self.rng.randint(1, 8), len(self.blobs)))
        if binary:
            calls = [binary_call(self.rng.choice(("getq", "getkq", "get")), Get(k), conn.next_opaque())
                     for k in keys]
            return calls + [binary_call("noop", opaque=conn.next_opaque())]
        return [text_get("get", [Get(k) for k in keys]), text_call("mn")]

    def batch(self, conn: Conn, binary: bool) -> list[Call]:
        """A pipeline: 2-24 requests on distinct keys, quiet ones included, ended by a loud one."""
        used: set[bytes] = set()
        calls = []
        for _ in range(self.rng.randint(2, 24)):
            name = weighted(self.rng, BINARY_BATCH if binary else TEXT_BATCH)
            call = self.single(conn, name, binary, used)
            if call is not None:
                calls.append(call)
        if not calls or calls[-1].quiet or calls[-1].noreply or self.rng.random() < 0.5:
            calls.append(binary_call("noop", opaque=conn.next_opaque()) if binary else text_call("mn"))
        return calls

    def pick(self, kind: str, used: set[bytes] | None = None) -> bytes | None:
        """An own key: "blob", "counter" or "any"; one not in ``used`` (then added to it)."""
        pool = self.blobs if kind == "blob" else self.counters if kind == "counter" else None
        for _ in range(4):
            if pool is None:
                key = self.rng.choice(self.counters if self.rng.random() < 1 / COUNTER_EVERY else self.blobs)
            else:
                key = self.rng.choice(pool)
            if used is None or key not in used:
                if used is not None:
                    used.add(key)
                return key
        return None

    def ttl(self) -> int:
        return self.rng.randint(1, 5) if self.rng.random() < 0.12 else 0

    def value(self, key: bytes, size: int | None = None) -> bytes:
        if key in self.counters and size is None:
            return b"%d" % self.rng.choice((self.rng.randint(0, 10**6), self.rng.randint(0, 10**15)))
        self.serial += 1
        return self.soak.values.owned(key, self.serial, size or value_size(self.rng))

    def delta(self, key: bytes, incr: bool) -> int:
        """Mostly small; sometimes one that wraps an incr past 2**64 or floors a decr at 0.

        Counters stay below 2**63 all the same: memcached 1.6.18 may call a
        larger one non-numeric (safe_strtoull looks for a '-' with strchr,
        which runs on past the item's data into whatever memory follows).
        """
        item = self.model.item(key)
        current = counter_value(item.value) if item else None
        if self.rng.random() < 0.95 or type(current) is not int or current < 1:
            return self.rng.randint(0, 1000)
        return (1 << 64) - self.rng.randint(1, current) if incr else (1 << 64) - self.rng.randint(1, 1000)

    def known_cas(self, key: bytes) -> int | None:
        """A CAS to send: the item's own (usually) or a stale one; None when the model does not know it."""
        item = self.model.item(key)
        if item is None or item.cas is None:
            return None
        return item.cas if self.rng.random() < 0.8 else item.cas + (1 << 40)

    def longest(self, key: bytes) -> int:
        return max((len(s.value) for s in self.model.state(key) if isinstance(s, Item)), default=0)

    def single(self, conn: Conn, name: str, binary: bool, used: set[bytes] | None = None) -> Call | None:
        """One request named as in the weight tables; None when it does not fit the key's state.

        Names: a binary opcode name or a text command, with a variant after
        a dash ("replace-cas", "incr-create", "set-noreply", "mg-q").
        """
        if name in ("noop", "version", "stat") and binary:
            return binary_call(name, opaque=conn.next_opaque())
        if name in ("version", "stats", "mn"):
            return text_call(name)
        command, _, variant = name.partition("-")
        if binary and command == "cas":
            command, variant = "set", "cas"
        quiet = variant == "q" or (binary and command.endswith("q"))
        base = command[:-1] if binary and quiet else command  # the loud form names the operation
        key = self.pick(self.key_kind(base), used)
        if key is None or (variant == "noreply" and len(self.model.state(key)) > 1):
            return None  # noreply leaves the outcome open: only on a key whose state is settled
        op = self.operation(base, key, variant)
        if op is None:
            return None
        if binary:
            return binary_call(command, op, conn.next_opaque())
        if base in ("mg", "ms", "md", "ma"):
            return self.meta(conn, op, quiet)
        if base in ("get", "gets", "gat", "gats"):
            taken = used if used is not None else {key}
            ops = [op] + [Get(other, op.touch) for _ in range(self.rng.randint(0, 3))
                          if (other := self.pick("any", taken)) is not None]
            return text_get(base, ops)
        return text_call(base, op, noreply=variant == "noreply")

    def key_kind(self, base: str) -> str:
        if base in ("incr", "decr", "ma"):
            return "blob" if self.rng.random() < 0.05 else "counter"  # non-numeric: memcached refuses
        return "blob" if base in ("append", "prepend") else "any"

    def operation(self, base: str, key: bytes, variant: str):
        """The model operation behind a command, for ``key``; None when the model cannot say what to send."""
        rng = self.rng
        if base in ("get", "getk", "gets", "mg"):
            return Get(key, self.ttl() if base == "mg" and rng.random() < 0.15 else None)
        if base in ("gat", "gatk", "gats"):
            return Get(key, rng.choice((0, rng.randint(1, 8))))
        if base == "touch":
            return Touch(key, rng.choice((0, rng.randint(1, 8))))
        if base in ("delete", "md"):
            cas = 0
            if variant == "cas" or (base == "md" and rng.random() < 0.3):
                if (cas := self.known_cas(key)) is None:
                    return None
            return Delete(key, cas)
        if base in ("incr", "decr", "ma"):
            create = variant == "create" or rng.random() < 0.3 and base == "ma"
            incr = base == "incr" or (base == "ma" and rng.random() < 0.6)
            initial = rng.randint(0, 10**6) if create else None
            return Arith(key, self.delta(key, incr), incr, initial, self.ttl() if create else 0)
        if base == "ms":
            modes = (Mode.SET, Mode.SET, Mode.ADD, Mode.REPLACE)
            mode = rng.choice(modes + ((Mode.APPEND, Mode.PREPEND) if key in self.blobs else ()))
        else:
            mode = Mode.SET if base == "cas" else Mode(base)
        cas = 0
        if base == "cas" or variant == "cas" or (base == "ms" and mode is Mode.SET and rng.random() < 0.3):
            if (cas := self.known_cas(key)) is None:
                return None
        if mode in (Mode.APPEND, Mode.PREPEND):
            value = self.value(key, rng.randint(10, 200))
            if self.longest(key) + len(value) > MAX_VALUE:
                return None
            return Store(mode, key, value)
        flags = rng.getrandbits(32) if key in self.blobs else rng.getrandbits(16)
        return Store(mode, key, self.value(key), flags, self.ttl(), cas)

    def meta(self, conn: Conn, op, quiet: bool) -> Call | None:
        rng = self.rng
        if quiet and isinstance(op, Arith) and not self.numeric(op.key):
            return None  # a quiet ma refused as non-numeric answers a CLIENT_ERROR without the opaque
        if isinstance(op, Get):
            flags = "".join(f for f in "fcstk" if rng.random() < 0.4)
            if rng.random() < 0.85:
                flags = "v" + flags
        elif isinstance(op, Store):
            flags = "".join(f for f in "ck" if rng.random() < 0.5)
        elif isinstance(op, Arith):
            flags = "".join(f for f in "vck" if rng.random() < 0.5)
        else:
            flags = "k" if rng.random() < 0.3 else ""
        opaque = conn.next_opaque() if quiet or rng.random() < 0.5 else None
        return meta_call(op, flags + ("q" if quiet else ""), opaque)

    def numeric(self, key: bytes) -> bool:
        """Every state the model allows for ``key`` is a number or nothing."""
        return all(isinstance(s, Absent) or (isinstance(s, Item) and type(counter_value(s.value)) is int)
                   for s in self.model.state(key))

    # -- keys every client shares

    def shared_step(self, conn: Conn, binary: bool) -> None:
        """Read a shared key; or read it and write the next version with CAS (add on a miss), or delete it."""
        rng, soak = self.rng, self.soak
        key = rng.choice(soak.shared_names)
        seen: dict[str, int] = {}
        floor = soak.shared.read_sent(key)

        def judge_read(op, reply: Reply) -> str | None:
            version = None
            if reply.status is Status.HIT:
                version = soak.values.shared_version(key, reply.value, reply.flags)
                if isinstance(version, str):
                    return version
                seen["version"], seen["cas"] = version, reply.cas
            elif reply.status is not Status.MISS:
                return f"shared {key.decode()}: {reply} is no answer to a get"
            return soak.shared.read_done(key, floor, version)

        if binary:
            read = binary_call(rng.choice(("get", "getk")), Get(key), conn.next_opaque())
        elif rng.random() < 0.5:
            read = text_get(rng.choice(("get", "gets")), [Get(key)])
        else:
            read = meta_call(Get(key), "vfc", conn.next_opaque())
        read.tag = judge_read
        self.exchange(conn, [read], binary)
        if rng.random() < 0.5 or (read.name == "get" and not binary):
            return
        cas = seen.get("cas")
        if "version" in seen and cas is None:
            return
        if "version" in seen and rng.random() < 0.1:
            version_read = seen["version"]
            op = Delete(key, cas)

            def judge_delete(op, reply: Reply) -> str | None:
                if reply.status not in (Status.DELETED, Status.EXISTS, Status.NOT_FOUND):
                    return f"shared delete {key.decode()}: {reply}"
                soak.shared.delete_done(key, version_read, reply.status is Status.DELETED)
                return None

            call = binary_call("delete", op, conn.next_opaque()) if binary else meta_call(op, "", conn.next_opaque())
            call.tag = judge_delete
        else:
            version = soak.shared.new_version(key)
            value, flags = soak.values.shared(key, version)
            op = Store(Mode.SET, key, value, flags, 0, cas) if "version" in seen else Store(Mode.ADD, key, value, flags)
            refusals = (Status.EXISTS, Status.NOT_FOUND, Status.NOT_STORED, Status.OUT_OF_MEMORY)

            def judge_write(op, reply: Reply) -> str | None:
                soak.shared.write_done(key, version, reply.status is Status.STORED)
                if reply.status is not Status.STORED and reply.status not in refusals:
                    return f"shared write {key.decode()}: {reply}"
                return None

            if binary:
                call = binary_call("set" if op.cas else "add", op, conn.next_opaque())
            elif rng.random() < 0.5:
                call = text_call("cas" if op.cas else "add", op)
            else:
                call = meta_call(op, "", conn.next_opaque())
            call.tag = judge_write
        self.exchange(conn, [call], binary)

    # -- sending, reading and judging

    def exchange(self, conn: Conn, calls: list[Call], binary: bool, sent: float | None = None) -> None:
        """Send ``calls`` in one write (unless already ``sent`` then), read and judge every reply.

        The last call must be loud, so its reply ends the exchange.
        """
        self.answered = 0
        if sent is None:
            sent = time.monotonic()
            conn.send(b"".join(call.data for call in calls))
        if binary:
            self._read_binary(conn, calls, sent)
        else:
            self._read_text(conn, calls, sent)
        conn.sent()

    def _read_binary(self, conn: Conn, calls: list[Call], sent: float) -> None:
        i = 0
        while i < len(calls):
            while (resp := conn.buf.read_binary()) is None:
                conn.fill()
            now = time.monotonic()
            j = i + ((resp.opaque - calls[i].opaque) & 0xFFFFFFFF)
            if j >= len(calls):
                raise Garbled(f"reply with opaque {resp.opaque} (opcode 0x{resp.opcode:02x}) matches no request")
            for quiet in calls[i:j]:
                if not quiet.quiet:
                    raise Garbled(f"no reply to {quiet.name} (opaque {quiet.opaque})")
                self.judge(quiet, silent(quiet), sent, now)
            call = calls[j]
            if call.reply == "admin":
                while not check_admin(call, resp):
                    while (resp := conn.buf.read_binary()) is None:
                        conn.fill()
                self.judge(call, None, sent, now)
            else:
                self.judge(call, decode_binary(call, resp), sent, now)
            i = j + 1

    def _read_text(self, conn: Conn, calls: list[Call], sent: float) -> None:
        unanswered: list[Call] = []
        for call in calls:
            if call.noreply:
                unanswered.append(call)
                continue
            if call.quiet:
                while (mine := is_reply_to(conn.buf, call)) is None:
                    conn.fill()
                if not mine:
                    unanswered.append(call)
                    continue
            while (replies := read_text(conn.buf, call)) is None:
                conn.fill()
            now = time.monotonic()
            for quiet in unanswered:
                self.judge(quiet, silent(quiet), sent, now)
            unanswered.clear()
            self.judge(call, replies, sent, now)

    def judge(self, call: Call, replies, sent: float, now: float) -> None:
        """Check the replies to one call (a Reply, a list for a text multi-get, None for admin)."""
        tally = self.tally
        tally.commands[("bin " if call.opcode >= 0 else "text ") + call.name] += 1
        self.answered += 1
        if replies is None or replies == []:
            return
        if isinstance(replies, Reply):
            replies = [replies]
        for op, reply in zip(call.ops, replies, strict=True):
            tally.outcomes[reply.status.value] += 1
            if call.tag is not None:
                reason = call.tag(op, reply)
            else:
                reason = self.model.check(op, reply, sent, now)
            if reason:
                tally.mark_wrong(f"{call.name}: {reason}")

    def quarantine(self, calls: list[Call]) -> None:
        """Writes whose replies were lost may still land at any time: never use their keys again."""
        for call in calls:
            if call.writes and call.tag is None:
                for op in call.ops:
                    self.model.forget(op.key)
                    for keys in (self.blobs, self.counters):
                        if op.key in keys and len(keys) > 1:
                            keys.remove(op.key)
                            self.tally.quarantined += 1


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


def fd_targets(pid: int) -> dict[str, str]:
    """Descriptor number -> what it is open on ("socket:[inode]", a path, ...)."""
    targets = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass  # closed meanwhile
    return targets


def tcp_sockets() -> dict[str, tuple[str, int, int]]:
    """Socket inode -> (TCP state, local port, remote port), for every IPv4/IPv6 TCP socket."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], int(fields[3], 16), fields[9]
            sockets[inode] = (TCP_STATES.get(state, str(state)), int(local.rsplit(":", 1)[1], 16),
                              int(remote.rsplit(":", 1)[1], 16))
    return sockets


def describe_leaks(pid: int, before: dict[str, str]) -> list[str]:
    """What the server holds open now and did not at the baseline, and who holds the other end."""
    mine = {target for target in fd_targets(os.getpid()).values()}
    tcp = tcp_sockets()
    by_port = {local: inode for inode, (_, local, _) in tcp.items()}
    out = []
    for fd, target in sorted(fd_targets(pid).items(), key=lambda item: int(item[0])):
        if before.get(fd) == target:
            continue
        line = f"fd {fd}: {target}"
        if target.startswith("socket:["):
            inode = target[8:-1]
            if inode in tcp:
                state, local, remote = tcp[inode]
                peer = by_port.get(remote)
                held = "the soak still holds the peer" if peer and f"socket:[{peer}]" in mine else "peer closed"
                line += f" TCP {state} {local}<->{remote} ({held})"
        out.append(line)
    return out


@dataclass
class Sample:
    at: float  # seconds since the soak started
    rss: int | None
    fds: int | None
    stats: dict[str, str]


class Soak:
    """One run: the server, the clients, the sampler, and what they found."""

    def __init__(self, args: argparse.Namespace, address: tuple[str, int], pid: int | None):
        self.args = args
        self.address, self.pid = address, pid
        self.seed = args.seed
        self.tag = b"s%x" % (time.time_ns() % (1 << 32))  # fresh keys even on a server used before
        self.model, self.shared, self.values = Model(), SharedKeys(), Values(args.seed)
        self.shared_names = [b"%s:s%d" % (self.tag, i) for i in range(SHARED_KEYS)]
        self.tally = Tally()
        self.samples: list[Sample] = []
        self.flushes: list[tuple[float, str]] = []
        self.deadline = INF_TIME
        self.started = 0.0
        self.baseline_fds: dict[str, str] = {}
        self.leaks: list[str] = []
        self.stopped_early = ""

    def keys_per_client(self) -> int:
        owned = WORKING_SET * self.args.memory_mib * (1 << 20)
        return max(16, math.ceil(owned / ((MEAN_SIZE + ITEM_OVERHEAD) * self.args.connections)))

    def sample(self, stats_conn: mcclient.Connection) -> Sample:
        # Stats first: its round trip proves the server accepted the stats
        # connection, which a connect() alone does not, so every count includes it.
        stats = stats_conn.stats()
        rss = fds = None
        if self.pid is not None:
            try:
                rss = servers.vmrss(self.pid)
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except (OSError, servers.ServerError):
                pass
        return Sample(time.monotonic() - self.started, rss, fds, stats)

    def sampler(self, stats_conn: mcclient.Connection, alive) -> None:
        tick = self.started
        while time.monotonic() < self.deadline:
            tick += 1.0
            gevent.sleep(max(0.0, tick - time.monotonic()))
            if not alive():
                self.stopped_early = SERVER_DIED
                self.deadline = time.monotonic()
                return
            try:
                self.samples.append(self.sample(stats_conn))
            except (OSError, mcclient.ProtocolError) as exc:
                self.tally.mark_error("stats failed", str(exc))

    def flusher(self) -> None:
        """Flush --flushes times, evenly spread after warm-up; the model learns of each."""
        count = self.args.flushes
        rng = random.Random(f"{self.seed}:flush")
        duration = self.deadline - self.started
        for n in range(count):
            at = self.started + duration * (WARMUP_SHARE + (1 - WARMUP_SHARE) * (n + 1) / (count + 1))
            gevent.sleep(max(0.0, at - time.monotonic()))
            if time.monotonic() >= self.deadline:
                return
            binary = rng.random() < 0.5
            try:
                conn = Conn(self.address, rng, slow=False)
            except ConnError as exc:
                self.tally.mark_error(exc.kind, str(exc))
                continue
            self.tally.connections += 1
            sent = time.monotonic()
            try:
                if binary:
                    call = binary_call("flush", opaque=conn.next_opaque())
                    conn.send(call.data)
                    while (resp := conn.buf.read_binary()) is None:
                        conn.fill()
                    check_admin(call, resp)
                else:
                    call = text_call("flush_all")
                    conn.send(call.data)
                    while read_text(conn.buf, call) is None:
                        conn.fill()
            except ConnError as exc:
                self.tally.mark_error(exc.kind, f"flush: {exc}")
            except Garbled as exc:
                self.tally.mark_wrong(f"garbled reply to {call.name}: {exc}")
            else:
                self.model.flush(sent, time.monotonic())
                self.tally.commands[("bin " if binary else "text ") + call.name] += 1
                self.flushes.append((round(sent - self.started, 1), call.name))
            finally:
                conn.close()

    def run(self, alive) -> dict:
        args = self.args
        with mcclient.Connection(self.address[1], timeout=REPLY_TIMEOUT, host=self.address[0]) as stats_conn:
            baseline = self.sample(stats_conn)
            self.baseline_fds = fd_targets(self.pid) if self.pid is not None else {}
            self.started = time.monotonic()
            self.deadline = self.started + args.duration
            keys = self.keys_per_client()
            clients = [Client(self, i, keys) for i in range(args.connections)]
            sampler, flusher = gevent.spawn(self.sampler, stats_conn, alive), gevent.spawn(self.flusher)
            greenlets = [gevent.spawn(client.run) for client in clients]
            gevent.joinall(greenlets, timeout=args.duration + 2 * REPLY_TIMEOUT + 30)
            stuck = [g for g in greenlets if not g.ready()]
            for _ in stuck:
                self.tally.mark_error("client stuck at the deadline", "killed")
            gevent.killall(stuck, timeout=5)
            for g in greenlets:
                if g.ready() and g.exception is not None:
                    self.tally.mark_error("client crashed", repr(g.exception))
            ended = time.monotonic()
            flusher.kill()
            sampler.join(5)  # it stops at the deadline; killed mid-request it would leave a reply unread
            sampler.kill()
            final = self.settle(stats_conn, baseline, alive, ended)
        return self.report(baseline, final, ended - self.started, keys)

    def settle(self, stats_conn: mcclient.Connection, baseline: Sample, alive, ended: float) -> Sample | None:
        """The server's state once it had SETTLE seconds to notice that every soak connection closed.

        Descriptors still open then are leaked. For the report, what they
        were at the end of the load, and when (if within LINGER seconds more)
        they went away.
        """
        def extra(sample: Sample | None) -> bool:
            return sample is not None and None not in (baseline.fds, sample.fds) and sample.fds > baseline.fds

        final = self.sample(stats_conn) if alive() else None
        at_end = describe_leaks(self.pid, self.baseline_fds) if extra(final) else []
        while extra(final) and time.monotonic() < ended + SETTLE and alive():
            gevent.sleep(0.25)
            final = self.sample(stats_conn)
        if not extra(final):
            return final
        self.leaks = [f"at the end of the load: {leak}" for leak in at_end]
        self.leaks += [f"{SETTLE} s later: {leak}" for leak in describe_leaks(self.pid, self.baseline_fds)]
        later = final
        while extra(later) and time.monotonic() < ended + SETTLE + LINGER and alive():
            gevent.sleep(0.5)
            later = self.sample(stats_conn)
        gone = "closed" if not extra(later) else "still open"
        self.leaks.append(f"{gone} {time.monotonic() - ended:.1f} s after the end of the load")
        return final

    # -- the report

    def report(self, baseline: Sample, final: Sample | None, elapsed: float, keys: int) -> dict:
        args, tally = self.args, self.tally
        load = [s for s in self.samples if s.at <= elapsed]
        evicted_at = next((s.at for s in load if int(s.stats.get("evictions", 0)) > int(baseline.stats["evictions"])),
                          None)
        memory, failure = memory_verdict([(s.at, s.rss) for s in load if s.rss is not None], elapsed, evicted_at)
        memory["baseline"] = baseline.rss
        failures = [failure] if failure else []
        fds = {"baseline": baseline.fds, "peak": max((s.fds for s in load if s.fds is not None), default=None),
               "end": final.fds if final else None, "leaked": self.leaks}
        if final and baseline.fds is not None and final.fds is not None and final.fds > baseline.fds:
            failures.append(f"descriptors: {final.fds - baseline.fds} still open after every soak connection closed")
        if tally.wrong:
            failures.append(f"wrong replies: {tally.wrong}")
        errors = sum(tally.errors.values())
        if errors:
            failures.append(f"errors: {errors} ({', '.join(f'{k} {v}' for k, v in tally.errors.most_common())})")
        if final is None or self.stopped_early == SERVER_DIED:
            failures.append(f"server: {SERVER_DIED}")
        elif self.stopped_early:
            failures.append(f"stopped early: {self.stopped_early}")
        stats_end = final.stats if final else (load[-1].stats if load else baseline.stats)

        def delta(name: str) -> int | None:
            if name in stats_end and name in baseline.stats:
                return int(stats_end[name]) - int(baseline.stats[name])
            return None

        operations = sum(tally.commands.values())
        return {
            "target": args.target if args.server is None else f"{args.server} (pid {args.pid})",
            "duration": round(elapsed, 1), "connections": args.connections, "memory_mib": args.memory_mib,
            "seed": args.seed, "keys_per_client": keys, "shared_keys": SHARED_KEYS,
            "operations": operations, "ops_per_second": round(operations / max(elapsed, 1e-9)),
            "commands": dict(sorted(tally.commands.items())),
            "commands_not_run": [c for c in COMMANDS if not tally.commands.get(c)],
            "outcomes": dict(tally.outcomes.most_common()),
            "wrong_replies": tally.wrong, "wrong_samples": tally.wrong_samples,
            "errors": dict(tally.errors), "error_samples": tally.error_samples,
            "connections_opened": tally.connections, "server_connections": delta("total_connections"),
            "slow_connections": tally.slow_connections, "peak_open": tally.open_peak,
            "pipelines": tally.pipelines, "closes": dict(tally.closes), "quarantined_keys": tally.quarantined,
            "flushes": self.flushes, "evictions": delta("evictions"),
            "items_end": stats_end.get("curr_items"), "rss": memory, "fds": fds,
            "samples": [(round(s.at, 1), s.rss, s.fds, s.stats.get("evictions")) for s in self.samples],
            "failures": failures,
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Soak a memcached-compatible server with every command and check every reply.")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--connections", type=int, default=300, help="concurrent clients (default 300)")
    parser.add_argument("--memory-mib", type=int, default=64, help="the server's -m (default 64)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the workload (default 1)")
    parser.add_argument("--flushes", type=int, default=1, help="flushes, spread after warm-up (default 1)")
    parser.add_argument("--target", choices=("mbserver", "memcached"), default="mbserver",
                        help="the server to start (default mbserver)")
    parser.add_argument("--server", metavar="ADDR",
                        help="use this running server (HOST:PORT) instead of starting one; "
                             "--memory-mib must then match its -m")
    parser.add_argument("--pid", type=int, help="with --server: its PID, for RSS and descriptors")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 1 or args.memory_mib < 2 or args.flushes < 0:
        parser.error("--duration and --connections must be positive, --memory-mib at least 2, --flushes >= 0")
    if args.pid is not None and args.server is None:
        parser.error("--pid goes with --server")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass  # the soft limit is often enough; too few descriptors would show as connect errors
    server = None
    if args.server is None:
        log_dir = Path(tempfile.mkdtemp(prefix="mbserver-soak-"))
        try:
            server = servers.start(args.target, args.memory_mib, args.connections + 64, log_dir)
        except servers.ServerError as exc:
            print(f"soak: {exc}", file=sys.stderr)
            return EXIT_NO_SERVER
        address, pid = ("127.0.0.1", server.port), server.pid
        alive = lambda: server.proc.poll() is None  # noqa: E731
    else:
        host, _, port = args.server.rpartition(":")
        address, pid = (host or "127.0.0.1", int(port)), args.pid
        alive = lambda: pid is None or os.path.exists(f"/proc/{pid}")  # noqa: E731
    soak = Soak(args, address, pid)

    def stop(signum, frame=None) -> None:
        soak.stopped_early = f"stopped by signal {signum}"
        soak.deadline = time.monotonic()

    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop, signum)
    try:
        report = soak.run(alive)
    except (OSError, mcclient.ProtocolError) as exc:
        print(f"soak: cannot read the server's stats: {exc}", file=sys.stderr)
        report = None
    finally:
        if server is not None:
            code = server.stop()
            if code not in (0, None) and server.kind == "mbserver":
                print(f"soak: mbserver exited with {code}; log tail:\n{server.log_tail()}", file=sys.stderr)
    keep_log = server is not None and (report is None or bool(report["failures"]))
    if server is not None and not keep_log:
        shutil.rmtree(log_dir, ignore_errors=True)
    if report is not None:
        print_report(report)
    if keep_log:
        print(f"soak: the server's log is kept in {server.log_path}", file=sys.stderr)
    if report is None:
        return EXIT_NO_SERVER
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if f"server: {SERVER_DIED}" in report["failures"]:
        return EXIT_NO_SERVER
    return EXIT_FAILED if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

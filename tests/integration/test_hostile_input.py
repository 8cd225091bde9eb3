"""Hostile input against a live server: fuzzed streams and claimed sizes up to 4 GiB.

What lives here:

- a live fuzz: 20 connection slots send FUZZ_PACKETS (10,000) random and
  mutated packets in all, each slot reconnecting whenever the server closes
  on it (a few hundred connections in all), while a well-behaved client runs
  alongside doing pipelined SET / GETK / INCR / GET with checked values.
  Afterwards the server still answers, the well-behaved client saw only
  correct replies, every byte the server sent a binary fuzzer parsed as
  responses, and `curr_connections` and the process's open descriptors are
  back to their baseline;
- size attacks: bodies claimed up to 4 GiB on every opcode (stores get 0x03
  and the body is skipped as it arrives; unknown opcodes 0x81, skipped; the
  rest 0x04 and a close, as memcached), keys of exactly 250 and 251 bytes,
  extras lengths that don't fit the opcode; and the server's resident memory
  (VmRSS) does not grow by the claimed sizes — it stays within a few MiB.

What does not: the codec on its own (tests/unit/test_binary_fuzz.py), slow
readers, disconnects and limits (test_faults.py).

The helpers at the top (STAT, RSS, descriptor count, bounded polling) are
also used by test_faults.py.
"""

from __future__ import annotations

import os
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import pytest

from mbserver.commands import GetMany
from mbserver.protocol.binary import BinaryParser, ProtocolError

from .. import packets as P
from ..packets import ProtocolViolation, ResponseParser
from .wire import Connection

# mbserver's own options and its own answers (memcached answers a too-large
# store only after swallowing the body, and desyncs on some of these headers).
pytestmark = pytest.mark.usefixtures("mbserver_only")

E4, E8, E20 = bytes(4), bytes(8), bytes(20)
GIB4 = 0xFFFFFFFF
MIB = 1 << 20


# -- helpers shared with test_faults.py -----------------------------------------------


def stats(server, group: bytes = b"") -> dict[str, str]:
    """One STAT group, over a connection of its own (counted in curr_connections)."""
    with Connection(server.host, server.port) as c:
        c.send(P.request(P.STAT, group, opaque=0x57A7))
        out = {}
        while (reply := c.recv()).key:
            assert reply.status == P.SUCCESS and reply.opaque == 0x57A7
            out[reply.key.decode()] = reply.value.decode()
        return out


def curr_connections(server) -> int:
    """Open connections besides the one asking."""
    return int(stats(server)["curr_connections"]) - 1


def rss_bytes(server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def open_fds(server) -> int:
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


def poll(measure, done, timeout: float, interval: float = 0.05):
    """Call measure() until done(value) or timeout; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = measure()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def settle_baseline(server) -> tuple[int, int]:
    """(curr_connections, open descriptors) once the server has no clients but us."""
    connections = poll(lambda: curr_connections(server), lambda n: n == 0, 10)
    # Read with no probe connection open; the server may still be closing the
    # last probe's socket, so take the lowest of a few readings.
    fds = []
    poll(lambda: fds.append(open_fds(server)), lambda _: len(fds) >= 5, 5)
    return connections, min(fds)


def assert_back_to_baseline(server, baseline: tuple[int, int], what: str) -> None:
    connections, fds = baseline
    now = poll(lambda: curr_connections(server), lambda n: n <= connections, 15)
    assert now == connections, f"after {what}: curr_connections {now}, baseline {connections}"
    # A probe's socket may still be closing: allow one descriptor of slack.
    now_fds = poll(lambda: open_fds(server), lambda n: n <= fds, 10)
    assert now_fds <= fds + 1, f"after {what}: {now_fds} descriptors open, baseline {fds}"


def assert_clean_log(server) -> None:
    output = server.output()
    assert "Traceback" not in output, output[-4000:]


def read_until_closed(sock: socket.socket, limit: int = 1 << 30) -> tuple[bytes, str]:
    """Everything the peer sends until it closes: (bytes, "eof" | "reset")."""
    chunks, size = [], 0
    while size < limit:
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        if not data:
            return b"".join(chunks), "eof"
        chunks.append(data)
        size += len(data)
    raise AssertionError(f"peer sent more than {limit} bytes without closing")


# -- the live fuzz ---------------------------------------------------------------------

FUZZ_SLOTS = 20
FUZZ_PACKETS = 10_000
FUZZ_SEED = 0x5EED
FUZZ_KEYS = [b"fz%d" % i for i in range(8)]  # disjoint from the well-behaved client's
LENGTHS = [0, 1, 250, 251, 0x7FFFFFFF, 0x80000000, GIB4]


def valid_packet(rng: random.Random) -> bytes:
    opcode = rng.choice(
        [
            P.GET,
            P.GETQ,
            P.GETK,
            P.GETKQ,
            P.SET,
            P.SETQ,
            P.ADD,
            P.REPLACE,
            P.APPEND,
            P.PREPENDQ,
            P.DELETE,
            P.INCREMENT,
            P.DECREMENTQ,
            P.TOUCH,
            P.GAT,
            P.GATKQ,
            P.NOOP,
            P.VERSION,
            P.STAT,
            P.SASL_LIST_MECHS,
            P.SASL_AUTH,
            0x30,
            0xFF,
        ]
    )
    key = rng.choice(FUZZ_KEYS)
    value = rng.randbytes(rng.choice([0, 1, 10, 100, 2000]))
    opaque = rng.getrandbits(32)
    if opcode in (P.GET, P.GETQ, P.GETK, P.GETKQ, P.DELETE):
        return P.request(opcode, key, opaque=opaque)
    if opcode in (P.SET, P.SETQ, P.ADD, P.REPLACE):
        return P.set_(
            key, value, rng.getrandbits(32), rng.choice([0, 60]), opcode=opcode, opaque=opaque
        )
    if opcode in (P.APPEND, P.PREPENDQ, P.SASL_AUTH, 0x30):
        return P.request(
            opcode, key if opcode != P.SASL_AUTH else b"PLAIN", b"", value, opaque=opaque
        )
    if opcode in (P.INCREMENT, P.DECREMENTQ):
        return P.counter(opcode, key, rng.getrandbits(64), rng.getrandbits(64), opaque=opaque)
    if opcode in (P.TOUCH, P.GAT, P.GATKQ):
        return P.request(opcode, key, P.expiry_extras(rng.choice([0, 60])), opaque=opaque)
    if opcode == P.STAT:
        return P.request(opcode, rng.choice([b"", b"items", b"slabs", b"nonesuch"]), opaque=opaque)
    return P.request(opcode, opaque=opaque)


def mutate(rng: random.Random, packet: bytes) -> bytes:
    kind = rng.randrange(7)
    if kind == 0 and packet:  # flip a byte
        at = rng.randrange(len(packet))
        return packet[:at] + bytes([rng.randrange(256)]) + packet[at + 1 :]
    if kind == 1:  # truncate
        return packet[: rng.randrange(len(packet) + 1)]
    if kind == 2:  # opcode
        return packet[:1] + bytes([rng.randrange(256)]) + packet[2:]
    if kind == 3:  # key length
        return packet[:2] + struct.pack(">H", rng.choice([0, 250, 251, 0xFFFF])) + packet[4:]
    if kind == 4:  # extras length
        return packet[:4] + bytes([rng.choice([0, 4, 8, 20, 255])]) + packet[5:]
    if kind == 5:  # body length
        return packet[:8] + struct.pack(">I", rng.choice(LENGTHS)) + packet[12:]
    return bytes([rng.choice([0x81, 0x00, 0x47])]) + packet[1:]  # magic


def fuzz_packet(rng: random.Random, hostility: float) -> bytes:
    """A valid packet, or with probability `hostility` a mutated or random one."""
    roll = rng.random()
    if roll < hostility / 5:
        return rng.randbytes(rng.randint(1, 64))
    packet = valid_packet(rng)
    if roll < hostility:
        packet = mutate(rng, packet)
    return packet


# Each connection draws how hostile it is: the mildest get deep into the
# command layer before a mutation ends them, the worst barely start.
HOSTILITY = [0.02, 0.05, 0.15, 0.4, 1.0]


def inspect(script: bytes) -> tuple[int, bool]:
    """(requests the server will parse from this stream, whether one is a FLUSH).

    Worked out with the server's own sans-IO parser. A fuzzed FLUSH would wipe
    the well-behaved client's keys, and the point is that fuzzers cannot
    disturb it, short of such legitimate commands: scripts with one are
    redrawn. The count is the figure "packets that reached the server's
    command layer".
    """
    if not script or script[0] != P.REQUEST_MAGIC:
        return 0, False
    parser = BinaryParser()
    parser.feed(script)
    parsed = 0
    try:
        while (request := parser.next()) is not None:
            if request.__class__ is GetMany:
                parsed += len(request.keys)
                continue
            if request.command == "flush":
                return parsed, True
            parsed += 1
            if request.command == "quit":  # the server stops reading here
                break
    except ProtocolError:
        pass
    return parsed, False


@dataclass
class FuzzSlot:
    sock: socket.socket
    script: bytes
    ends: list[int]  # where each packet of the script ends
    sent: int = 0
    binary: bool = True
    replies: ResponseParser = field(default_factory=ResponseParser)
    reply_count: int = 0


@dataclass
class FuzzReport:
    connections: int = 0
    packets_sent: int = 0
    packets_parsed: int = 0  # of those scheduled; see inspect()
    bytes_sent: int = 0
    replies: int = 0
    resets: int = 0
    problems: list[str] = field(default_factory=list)


def run_fuzzers(server, rng: random.Random, deadline: float) -> FuzzReport:
    """FUZZ_SLOTS connections at a time until FUZZ_PACKETS packets are sent.

    One thread, non-blocking sockets: each connection gets a script of 1–40
    packets, sends it while reading whatever comes back, half-closes, and
    reads until the server closes; a slot whose connection ends starts a
    new one.
    """
    report = FuzzReport()
    selector = selectors.DefaultSelector()
    scheduled = 0

    def open_slot() -> None:
        nonlocal scheduled
        while True:
            count = min(rng.randint(1, 40), FUZZ_PACKETS - scheduled)
            hostility = rng.choice(HOSTILITY)
            packets = [fuzz_packet(rng, hostility) for _ in range(count)]
            script = b"".join(packets)
            parsed, flush = inspect(script)
            if not flush:
                break
        scheduled += count
        report.packets_parsed += parsed
        ends, end = [], 0
        for packet in packets:
            end += len(packet)
            ends.append(end)
        sock = socket.create_connection((server.host, server.port), timeout=5)
        sock.setblocking(False)
        slot = FuzzSlot(sock, script, ends, binary=bool(script) and script[0] == P.REQUEST_MAGIC)
        report.connections += 1
        if not script:
            sock.shutdown(socket.SHUT_WR)
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, slot)

    def finish(slot: FuzzSlot, how: str) -> None:
        selector.unregister(slot.sock)
        slot.sock.close()
        report.packets_sent += sum(1 for end in slot.ends if end <= slot.sent)
        report.bytes_sent += slot.sent
        report.replies += slot.reply_count
        if how == "reset":
            report.resets += 1
        # A clean close comes after whole replies only; a reset may cut one. A
        # stream not starting with the binary magic is the text protocol's
        # business (refused, or checked by its own tests): not checked here.
        if slot.binary and how == "eof" and slot.replies.pending:
            report.problems.append(f"partial reply before close: {slot.replies.pending[:48]!r}")
        if scheduled < FUZZ_PACKETS:
            open_slot()

    for _ in range(FUZZ_SLOTS):
        if scheduled < FUZZ_PACKETS:
            open_slot()
    while selector.get_map():
        if time.monotonic() > deadline:
            raise AssertionError(f"fuzzers still running at the deadline: {report}")
        for key, events in selector.select(timeout=1.0):
            slot: FuzzSlot = key.data
            if events & selectors.EVENT_WRITE and slot.sent < len(slot.script):
                try:
                    slot.sent += slot.sock.send(slot.script[slot.sent : slot.sent + 65536])
                except BlockingIOError:
                    pass
                except OSError:  # closed on us mid-script: read what the server said
                    selector.modify(slot.sock, selectors.EVENT_READ, slot)
                    continue
                if slot.sent == len(slot.script):
                    try:
                        slot.sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    selector.modify(slot.sock, selectors.EVENT_READ, slot)
            if events & selectors.EVENT_READ:
                try:
                    data = slot.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    finish(slot, "reset")
                    continue
                if not data:
                    finish(slot, "eof")
                    continue
                if slot.binary:
                    slot.replies.feed(data)
                    try:
                        while (reply := slot.replies.next()) is not None:
                            slot.reply_count += 1
                            if reply.status not in P.ERROR_TEXT and reply.status != P.SUCCESS:
                                report.problems.append(f"unexpected status in {reply}")
                    except ProtocolViolation as error:
                        report.problems.append(f"unparsable reply: {error}")
                        finish(slot, "violation")
    selector.close()
    return report


class WellBehavedClient(threading.Thread):
    """Pipelines SET / GETK / INCR / GET of its own keys and checks every reply."""

    def __init__(self, server, stop: threading.Event):
        super().__init__(daemon=True)
        self.server = server
        self.stop = stop
        self.rounds = 0
        self.errors: list[str] = []

    def check(self, condition: bool, what: str) -> None:
        if not condition and len(self.errors) < 20:
            self.errors.append(f"round {self.rounds}: {what}")

    def run(self) -> None:
        rng = random.Random(7)
        prefix = b"wellbehaved-%08x-" % rng.getrandbits(32)
        counter = prefix + b"counter"
        previous: tuple[bytes, bytes, int] | None = None
        try:
            with Connection(self.server.host, self.server.port, timeout=10) as c:
                # At least a few rounds, then until the fuzzers are done.
                while self.rounds < 20 or not self.stop.is_set():
                    key = prefix + b"%d" % self.rounds
                    value = rng.randbytes(rng.choice([0, 5, 500, 5000]))
                    flags = rng.getrandbits(32)
                    base = self.rounds * 8
                    data = (
                        P.set_(key, value, flags, opaque=base + 1)
                        + P.get(key, P.GETK, opaque=base + 2)
                        + P.counter(P.INCREMENT, counter, 1, initial=1, opaque=base + 3)
                    )
                    if previous:
                        data += P.get(previous[0], opaque=base + 4)
                    replies = c.sync(data)
                    self.check(len(replies) == (4 if previous else 3), f"{len(replies)} replies")
                    self.check(all(r.magic == P.RESPONSE_MAGIC for r in replies), "bad magic")
                    stored, got, incr = replies[:3]
                    self.check(
                        (stored.opcode, stored.status, stored.opaque) == (P.SET, 0, base + 1)
                        and stored.cas != 0,
                        f"SET reply {stored}",
                    )
                    self.check(
                        (got.status, got.opaque, got.key, got.value, got.flags, got.cas)
                        == (0, base + 2, key, value, flags, stored.cas),
                        f"GETK reply {got}",
                    )
                    self.check(
                        incr.status == 0
                        and incr.opaque == base + 3
                        and incr.counter == self.rounds + 1,
                        f"INCR reply {incr} (expected {self.rounds + 1})",
                    )
                    if previous:
                        prev = replies[3]
                        self.check(
                            (prev.status, prev.opaque, prev.value, prev.flags)
                            == (0, base + 4, previous[1], previous[2]),
                            f"GET of the previous key: {prev}",
                        )
                    previous = (key, value, flags)
                    self.rounds += 1
        except Exception as error:  # noqa: BLE001 - a thread's exception would be lost: report it
            self.errors.append(f"round {self.rounds}: {type(error).__name__}: {error}")


def test_live_fuzz_leaves_the_server_serving_and_leaks_nothing(start_server):
    server = start_server()
    baseline = settle_baseline(server)
    before = int(stats(server)["total_connections"])
    stop = threading.Event()
    client = WellBehavedClient(server, stop)
    client.start()
    try:
        report = run_fuzzers(server, random.Random(FUZZ_SEED), time.monotonic() + 60)
    finally:
        stop.set()
        client.join(30)
    summary = (
        f"{report.packets_sent} fuzzed packets ({report.bytes_sent} bytes, "
        f"{report.packets_parsed} parsed as requests) over {report.connections} connections, "
        f"{FUZZ_SLOTS} at a time; {report.replies} replies, {report.resets} resets; "
        f"well-behaved client: {client.rounds} rounds"
    )
    print(f"\nlive fuzz: {summary}")
    assert not client.is_alive(), "the well-behaved client is stuck"
    assert client.errors == [], summary
    assert report.problems == [], summary
    assert report.packets_sent >= FUZZ_PACKETS * 0.8, summary
    # The server still answers, and counted every connection.
    with Connection(server.host, server.port) as c:
        assert c.request(P.request(P.VERSION, opaque=1)).status == P.SUCCESS
        assert c.request(P.set_(b"after-fuzz", b"ok")).status == P.SUCCESS
        assert c.request(P.get(b"after-fuzz")).value == b"ok"
    assert int(stats(server)["total_connections"]) - before >= report.connections, summary
    assert_back_to_baseline(server, baseline, summary)
    assert server.proc.poll() is None
    assert_clean_log(server)


# -- size attacks -------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    packet: bytes  # header plus whatever extras and key it claims
    status: int  # the single reply expected
    closes: bool  # then the server closes; otherwise it skips the claimed body


def claim(opcode: int, bodylen: int, key: bytes = b"key", extras: bytes = b"") -> bytes:
    return P.request(opcode, key, extras, bodylen=bodylen, opaque=0xA77AC)


STORES = [
    (P.SET, E8),
    (P.SETQ, E8),
    (P.ADD, E8),
    (P.REPLACEQ, E8),
    (P.APPEND, b""),
    (P.PREPENDQ, b""),
]
ATTACKS = [
    # A store over the item size is refused from its header: 0x03 at once
    # (memcached answers the same, once it has swallowed the body), then the
    # body is skipped as it arrives.
    *(
        Attack(f"store-{op:02x}-{size:#x}", claim(op, size, extras=ext), P.TOO_LARGE, False)
        for op, ext in STORES
        for size in (MIB + 12, 0x7FFFFFFF, 0x80000000, GIB4)
    ),
    Attack("set-key-250-4g", claim(P.SET, GIB4, b"k" * 250, E8), P.TOO_LARGE, False),
    # Opcodes this server does not know: 0x81, body skipped, connection kept.
    Attack("unknown-30-4g", claim(0x30, GIB4), P.UNKNOWN_COMMAND, False),
    Attack("unknown-ff-4g", claim(0xFF, GIB4, b""), P.UNKNOWN_COMMAND, False),
    Attack("sasl-auth-4g", claim(P.SASL_AUTH, GIB4, b"PLAIN"), P.UNKNOWN_COMMAND, False),
    # Opcodes that carry no value: 0x04 and a close, before any body is read.
    *(
        Attack(f"{name}-4g", claim(op, GIB4, key, ext), P.INVALID_ARGUMENTS, True)
        for name, op, key, ext in [
            ("get", P.GET, b"key", b""),
            ("getq", P.GETQ, b"key", b""),
            ("getk", P.GETK, b"key", b""),
            ("getkq", P.GETKQ, b"key", b""),
            ("delete", P.DELETE, b"key", b""),
            ("incr", P.INCREMENT, b"key", E20),
            ("decrq", P.DECREMENTQ, b"key", E20),
            ("gat", P.GAT, b"key", E4),
            ("noop", P.NOOP, b"", b""),
            ("version", P.VERSION, b"", b""),
            ("flush", P.FLUSH, b"", E4),
            ("quit", P.QUIT, b"", b""),
            ("sasl-list", P.SASL_LIST_MECHS, b"", b""),
            ("stat", P.STAT, b"", b""),  # memcached 1.6.18 desyncs here instead
            ("touch", P.TOUCH, b"key", E4),  # and here
        ]
    ),
    # Keys over 250 bytes, whatever the body claims.
    Attack("set-key-251-4g", claim(P.SET, GIB4, b"k" * 251, E8), P.INVALID_ARGUMENTS, True),
    Attack("set-key-65535-4g", claim(P.SET, GIB4, b"k" * 0xFFFF, E8), P.INVALID_ARGUMENTS, True),
    Attack("get-key-251", P.get(b"k" * 251, opaque=0xA77AC), P.INVALID_ARGUMENTS, True),
    # Extras lengths that do not fit the opcode, with a consistent or a huge body.
    *(
        Attack(
            f"set-extras-{len(ext)}{tag}",
            claim(P.SET, body(ext), extras=ext),
            P.INVALID_ARGUMENTS,
            True,
        )
        for ext in (b"", E4, E20, bytes(255))
        for tag, body in (("", lambda e: len(e) + 3 + 1), ("-4g", lambda e: GIB4))
    ),
    *(
        Attack(
            f"op-{op:02x}-extras-{len(ext)}",
            claim(op, len(ext) + 3, extras=ext),
            P.INVALID_ARGUMENTS,
            True,
        )
        for op, ext in [
            (P.GET, E8),
            (P.GETK, E4),
            (P.DELETE, E4),
            (P.INCREMENT, E8),
            (P.DECREMENT, E4),
            (P.TOUCH, E8),
            (P.GAT, E20),
            (P.APPEND, E8),
            (P.STAT, E4),
        ]
    ),
    Attack("flush-extras-8", claim(P.FLUSH, 8, b"", E8), P.INVALID_ARGUMENTS, True),
    # Key + extras longer than the body: memcached reads it as an unknown command.
    Attack("key-extras-over-body", claim(P.SET, 100, b"k" * 200, E8), P.UNKNOWN_COMMAND, True),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_claimed_sizes_get_the_right_answer(server, attack):
    with Connection(server.host, server.port) as c:
        c.send(attack.packet)
        reply = c.recv()
        opcode = attack.packet[1]
        assert (reply.magic, reply.opcode, reply.status, reply.opaque) == (
            P.RESPONSE_MAGIC,
            opcode,
            attack.status,
            0xA77AC,
        )
        assert reply.value == P.ERROR_TEXT[attack.status]
        if attack.closes:
            data, _ = read_until_closed(c.sock)
            assert data == b"", f"more after the error reply: {data[:48]!r}"
            return
        # Still open and skipping: 1 MiB of "body" is swallowed without a reply,
        # and a claim just over the limit is skipped exactly, then the stream goes on.
        (bodylen,) = struct.unpack_from(">I", attack.packet, 8)
        rest = bodylen - (len(attack.packet) - P.HEADER_SIZE)
        if rest <= 2 * MIB:
            replies = c.sync(b"\0" * rest + P.noop(opaque=0x99))
            assert [(r.opcode, r.opaque) for r in replies] == [(P.NOOP, 0x99)]
        else:
            read_before = int(stats(server)["bytes_read"])
            c.send(b"\0" * MIB)
            poll(lambda: int(stats(server)["bytes_read"]), lambda n: n >= read_before + MIB, 10)
            host, port = c.sock.getsockname()[:2]
            peer = f"tcp:{host}:{port}"  # as memcached writes a client's address
            assert peer in stats(server, b"conns").values(), "closed while skipping the body"


def test_key_of_exactly_250_bytes_works_everywhere(conn):
    key = b"K" * 250
    replies = conn.sync(
        P.set_(key, b"1", flags=5, opaque=1)
        + P.get(key, P.GETK, opaque=2)
        + P.counter(P.INCREMENT, key, 2, opaque=3)
        + P.request(P.APPEND, key, b"", b"0", opaque=4)
        + P.request(P.TOUCH, key, P.expiry_extras(100), opaque=5)
        + P.request(P.GATK, key, P.expiry_extras(100), opaque=6)
        + P.request(P.DELETE, key, opaque=7)
        + P.get(key, P.GETK, opaque=8)
    )
    assert [(r.opaque, r.status) for r in replies] == [
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 0),
        (5, 0),
        (6, 0),
        (7, 0),
        (8, P.KEY_NOT_FOUND),
    ]
    assert replies[1].key == key and replies[1].value == b"1"
    assert replies[2].counter == 3
    assert replies[5].key == key and replies[5].value == b"30" and replies[5].flags == 5
    assert replies[7].key == key


@pytest.mark.parametrize(
    "build",
    [
        lambda k: P.set_(k, b"v"),
        lambda k: P.get(k, P.GETKQ),
        lambda k: P.request(P.DELETEQ, k),
        lambda k: P.counter(P.DECREMENT, k, 1),
        lambda k: P.request(P.PREPEND, k, b"", b"v"),
        lambda k: P.request(P.GAT, k, E4),
    ],
    ids=["set", "getkq", "deleteq", "decr", "prepend", "gat"],
)
def test_key_of_251_bytes_is_refused_and_closes(server, build):
    with Connection(server.host, server.port) as c:
        replies, closed = c.exchange(P.noop(opaque=1) + build(b"K" * 251) + P.noop(opaque=3))
    assert [(r.opcode, r.status) for r in replies[1:]] == [(build(b"k")[1], P.INVALID_ARGUMENTS)]
    assert closed


def test_claimed_sizes_do_not_allocate(start_server):
    """32 connections claim 4 GiB (or 2 GiB, or just under the item limit) and
    send 2 MiB of it each; the server's RSS grows by far less than that."""
    server = start_server()
    with Connection(server.host, server.port) as c:  # warm up the code paths
        c.sync(P.set_(b"warm", b"v" * 1000) + P.get(b"warm") + P.request(P.STAT))
    base_read = int(stats(server)["bytes_read"])
    rss_before = rss_bytes(server)
    claims = [
        claim(P.SET, GIB4, extras=E8),
        claim(P.APPENDQ, 0x80000000),
        claim(0x42, GIB4),
        claim(P.SASL_STEP, GIB4, b"PLAIN"),
    ]
    near_limit = P.request(P.SET, b"near", E8, bodylen=8 + 4 + MIB - 100)  # accepted size
    conns = []
    sent = 0
    try:
        for i in range(32):
            c = Connection(server.host, server.port, timeout=10)
            conns.append(c)
            if i % 8 == 7:
                c.send(near_limit + b"\0" * 1000)  # buffered as it arrives: 1 KB, not 1 MiB
                sent += len(near_limit) + 1000
                continue
            c.send(claims[i % len(claims)])
            assert c.recv().status in (P.TOO_LARGE, P.UNKNOWN_COMMAND)
            c.send(b"\0" * (2 * MIB))
            sent += len(claims[i % len(claims)]) + 2 * MIB
        # Everything sent has been read (and dropped) by the server.
        read = poll(
            lambda: int(stats(server)["bytes_read"]) - base_read,
            lambda n: n >= sent,
            timeout=30,
        )
        assert read >= sent
        assert curr_connections(server) == len(conns)
        growth = rss_bytes(server) - rss_before
    finally:
        for c in conns:
            c.close()
    claimed = sum(struct.unpack_from(">I", claims[i % 4], 8)[0] for i in range(32) if i % 8 != 7)
    print(
        f"\nsize attacks: {sent / MIB:.0f} MiB sent, {claimed / 2**30:.0f} GiB claimed; "
        f"RSS grew {growth / MIB:.2f} MiB"
    )
    assert growth < 8 * MIB, f"RSS grew by {growth / MIB:.1f} MiB"
    assert_clean_log(server)

"""Unit tests for mbserver.connection: batching, ordering, closing, and the lock rule.

Two kinds of socket, neither on the network: a scripted fake whose ``recv``
returns the chunks a test lists (so what arrives in which read is exact),
and gevent's ``socketpair()`` for end-to-end runs with several clients at
once. Both check, at every ``recv`` and ``send``, that nobody holds the
store lock: the project's rule is never to hold it across socket I/O.

Nothing waits on the clock: the gevent.Timeout guards only turn a hang
(a bug) into a failure instead of a stuck run.
"""

from __future__ import annotations

import errno

import gevent
import pytest
from gevent import socket as gsocket

from mbserver.commands import Commands
from mbserver.config import Settings
from mbserver.connection import RECV_SIZE, SEND_THRESHOLD, Connection
from mbserver.rwlock import RWLock
from mbserver.stats import Stats
from mbserver.store import Mode, Store
from ..items import get_item

HANG_GUARD = 10  # seconds; only reached if the code under test hangs


class Server:
    """The pieces server.py wires together, on a fake clock."""

    def __init__(self, clock, max_item_size: int = 1 << 20):
        self.settings = Settings(max_item_size=max_item_size)
        self.store = Store(self.settings.memory_limit, max_item_size, clock=clock)
        self.lock = RWLock()
        self.stats = Stats(clock)
        self.commands = Commands(self.store, self.lock, self.stats, self.settings)
        self.violations: list[str] = []

    def connection(self, sock) -> Connection:
        return Connection(sock, "test-peer", self.commands, self.stats, self.settings)

    def check_unlocked(self, where: str) -> None:
        if self.lock.locked:
            self.violations.append(where)
            raise AssertionError(f"store lock held at {where}: {self.lock!r}")


class ScriptedSocket:
    """recv() hands out the listed chunks (an exception is raised), then b"" (EOF)."""

    def __init__(self, server: Server, chunks):
        self.server = server
        self.chunks = list(chunks)
        self.sent: list[bytes] = []
        self.recv_calls = 0
        self.send_error: OSError | None = None

    def setsockopt(self, *args):
        raise OSError(errno.ENOPROTOOPT, "not a TCP socket")

    def recv(self, size: int) -> bytes:
        self.server.check_unlocked("recv")
        self.recv_calls += 1
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if isinstance(chunk, BaseException):
            raise chunk
        assert len(chunk) <= size
        return chunk

    def send(self, data) -> int:
        self.server.check_unlocked("send")
        if self.send_error is not None:
            raise self.send_error
        self.sent.append(bytes(data))
        return len(data)

    def sendall(self, data) -> None:
        self.send(data)


class LockCheckingSocket:
    """Wraps a real (gevent) socket; checks the lock before and after each I/O call."""

    def __init__(self, server: Server, sock):
        self.server = server
        self.sock = sock

    def setsockopt(self, *args):
        return self.sock.setsockopt(*args)

    def recv(self, size: int) -> bytes:
        self.server.check_unlocked("recv")
        data = self.sock.recv(size)
        self.server.check_unlocked("after recv")
        return data

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data) -> int:
        self.server.check_unlocked("send")
        sent = self.sock.send(data)
        self.server.check_unlocked("after send")
        return sent

    def sendall(self, data) -> None:
        self.server.check_unlocked("sendall")
        self.sock.sendall(data)
        self.server.check_unlocked("after sendall")


@pytest.fixture
def server(clock) -> Server:
    return Server(clock)


def run_scripted(server: Server, chunks) -> ScriptedSocket:
    sock = ScriptedSocket(server, chunks)
    server.connection(sock).serve()
    assert server.violations == []
    return sock


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- batching and order -----------------------------------------------------


def mixed_pipeline(wire, count: int):
    """count rounds of set/get/getk/incr/quiet ops; returns bytes and the loud opaques in order."""
    packets, loud = [], []
    opaque = 0

    def add(packet_opcode, key=b"", extras=b"", value=b"", quiet=False):
        nonlocal opaque
        opaque += 1
        packets.append(wire.request(packet_opcode, key, extras, value, opaque=opaque))
        if not quiet:
            loud.append(opaque)

    for i in range(count):
        key = b"key-%d" % i
        add(0x01, key, wire.storage_extras(i, 0), b"value-%d" % i)  # SET
        add(0x11, key + b"q", wire.storage_extras(), b"quiet", quiet=True)  # SETQ: silent
        add(0x00, key)  # GET hit
        add(0x0D, b"missing-%d" % i, quiet=True)  # GETKQ miss: silent
        add(0x0C, key)  # GETK hit
        add(0x05, b"counter", wire.counter_extras(1, 0, 0))  # INCR
        add(0x14, b"missing-%d" % i)  # DELETEQ miss: the error is sent
    add(0x0A)  # NOOP
    return b"".join(packets), loud


class TestBatching:
    def test_pipelined_packets_get_all_replies_in_order_in_one_write(self, server, wire):
        data, loud = mixed_pipeline(wire, 50)
        assert len(data) <= RECV_SIZE
        sock = run_scripted(server, [data])
        assert len(sock.sent) == 1
        replies = wire.responses(sock.sent[0])
        assert [r.opaque for r in replies] == loud
        counters = [r for r in replies if r.opcode == 0x05]
        assert [int.from_bytes(r.value, "big") for r in counters] == list(range(50))

    def test_one_write_per_read(self, server, wire):
        first, loud_first = mixed_pipeline(wire, 5)
        second = wire.request(0x00, b"key-1", opaque=1000) + wire.request(0x0A, opaque=1001)
        sock = run_scripted(server, [first, second])
        assert len(sock.sent) == 2
        assert [r.opaque for r in wire.responses(sock.sent[0])] == loud_first
        assert [r.opaque for r in wire.responses(sock.sent[1])] == [1000, 1001]

    @pytest.mark.parametrize("size", [1, 7, 24, 100, 1000])
    def test_packets_split_across_reads(self, clock, wire, size):
        data, loud = mixed_pipeline(wire, 20)
        whole = run_scripted(Server(clock), [data])
        pieces = run_scripted(Server(clock), split(data, size))
        assert b"".join(pieces.sent) == b"".join(whole.sent)
        assert [r.opaque for r in wire.responses(b"".join(pieces.sent))] == loud

    def test_quiet_batches_write_nothing_until_a_loud_reply(self, server, wire):
        quiet = b"".join(
            wire.request(0x11, b"k%d" % i, wire.storage_extras(), b"v", opaque=i) for i in range(10)
        )
        sock = run_scripted(server, [quiet, wire.request(0x0A, opaque=99)])
        assert len(sock.sent) == 1
        assert [r.opaque for r in wire.responses(sock.sent[0])] == [99]
        assert len(server.store) == 10

    def test_large_replies_are_sent_in_several_writes_in_order(self, server, wire):
        value = b"x" * (700 << 10)
        for i in range(4):
            server.store.store(Mode.SET, b"big%d" % i, value)
        gets = b"".join(wire.request(0x00, b"big%d" % i, opaque=i) for i in range(4))
        sock = run_scripted(server, [gets + wire.request(0x0A, opaque=4)])
        assert len(sock.sent) > 1
        assert all(len(part) >= SEND_THRESHOLD for part in sock.sent[:-1])
        replies = wire.responses(b"".join(sock.sent))
        assert [r.opaque for r in replies] == [0, 1, 2, 3, 4]
        assert all(r.value == value for r in replies[:4])

    def test_an_unknown_opcode_is_answered_and_the_connection_goes_on(self, server, wire):
        data = wire.request(0x21, b"PLAIN", b"", b"\0u\0p", opaque=1) + wire.request(0x0A, opaque=2)
        sock = run_scripted(server, [data[:30], data[30:]])
        replies = wire.responses(b"".join(sock.sent))
        assert [(r.opaque, r.status) for r in replies] == [(1, 0x81), (2, 0x00)]

    def test_a_refused_value_arriving_over_many_reads(self, server, wire):
        server.store.store(Mode.SET, b"big", b"old")
        packet = wire.request(0x01, b"big", wire.storage_extras(), b"z" * (3 << 20), opaque=1)
        data = packet + wire.request(0x00, b"big", opaque=2)
        sock = run_scripted(server, split(data, RECV_SIZE))
        replies = wire.responses(b"".join(sock.sent))
        assert [(r.opaque, r.status) for r in replies] == [(1, 0x03), (2, 0x01)]
        assert server.stats.store_too_large == 1

    def test_byte_counters(self, server, wire):
        data, _ = mixed_pipeline(wire, 3)
        sock = run_scripted(server, split(data, 50))
        assert server.stats.bytes_read == len(data)
        assert server.stats.bytes_written == sum(map(len, sock.sent))

    def test_the_connection_is_marked_binary(self, server, wire):
        sock = ScriptedSocket(server, [wire.request(0x0A)])
        connection = server.connection(sock)
        connection.serve()
        assert connection.info.protocol == "binary"


# -- closing ----------------------------------------------------------------


class TestClosing:
    def test_protocol_error_closes_after_the_invalid_arguments_reply(self, server, wire):
        data = (
            wire.request(0x00, b"missing", opaque=1)
            + wire.request(0x0A, b"key-on-a-noop", opaque=2)
            + wire.request(0x0A, opaque=3)
        )
        sock = run_scripted(server, [data, wire.request(0x0A, opaque=4)])
        assert sock.recv_calls == 1  # closed without reading on
        assert len(sock.sent) == 1
        replies = wire.responses(sock.sent[0])
        assert [(r.opaque, r.status) for r in replies] == [(1, 0x01), (2, 0x04)]
        assert (replies[1].opcode, replies[1].value) == (0x0A, b"Invalid arguments")

    def test_protocol_error_detected_from_a_header_alone(self, server, wire):
        bad = wire.request(0x00, b"k" * 251, opaque=7)
        sock = run_scripted(server, [bad[:24], bad[24:]])
        assert sock.recv_calls == 1
        (reply,) = wire.responses(b"".join(sock.sent))
        assert (reply.opaque, reply.status) == (7, 0x04)

    def test_bad_magic_closes_without_a_reply(self, server, wire):
        data = wire.request(0x0A, opaque=1) + wire.request(0x0A, opaque=2, magic=0x81)
        sock = run_scripted(server, [data, wire.request(0x0A, opaque=3)])
        assert sock.recv_calls == 1
        assert [r.opaque for r in wire.responses(b"".join(sock.sent))] == [1]

    def test_quit_replies_then_closes(self, server, wire):
        data = (
            wire.request(0x0A, opaque=1)
            + wire.request(0x07, opaque=2)
            + wire.request(0x0A, opaque=3)
        )
        sock = run_scripted(server, [data, wire.request(0x0A, opaque=4)])
        assert sock.recv_calls == 1
        assert len(sock.sent) == 1
        replies = wire.responses(sock.sent[0])
        assert [(r.opcode, r.opaque, r.status) for r in replies] == [(0x0A, 1, 0), (0x07, 2, 0)]

    def test_quitq_closes_silently(self, server, wire):
        sock = run_scripted(server, [wire.request(0x17, opaque=1) + wire.request(0x0A, opaque=2)])
        assert sock.sent == []
        assert sock.recv_calls == 1

    def test_quitq_still_sends_the_replies_before_it(self, server, wire):
        data = (
            wire.request(0x0A, opaque=1)
            + wire.request(0x17, opaque=2)
            + wire.request(0x0A, opaque=3)
        )
        sock = run_scripted(server, [data])
        assert [r.opaque for r in wire.responses(b"".join(sock.sent))] == [1]

    def test_peer_closing_first(self, server):
        sock = run_scripted(server, [])
        assert sock.sent == [] and sock.recv_calls == 1

    def test_peer_closing_mid_packet(self, server, wire):
        sock = run_scripted(server, [wire.request(0x00, b"key")[:25]])
        assert sock.sent == [] and sock.recv_calls == 2

    def test_a_stopping_connection_answers_what_was_sent_then_closes(self, server, wire):
        # server.stop() sets `stopping` on a busy connection: it answers every
        # request the client has already sent (here two reads' worth), and
        # closes as soon as a read would block instead of waiting for more.
        data = wire.request(0x0A, opaque=1) + wire.request(0x00, b"k", opaque=2)
        sock = ScriptedSocket(
            server, [data, wire.request(0x0A, opaque=3), BlockingIOError(), wire.request(0x0A)]
        )
        connection = server.connection(sock)
        connection.stopping = True
        connection.serve()
        assert sock.recv_calls == 3
        assert [r.opaque for r in wire.responses(b"".join(sock.sent))] == [1, 2, 3]

    def test_idle_only_while_waiting_for_a_request(self, server, wire):
        seen = []

        class Watching(ScriptedSocket):
            def recv(self, size):
                seen.append(("recv", connection.idle))
                return super().recv(size)

            def send(self, data):
                seen.append(("send", connection.idle))
                return super().send(data)

        sock = Watching(server, [wire.request(0x0A), wire.request(0x0A)])
        connection = server.connection(sock)
        assert connection.idle
        connection.serve()
        assert seen == [
            ("recv", True),
            ("send", False),
            ("recv", True),
            ("send", False),
            ("recv", True),
        ]

    def test_a_first_byte_other_than_0x80_speaks_text(self, server):
        sock = ScriptedSocket(
            server, [b"set foo 5 0 3\r\nbar\r\nget foo\r\n", b"get nope\r\nquit\r\n"]
        )
        connection = server.connection(sock)
        connection.serve()
        assert b"".join(sock.sent) == b"STORED\r\nVALUE foo 5 3\r\nbar\r\nEND\r\nEND\r\n"
        assert connection.info.protocol == "text"

    @pytest.mark.parametrize("code", [errno.ECONNRESET, errno.ETIMEDOUT, errno.EINVAL])
    def test_recv_errors_end_the_connection_quietly(self, server, wire, code):
        sock = run_scripted(server, [wire.request(0x0A, opaque=1), OSError(code, "boom")])
        assert [r.opaque for r in wire.responses(b"".join(sock.sent))] == [1]

    @pytest.mark.parametrize("code", [errno.EPIPE, errno.ECONNRESET, errno.EINVAL])
    def test_send_errors_end_the_connection_quietly(self, server, wire, code):
        sock = ScriptedSocket(server, [wire.request(0x0A), wire.request(0x0A)])
        sock.send_error = OSError(code, "boom")
        server.connection(sock).serve()
        assert sock.recv_calls == 1


# -- over a real socketpair, inside gevent ----------------------------------


def spawn_server(server: Server, sock) -> gevent.Greenlet:
    """Serve one end of a socketpair the way server.py does: serve, then close."""

    def handle():
        try:
            server.connection(LockCheckingSocket(server, sock)).serve()
        finally:
            sock.close()

    return gevent.spawn(handle)


def read_responses(wire, sock, count: int):
    data = b""
    while True:
        replies = _complete(wire, data)
        if replies is not None and len(replies) >= count:
            assert len(replies) == count, replies
            return replies
        chunk = sock.recv(1 << 16)
        assert chunk, f"EOF after {data!r}"
        data += chunk


def _complete(wire, data: bytes):
    """The responses in data if it ends on a packet boundary, else None."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 24:
            return None
        bodylen = int.from_bytes(data[pos + 8 : pos + 12], "big")
        if len(data) - pos < 24 + bodylen:
            return None
        pos += 24 + bodylen
    return wire.responses(data)


def read_until_stats_end(wire, sock):
    """Read until a STAT reply's empty terminator packet arrives."""
    data = b""
    while True:
        replies = _complete(wire, data)
        if replies and replies[-1].opcode == 0x10 and replies[-1].key == b"":
            return replies
        chunk = sock.recv(1 << 16)
        assert chunk, f"EOF after {data!r}"
        data += chunk


def read_to_eof(sock) -> bytes:
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    return data


@pytest.fixture
def socketpair():
    """gevent socketpair() factory; every socket it made is closed after the test."""
    opened = []

    def make():
        pair = gsocket.socketpair()
        opened.extend(pair)
        return pair

    yield make
    for sock in opened:
        sock.close()


class TestSocketpair:
    def test_a_stray_switch_is_not_taken_for_a_request(self, server, wire, socketpair):
        """Waiting for a request, only its own watcher may wake a connection."""
        ours, theirs = socketpair()
        with gevent.Timeout(HANG_GUARD):
            greenlet = spawn_server(server, theirs)
            ours.sendall(wire.request(0x0A, opaque=1))
            assert [r.opaque for r in read_responses(wire, ours, 1)] == [1]
            gevent.sleep(0.01)  # the connection is back waiting for a request
            gevent.get_hub().loop.run_callback(greenlet.switch, "stray")
            greenlet.join()
            assert isinstance(greenlet.exception, RuntimeError)
            assert read_to_eof(ours) == b""  # closed, not left half-served

    def test_killed_while_waiting_for_a_request(self, server, wire, socketpair):
        ours, theirs = socketpair()
        with gevent.Timeout(HANG_GUARD):
            greenlet = spawn_server(server, theirs)
            ours.sendall(wire.request(0x0A, opaque=1))
            read_responses(wire, ours, 1)
            gevent.sleep(0.01)
            greenlet.kill()
            assert greenlet.dead and greenlet.exception is None
            assert read_to_eof(ours) == b""

    def test_pipeline_round_trip(self, server, wire, socketpair):
        ours, theirs = socketpair()
        with gevent.Timeout(HANG_GUARD):
            greenlet = spawn_server(server, theirs)
            data, loud = mixed_pipeline(wire, 30)
            ours.sendall(data)
            replies = read_responses(wire, ours, len(loud))
            assert [r.opaque for r in replies] == loud
            ours.close()
            greenlet.get()
        assert server.violations == []

    def test_protocol_error_reply_then_eof(self, server, wire, socketpair):
        ours, theirs = socketpair()
        with gevent.Timeout(HANG_GUARD):
            greenlet = spawn_server(server, theirs)
            ours.sendall(wire.request(0x00, b"k", b"\0\0\0\0", opaque=5))
            replies = wire.responses(read_to_eof(ours))
            greenlet.get()
        assert [(r.opaque, r.status) for r in replies] == [(5, 0x04)]
        assert server.violations == []

    def test_quit_reply_then_eof(self, server, wire, socketpair):
        ours, theirs = socketpair()
        with gevent.Timeout(HANG_GUARD):
            greenlet = spawn_server(server, theirs)
            ours.sendall(wire.request(0x07, opaque=6))
            replies = wire.responses(read_to_eof(ours))
            greenlet.get()
        assert [(r.opcode, r.opaque, r.status) for r in replies] == [(0x07, 6, 0)]

    def test_quitq_eof_without_a_reply(self, server, wire, socketpair):
        ours, theirs = socketpair()
        with gevent.Timeout(HANG_GUARD):
            greenlet = spawn_server(server, theirs)
            ours.sendall(wire.request(0x17, opaque=6))
            assert read_to_eof(ours) == b""
            greenlet.get()

    def test_many_clients_never_see_the_lock_held_across_io(self, server, wire, socketpair):
        """Several connections interleave on one store; every recv/sendall is checked."""
        server.store.store(Mode.SET, b"counter", b"0")
        clients, rounds = 8, 40

        def client(n: int) -> None:
            ours, theirs = socketpair()
            greenlet = spawn_server(server, theirs)
            for i in range(rounds):
                key = b"c%d-%d" % (n, i)
                ours.sendall(
                    wire.request(0x05, b"counter", wire.counter_extras(1, 0, 0), opaque=1)
                    + wire.request(0x11, key, wire.storage_extras(n, 0), b"v" * (i * 100))
                    + wire.request(0x00, key, opaque=2)
                    + wire.request(0x10, b"items" if i % 2 else b"", opaque=3)
                )
                replies = read_until_stats_end(wire, ours)
                assert [r.opaque for r in replies[:2]] == [1, 2]
                assert replies[0].status == 0
                assert replies[1].value == b"v" * (i * 100)
                assert {r.opaque for r in replies[2:]} == {3}
            ours.sendall(wire.request(0x07))
            read_to_eof(ours)
            greenlet.get()

        with gevent.Timeout(HANG_GUARD):
            gevent.joinall([gevent.spawn(client, n) for n in range(clients)], raise_error=True)
        assert server.violations == []
        assert int(get_item(server.store, b"counter").value) == clients * rounds
        assert server.stats.cmd_get == clients * rounds
        assert not server.lock.locked

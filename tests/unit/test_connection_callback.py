"""Unit tests for answering from the read callback, in the hub (mbserver.connection).

A plain connection parks its greenlet between requests, its socket in the
hub's readiness set (mbserver.ready), and lets its callback answer what
arrives. These tests drive it
over real non-blocking socketpairs, as server.py hands connections over,
and check the rules that make that safe: nothing yields in the hub, the
store lock is never held at a socket call, and whatever could block (a
full send buffer, a multi-get past SEND_THRESHOLD, the lock in use, a
graceful stop, a protocol error, EOF, the idle timeout) continues in the
connection's own greenlet, with every reply in order.

Nothing waits on the clock except the idle-timeout test (a fifth of a
second); the gevent.Timeout guards only turn a hang into a failure.
"""

from __future__ import annotations

import socket

import gevent
import greenlet
import pytest
from gevent import socket as gsocket

from mbserver.commands import Commands
from mbserver.config import Settings
from mbserver.connection import SEND_THRESHOLD, Connection
from mbserver.ready import ready_set
from mbserver.rwlock import RWLock
from mbserver.stats import Stats
from mbserver.store import Mode, Store

HANG_GUARD = 10


class Server:
    def __init__(self, clock, **options):
        self.settings = Settings(**options)
        self.store = Store(self.settings.memory_limit, self.settings.max_item_size, clock=clock)
        self.lock = RWLock()
        self.stats = Stats(clock)
        self.commands = Commands(self.store, self.lock, self.stats, self.settings)
        self.violations: list[str] = []

    def check_unlocked(self, where: str) -> None:
        if self.lock.locked:
            self.violations.append(where)


class RawChecking:
    """A raw non-blocking socket that checks the store lock at every call."""

    def __init__(self, server: Server, sock: socket.socket):
        self.server = server
        self.sock = sock
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def gettimeout(self):
        return self.sock.gettimeout()

    def setsockopt(self, *args):
        return self.sock.setsockopt(*args)

    def recv(self, size: int) -> bytes:
        self.server.check_unlocked("recv")
        return self.sock.recv(size)

    def send(self, data) -> int:
        self.server.check_unlocked("send")
        return self.sock.send(data)


@pytest.fixture
def server(clock) -> Server:
    return Server(clock)


@pytest.fixture
def pair():
    """(client, server end): the client a gevent socket, the server end raw."""
    opened = []

    def make(sndbuf: int | None = None):
        ours, theirs = socket.socketpair()
        if sndbuf is not None:
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        client = gsocket.socket(fileno=ours.detach())
        opened.extend((client, theirs))
        return client, theirs

    yield make
    for sock in opened:
        sock.close()


def serve(server: Server, raw: socket.socket) -> tuple[gevent.Greenlet, list]:
    """Serve the raw end in a greenlet; returns it and its Connection (once made)."""
    made: list[Connection] = []

    def handle():
        connection = Connection(
            RawChecking(server, raw), "peer", server.commands, server.stats, server.settings
        )
        made.append(connection)
        try:
            connection.serve()
        finally:
            raw.close()  # as server.py does

    return gevent.spawn(handle), made


def parked(server: Server, pair, wire, **pair_options):
    """A served connection that has answered one NOOP (so it speaks binary)
    and is parked: (client socket, server greenlet, [Connection])."""
    client, raw = pair(**pair_options)
    task, made = serve(server, raw)
    client.sendall(wire.request(0x0A))
    read_exactly(client, 24)
    gevent.sleep(0.01)
    return client, task, made


def read_exactly(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


def read_to_eof(sock) -> bytes:
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    return data


class SwitchCounter:
    """Counts switches into one greenlet (greenlet.settrace)."""

    def __init__(self):
        self.target = None
        self.count = 0

    def __call__(self, event, args):
        if event in ("switch", "throw") and args[1] is self.target:
            self.count += 1

    def __enter__(self):
        self.previous = greenlet.settrace(self)
        return self

    def __exit__(self, *exc):
        greenlet.settrace(self.previous)


def test_requests_are_answered_without_switching_into_the_greenlet(server, pair, wire):
    server.store.store(Mode.SET, b"k", b"v" * 100)
    client, raw = pair()
    with gevent.Timeout(HANG_GUARD):
        task, _ = serve(server, raw)
        client.sendall(wire.request(0x0A, opaque=0))  # the first read picks the protocol
        read_exactly(client, 24)
        gevent.sleep(0.01)  # the connection is parked
        with SwitchCounter() as switches:
            switches.target = task
            for i in range(50):
                client.sendall(wire.request(0x00, b"k", opaque=i))
                (reply,) = wire.responses(read_exactly(client, 24 + 4 + 100))
                assert (reply.opaque, reply.value) == (i, b"v" * 100)
                client.sendall(wire.request(0x01, b"s%d" % i, wire.storage_extras(), b"x", opaque=i))
                (reply,) = wire.responses(read_exactly(client, 24))
                assert reply.status == 0
        assert switches.count == 0
        client.close()
        task.get()
    assert server.violations == []
    assert server.stats.cmd_get == 50 and len(server.store) == 51


def test_a_reply_the_socket_cannot_take_continues_in_the_greenlet(server, pair, wire):
    value = b"z" * (900 << 10)
    server.store.store(Mode.SET, b"big", value)
    with gevent.Timeout(HANG_GUARD):
        client, task, made = parked(server, pair, wire, sndbuf=4096)
        client.sendall(
            wire.request(0x00, b"big", opaque=1)
            + wire.request(0x0C, b"big", opaque=2)
            + wire.request(0x0A, opaque=3)
        )
        gevent.sleep(0.05)  # the server stalls on a full buffer: nothing read yet
        assert made[0].info.state == "conn_mwrite"
        expected = 3 * 24 + 2 * (4 + len(value)) + 3
        replies = wire.responses(read_exactly(client, expected))
        assert [(r.opaque, r.value) for r in replies] == [(1, value), (2, value), (3, b"")]
        # Back to the callback: a small request is answered again.
        client.sendall(wire.request(0x0A, opaque=4))
        assert wire.responses(read_exactly(client, 24))[0].opaque == 4
        client.close()
        task.get()
    assert server.violations == []


def test_a_multi_get_past_the_send_threshold_is_written_in_slices(server, pair, wire):
    value = b"m" * (300 << 10)
    keys = [b"m%d" % i for i in range(10)]
    for key in keys:
        server.store.store(Mode.SET, key, value)
    client, raw = pair()
    with gevent.Timeout(HANG_GUARD):
        task, _ = serve(server, raw)
        client.sendall(wire.request(0x0A, opaque=100))
        read_exactly(client, 24)
        gevent.sleep(0.01)
        run = b"".join(wire.request(0x09, key, opaque=i) for i, key in enumerate(keys))
        client.sendall(run + wire.request(0x0A, opaque=99))
        replies = wire.responses(read_exactly(client, 10 * (24 + 4 + len(value)) + 24))
        assert [r.opaque for r in replies] == [*range(10), 99]
        assert all(r.value == value for r in replies[:10])
        assert 10 * len(value) > 2 * SEND_THRESHOLD
        client.close()
        task.get()
    assert server.violations == []


def test_multi_gets_read_alone_are_answered_without_switching_into_the_greenlet(
    server, pair, wire
):
    """A read that is exactly one run of GETs skips the parser (Connection._answer_run)."""
    keys = [b"k%d" % i for i in range(10)]
    for key in keys:
        server.store.store(Mode.SET, key, key * 10)
    with gevent.Timeout(HANG_GUARD):
        client, task, _ = parked(server, pair, wire)
        with SwitchCounter() as switches:
            switches.target = task
            for i in range(20):
                client.sendall(
                    b"".join(wire.request(0x0D, key, opaque=n) for n, key in enumerate(keys))
                    + wire.request(0x0D, b"missing", opaque=98)
                    + wire.request(0x0C, b"missing", opaque=99)
                )
                size = sum(24 + 4 + len(key) + 10 * len(key) for key in keys) + 24 + 7
                replies = wire.responses(read_exactly(client, size))
                assert [(r.opaque, r.key, r.value) for r in replies] == [
                    *((n, key, key * 10) for n, key in enumerate(keys)), (99, b"missing", b"")
                ]
        assert switches.count == 0
        client.close()
        task.get()
    assert server.violations == []
    assert server.stats.cmd_get == 20 * 12 and server.stats.get_misses == 40


@pytest.mark.parametrize("sndbuf", [None, 4096], ids=["buffer takes it", "buffer full"])
def test_a_multi_get_read_alone_past_the_send_threshold_is_written_in_slices(
    server, pair, wire, sndbuf
):
    value = b"m" * (300 << 10)
    keys = [b"m%d" % i for i in range(10)]
    for key in keys:
        server.store.store(Mode.SET, key, value)
    with gevent.Timeout(HANG_GUARD):
        client, task, _ = parked(server, pair, wire, sndbuf=sndbuf)
        client.sendall(b"".join(wire.request(0x00, key, opaque=i) for i, key in enumerate(keys)))
        replies = wire.responses(read_exactly(client, 10 * (24 + 4 + len(value))))
        assert [r.opaque for r in replies] == list(range(10))
        assert all(r.value == value for r in replies)
        # Then a small request is answered again, from the callback.
        client.sendall(wire.request(0x00, keys[0], opaque=77) * 2)
        replies = wire.responses(read_exactly(client, 2 * (24 + 4 + len(value))))
        assert [r.opaque for r in replies] == [77, 77]
        client.close()
        task.get()
    assert server.violations == []


def test_a_text_multi_get_read_alone_is_answered_from_the_callback(server, pair):
    for key in (b"a", b"b"):
        server.store.store(Mode.SET, key, key * 3, flags=7 if key == b"b" else 0)
    client, raw = pair()
    with gevent.Timeout(HANG_GUARD):
        task, _ = serve(server, raw)
        client.sendall(b"version\r\n")
        read_exactly(client, len(b"VERSION ") + 2)
        assert client.recv(100).endswith(b"\r\n")
        gevent.sleep(0.01)
        with SwitchCounter() as switches:
            switches.target = task
            client.sendall(b"get a missing b\r\n")
            expected = b"VALUE a 0 3\r\naaa\r\nVALUE b 7 3\r\nbbb\r\nEND\r\n"
            assert read_exactly(client, len(expected)) == expected
        assert switches.count == 0
        client.close()
        task.get()
    assert server.violations == []


def test_a_busy_lock_hands_the_request_to_the_greenlet(server, pair, wire):
    server.store.store(Mode.SET, b"k", b"v")
    with gevent.Timeout(HANG_GUARD):
        client, task, _ = parked(server, pair, wire)
        # A holder that yields (never done in mbserver) makes the lock busy.
        server.lock.acquire_write()
        client.sendall(wire.request(0x00, b"k", opaque=1))
        gevent.sleep(0.05)
        assert server.lock.waiting == 1  # the greenlet, queued: not the hub
        server.lock.release_write()
        (reply,) = wire.responses(read_exactly(client, 24 + 5))
        assert (reply.opaque, reply.value) == (1, b"v")
        client.close()
        task.get()


def test_a_connection_is_in_the_readiness_set_only_while_parked(server, pair, wire):
    ready = ready_set(gevent.get_hub())
    before = len(ready)
    with gevent.Timeout(HANG_GUARD):
        client, task, _ = parked(server, pair, wire)
        assert len(ready) == before + 1
        server.lock.acquire_write()  # the next request goes to the greenlet
        client.sendall(wire.request(0x00, b"k", opaque=1))
        gevent.sleep(0.05)
        assert len(ready) == before  # the greenlet has the socket (and waits for the lock)
        server.lock.release_write()
        assert wire.responses(read_exactly(client, 24 + 9))[0].opaque == 1  # not found
        gevent.sleep(0.01)
        assert len(ready) == before + 1  # parked again
        client.close()
        task.get()
    assert len(ready) == before


def test_a_protocol_error_from_the_callback_replies_then_closes(server, pair, wire):
    with gevent.Timeout(HANG_GUARD):
        client, task, _ = parked(server, pair, wire)
        client.sendall(wire.request(0x0A, opaque=1) + wire.request(0x0A, b"key", opaque=2))
        replies = wire.responses(read_to_eof(client))
        assert [(r.opaque, r.status) for r in replies] == [(1, 0), (2, 0x04)]
        task.get()


def test_quit_from_the_callback_closes_after_its_reply(server, pair):
    client, raw = pair()
    with gevent.Timeout(HANG_GUARD):
        task, _ = serve(server, raw)
        client.sendall(b"version\r\n")
        assert read_exactly(client, 8) == b"VERSION "
        gevent.sleep(0.01)
        client.sendall(b"set a 0 0 1\r\nx\r\nget a\r\nquit\r\nget a\r\n")
        assert read_to_eof(client).endswith(b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n")
        task.get()


def test_eof_while_parked_ends_the_connection(server, pair, wire):
    with gevent.Timeout(HANG_GUARD):
        client, task, made = parked(server, pair, wire)
        assert made[0].idle
        client.close()
        task.get()
    assert made[0].info.state == "conn_closing"


def test_a_partial_request_is_waited_for_and_shown_as_nread(server, pair, wire):
    with gevent.Timeout(HANG_GUARD):
        client, task, made = parked(server, pair, wire)
        packet = wire.request(0x01, b"k", wire.storage_extras(), b"v" * 1000, opaque=7)
        client.sendall(packet[:500])
        gevent.sleep(0.02)
        assert made[0].info.state == "conn_nread" and not made[0].idle
        client.sendall(packet[500:])
        (reply,) = wire.responses(read_exactly(client, 24))
        assert (reply.opaque, reply.status) == (7, 0)
        assert made[0].info.state == "conn_waiting" and made[0].idle
        client.close()
        task.get()


@pytest.mark.parametrize("lone", ["get", "set"])
def test_the_rest_of_a_refused_value_is_never_taken_for_a_request(clock, pair, wire, lone):
    """A read that looks like a lone GET or SET but is the tail of a value
    being skipped is skipped: the short path is asked only of an empty parser."""
    server = Server(clock, max_item_size=2048)
    server.store.store(Mode.SET, b"k", b"stored")
    if lone == "get":
        tail = wire.request(0x00, b"k", opaque=5)
    else:
        tail = wire.request(0x01, b"k", wire.storage_extras(), b"overwritten", opaque=5)
    value = b"v" * 4000 + tail
    with gevent.Timeout(HANG_GUARD):
        client, task, made = parked(server, pair, wire)
        packet = wire.request(0x01, b"big", wire.storage_extras(), value, opaque=1)
        client.sendall(packet[: -len(tail)])
        (refused,) = wire.responses(read_exactly(client, 24 + len(b"Too large.")))
        assert (refused.opaque, refused.status) == (1, 0x03)
        gevent.sleep(0.01)  # parked again, with the tail still to skip
        client.sendall(tail)
        gevent.sleep(0.01)
        client.sendall(wire.request(0x0A, opaque=9))
        (noop,) = wire.responses(read_exactly(client, 24))
        assert noop.opaque == 9  # nothing answered the tail
        client.close()
        task.get()
    assert server.store.get_record(b"k").endswith(b"stored")
    assert server.violations == []


def test_a_stopping_connection_answers_in_the_greenlet_then_closes(server, pair, wire):
    with gevent.Timeout(HANG_GUARD):
        client, task, made = parked(server, pair, wire)
        packet = wire.request(0x00, b"k", opaque=5)
        client.sendall(packet[:10])  # a request in progress: not idle
        gevent.sleep(0.02)
        made[0].stopping = True  # what server.stop() does to a busy connection
        client.sendall(packet[10:])
        replies = wire.responses(read_to_eof(client))
        assert [(r.opaque, r.status) for r in replies] == [(5, 0x01)]
        task.get()


def test_a_stray_switch_into_a_parked_connection_is_an_error(server, pair, wire):
    with gevent.Timeout(HANG_GUARD):
        client, task, _ = parked(server, pair, wire)
        gevent.get_hub().loop.run_callback(task.switch, "stray")
        task.join()
        assert isinstance(task.exception, RuntimeError)
        assert read_to_eof(client) == b""


def test_killed_while_parked(server, pair, wire):
    with gevent.Timeout(HANG_GUARD):
        client, task, made = parked(server, pair, wire)
        task.kill()
        assert task.dead and task.exception is None
        assert read_to_eof(client) == b""


def test_the_idle_timeout_closes_a_parked_connection(clock, pair, wire):
    server = Server(clock, idle_timeout=0.2)
    client, raw = pair()
    with gevent.Timeout(HANG_GUARD):
        task, _ = serve(server, raw)
        client.sendall(wire.request(0x0A))
        read_exactly(client, 24)
        clock.advance(0.1)
        gevent.sleep(0.1)
        client.sendall(wire.request(0x0A, opaque=1))  # activity: the timer starts over
        assert wire.responses(read_exactly(client, 24))[0].opaque == 1
        clock.advance(0.3)  # the store's clock says the client has been quiet
        assert read_to_eof(client) == b""
        task.get()


def test_many_clients_never_see_the_lock_held_across_io(server, pair, wire):
    server.store.store(Mode.SET, b"counter", b"0")

    def client_run(n: int) -> None:
        client, raw = pair()
        task, _ = serve(server, raw)
        for i in range(40):
            key = b"c%d-%d" % (n, i)
            client.sendall(
                wire.request(0x05, b"counter", wire.counter_extras(1, 0, 0), opaque=1)
                + wire.request(0x11, key, wire.storage_extras(n, 0), b"v" * (i * 100))
                + wire.request(0x00, key, opaque=2)
            )
            replies = wire.responses(read_exactly(client, 24 + 8 + 24 + 4 + i * 100))
            assert [r.opaque for r in replies] == [1, 2]
            assert replies[1].value == b"v" * (i * 100)
        client.close()
        task.get()

    with gevent.Timeout(HANG_GUARD):
        gevent.joinall([gevent.spawn(client_run, n) for n in range(8)], raise_error=True)
    assert server.violations == []
    assert int(server.store.get_record(b"counter")[20:]) == 8 * 40
    assert not server.lock.locked

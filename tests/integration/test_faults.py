"""Faults: clients that stop reading, vanish, half-close, churn, crowd or idle.

What lives here, each against a real server process:

- a dead reader pipelining 200 GETs of a 512 KiB value never reads: other
  clients keep getting correct answers, the server's memory stays within a
  per-connection output limit, and after --send-timeout the dead reader is
  disconnected;
- clients that disconnect mid-header, mid-body and mid-reply, half-open
  clients (SHUT_WR after the request: they still get every reply), and
  2,000 connect/disconnect cycles: `curr_connections` and the process's
  descriptors come back to baseline;
- `-c N`: clients past N (30 one by one, then a burst of 100) get
  `ERROR Too many open connections` and EOF at once while the first N keep
  working, and a freed slot can be taken again;
- `--idle-timeout 1`: silent and half-a-header clients are closed, an
  active one is not.

What does not: malformed input (test_hostile_input.py), TLS handshake
timeouts (test_tls.py).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from .. import packets as P
from ..packets import ProtocolViolation
from .test_hostile_input import (
    assert_back_to_baseline,
    assert_clean_log,
    curr_connections,
    poll,
    read_until_closed,
    rss_bytes,
    settle_baseline,
    stats,
)
from .wire import Connection, ConnectionClosed

pytestmark = pytest.mark.usefixtures("mbserver_only")

MIB = 1 << 20
BIG = bytes(range(256)) * (512 * 1024 // 256)  # 512 KiB
TOO_MANY = b"ERROR Too many open connections\r\n"


def raw_client(server, rcvbuf: int | None = None, timeout: float = 10) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # before connecting, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((server.host, server.port))
    return sock


def reset_on_close(sock: socket.socket) -> None:
    """Make close() send RST instead of FIN, as a crashed client's kernel would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def store_big(server, key: bytes = b"big") -> None:
    with Connection(server.host, server.port) as c:
        assert c.request(P.set_(key, BIG, flags=9)).status == P.SUCCESS
        reply = c.request(P.get(key))
        assert reply.value == BIG


class ActiveClient(threading.Thread):
    """Rounds of SET / GET / GET-of-the-big-value on its own connection, all checked."""

    def __init__(self, server, name: str, rounds: int):
        super().__init__(daemon=True)
        self.server, self.name_, self.rounds = server, name, rounds
        self.done = 0
        self.slowest = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            with Connection(self.server.host, self.server.port, timeout=10) as c:
                for i in range(self.rounds):
                    key = f"active-{self.name_}-{i}".encode()
                    value = key * 50
                    started = time.monotonic()
                    replies = c.sync(
                        P.set_(key, value, opaque=1)
                        + P.get(key, opaque=2)
                        + P.get(b"big", opaque=3)
                    )
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    got = [
                        (r.opaque, r.status, r.value if r.opaque != 3 else len(r.value))
                        for r in replies
                    ]
                    want = [(1, 0, b""), (2, 0, value), (3, 0, len(BIG))]
                    if got != want or replies[2].value != BIG:
                        self.errors.append(f"round {i}: {got}")
                        return
                    self.done += 1
        except Exception as error:  # noqa: BLE001 - a thread's exception would be lost: report it
            self.errors.append(f"{type(error).__name__}: {error}")


def stall(server, requests: bytes) -> socket.socket:
    """A client that sends requests and never reads a byte of the replies."""
    sock = raw_client(server, rcvbuf=16 * 1024)
    sock.sendall(requests)
    return sock


MULTI_GET = P.get(b"big") * 200  # one run of GETs: a multi-get
INTERLEAVED = (P.get(b"big") + P.noop()) * 200  # each GET a separate request


def test_dead_reader_does_not_stall_other_clients(start_server):
    # The default --send-timeout (30 s) keeps the dead reader connected for the
    # whole test, so the active clients are known to overlap with it.
    server = start_server()
    store_big(server)
    baseline = settle_baseline(server)
    dead = stall(server, MULTI_GET)
    try:
        clients = [ActiveClient(server, str(n), rounds=25) for n in range(4)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(60)
        assert not any(c.is_alive() for c in clients), "an active client is stuck"
        assert [c.errors for c in clients] == [[]] * 4
        assert [c.done for c in clients] == [25] * 4
        slowest = max(c.slowest for c in clients)
        print(f"\ndead reader: 4 active clients x 25 rounds, slowest round {slowest * 1000:.0f} ms")
        # The dead reader is still connected (and still owed ~100 MiB); the
        # active clients' closes may take the server a moment to see.
        still = poll(lambda: curr_connections(server), lambda n: n == baseline[0] + 1, 10)
        assert still == baseline[0] + 1
    finally:
        dead.close()
    assert_back_to_baseline(server, baseline, "closing the dead reader")
    assert_clean_log(server)


@pytest.mark.parametrize("kind", ["multi-get", "interleaved"])
def test_dead_reader_is_disconnected_and_its_output_bounded(start_server, kind):
    """200 x GET of 512 KiB (100 MiB of replies) to a client that never reads.

    The server may hold about 1 MiB of replies plus one reply per connection;
    16 MiB leaves room for the allocator. After --send-timeout 2 the client
    is disconnected and its socket reaches EOF (or a reset).
    """
    server = start_server("--send-timeout", "2")
    store_big(server)
    baseline = settle_baseline(server)
    rss_before = rss_bytes(server)
    started = time.monotonic()
    dead = stall(server, MULTI_GET if kind == "multi-get" else INTERLEAVED)
    peak = rss_before
    try:
        # Until the server lets go of it: at most the send timeout + slack.
        while time.monotonic() - started < 15:
            peak = max(peak, rss_bytes(server))
            if curr_connections(server) == baseline[0]:
                break
            time.sleep(0.02)
        closed_after = time.monotonic() - started
        assert curr_connections(server) == baseline[0], "dead reader still connected after 15 s"
        dead.settimeout(10)
        data, how = read_until_closed(dead, limit=200 * (len(BIG) + 100))
    finally:
        dead.close()
    growth = peak - rss_before
    print(
        f"\ndead reader ({kind}): disconnected after {closed_after:.1f} s "
        f"({how} after {len(data) / MIB:.1f} MiB read); peak RSS growth {growth / MIB:.1f} MiB"
    )
    assert len(data) < 200 * len(BIG), "it was sent everything: no timeout happened"
    assert_back_to_baseline(server, baseline, "the dead reader's disconnect")
    assert growth < 16 * MIB, (
        f"server RSS grew {growth / MIB:.1f} MiB for one client that reads nothing "
        f"(replies are meant to be flushed every 1 MiB)"
    )
    assert_clean_log(server)


def test_disconnects_mid_header_mid_body_mid_reply(start_server):
    server = start_server()
    store_big(server)
    baseline = settle_baseline(server)
    header = P.set_(b"k", b"v" * 100_000)
    counts = {"mid-header": 0, "mid-body": 0, "mid-reply": 0, "mid-reply-partly-read": 0}
    for i in range(40):
        with raw_client(server) as s:  # mid-header
            s.sendall(header[: 1 + i % 23])
            if i % 2:
                reset_on_close(s)
        counts["mid-header"] += 1
        with raw_client(server) as s:  # mid-body
            s.sendall(header[: 24 + 8 + 1 + 2500 * i])
            if i % 2:
                reset_on_close(s)
        counts["mid-body"] += 1
    for i in range(20):
        with raw_client(server, rcvbuf=16 * 1024) as s:  # mid-reply: 10 MiB owed
            s.sendall(P.get(b"big") * 20)
            if i % 2:
                reset_on_close(s)
        counts["mid-reply"] += 1
        with raw_client(server) as s:  # reads some of it first
            s.sendall(P.get(b"big") * 20)
            got = 0
            while got < 300_000:
                got += len(s.recv(65536))
        counts["mid-reply-partly-read"] += 1
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    print(f"\ndisconnects: {summary}")
    assert_back_to_baseline(server, baseline, summary)
    with Connection(server.host, server.port) as c:
        assert c.request(P.get(b"big")).value == BIG
    assert_clean_log(server)


def test_half_open_client_still_gets_every_reply(server):
    with raw_client(server) as s:
        s.sendall(
            P.set_(b"half-open", b"v1", opaque=1)
            + P.get(b"half-open", opaque=2)
            + P.set_(b"half-open-big", BIG, opaque=3)
            + P.get(b"half-open-big", opaque=4)
            + b"".join(P.get(b"half-open", P.GETK, opaque=10 + n) for n in range(2000))
        )
        s.shutdown(socket.SHUT_WR)
        data, how = read_until_closed(s)
    replies = P.responses(data)
    assert how == "eof"
    assert [(r.opaque, r.status) for r in replies[:4]] == [(1, 0), (2, 0), (3, 0), (4, 0)]
    assert replies[1].value == b"v1" and replies[3].value == BIG
    assert [r.opaque for r in replies[4:]] == [10 + n for n in range(2000)]
    assert all(r.value == b"v1" for r in replies[4:])


def test_half_open_client_with_a_partial_request_is_closed(server):
    with raw_client(server) as s:
        s.sendall(P.noop(opaque=1) + P.set_(b"k", b"value")[:30])
        s.shutdown(socket.SHUT_WR)
        data, how = read_until_closed(s)
    assert [(r.opcode, r.opaque) for r in P.responses(data)] == [(P.NOOP, 1)]
    assert how == "eof"


CHURN_CYCLES = 2_000


def churn(server, start: int, count: int, errors: list[str]) -> None:
    partial = P.set_(b"churn", b"x" * 5000)
    try:
        for i in range(start, start + count):
            s = raw_client(server)
            try:
                kind = i % 5
                if kind == 1:
                    s.sendall(partial[: 1 + i % 30])  # partial header
                elif kind == 2:
                    s.sendall(P.noop(opaque=i))
                    reply = b""
                    while len(reply) < 24 and (more := s.recv(24 - len(reply))):
                        reply += more
                    if len(reply) != 24 or P.responses(reply)[0].opaque != i:
                        errors.append(f"cycle {i}: NOOP reply {reply!r}")
                elif kind == 3:
                    s.sendall(partial[: 40 + i % 3000])  # partial body, then a reset
                    reset_on_close(s)
                elif kind == 4:
                    s.sendall(P.set_(b"churn-%d" % i, b"v"))  # reply never read
            finally:
                s.close()
    except Exception as error:  # noqa: BLE001 - a thread's exception would be lost: report it
        errors.append(f"{type(error).__name__}: {error}")


def test_connection_churn_leaks_nothing(start_server):
    server = start_server()
    baseline = settle_baseline(server)
    before = int(stats(server)["total_connections"])
    errors: list[str] = []
    per_thread = CHURN_CYCLES // 4
    threads = [
        threading.Thread(target=churn, args=(server, n * per_thread, per_thread, errors))
        for n in range(4)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    took = time.monotonic() - started
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    print(f"\nchurn: {CHURN_CYCLES} connect/disconnect cycles in {took:.1f} s")
    assert_back_to_baseline(server, baseline, f"{CHURN_CYCLES} connect/disconnect cycles")
    assert int(stats(server)["total_connections"]) - before >= CHURN_CYCLES
    assert_clean_log(server)


def test_connections_past_the_limit_are_refused_promptly(start_server):
    limit = 4
    server = start_server("-c", str(limit))
    held = [Connection(server.host, server.port) for _ in range(limit)]
    try:
        for n, c in enumerate(held):
            assert c.request(P.noop(opaque=n)).opaque == n  # accepted and counted
        refusal_times = []
        for _ in range(30):
            started = time.monotonic()
            with raw_client(server, timeout=5) as s:
                data, how = read_until_closed(s, limit=1000)
            refusal_times.append(time.monotonic() - started)
            assert (data, how) == (TOO_MANY, "eof")
        # A burst: 100 connections opened at once, past the server's 64 spare
        # greenlets for refusing, are all refused too, none left hanging.
        started = time.monotonic()
        burst = [raw_client(server, timeout=5) for _ in range(100)]
        try:
            answers = [read_until_closed(s, limit=1000) for s in burst]
        finally:
            for s in burst:
                s.close()
        burst_time = time.monotonic() - started
        assert answers == [(TOO_MANY, "eof")] * 100
        print(
            f"\n-c {limit}: 30 refusals one by one, slowest {max(refusal_times) * 1000:.0f} ms; "
            f"a burst of 100 refused in {burst_time * 1000:.0f} ms"
        )
        # The first N kept working throughout.
        for n, c in enumerate(held):
            key = b"limit-%d" % n
            assert c.request(P.set_(key, b"v%d" % n)).status == P.SUCCESS
            assert c.request(P.get(key)).value == b"v%d" % n
        # STAT over a held connection: nothing else gets in.
        held[0].send(P.request(P.STAT))
        general = {}
        while (reply := held[0].recv()).key:
            general[reply.key] = reply.value
        assert int(general[b"rejected_connections"]) == 130
        assert int(general[b"curr_connections"]) == limit
        # A slot freed is a slot available (once the server has seen the close).
        held.pop().close()

        def served() -> bool:
            try:
                with Connection(server.host, server.port, timeout=5) as c:
                    return c.request(P.noop(opaque=77)).opaque == 77
            except (OSError, ConnectionClosed, ProtocolViolation):  # refused: not yet
                return False

        assert poll(served, bool, timeout=5)
    finally:
        for c in held:
            c.close()
    assert_clean_log(server)


def test_idle_clients_are_closed_and_active_ones_are_not(start_server):
    server = start_server("--idle-timeout", "1")
    results: dict[str, object] = {}

    def idle(name: str, first: bytes) -> None:
        started = time.monotonic()
        try:
            with raw_client(server, timeout=6) as s:
                if first:
                    s.sendall(first)
                data, how = read_until_closed(s)
            results[name] = (how, data, time.monotonic() - started)
        except Exception as error:  # noqa: BLE001 - reported by the test
            results[name] = error

    def active() -> None:
        replies = 0
        try:
            with Connection(server.host, server.port, timeout=5) as c:
                started = time.monotonic()
                while time.monotonic() - started < 3:
                    assert c.request(P.noop(opaque=replies)).opaque == replies
                    replies += 1
                    time.sleep(0.1)
            results["active"] = replies
        except Exception as error:  # noqa: BLE001 - reported by the test
            results["active"] = f"{type(error).__name__} after {replies} replies: {error}"

    threads = [
        threading.Thread(target=idle, args=("silent", b"")),
        threading.Thread(target=idle, args=("after-a-request", P.noop(opaque=5))),
        threading.Thread(target=idle, args=("half-a-header", P.noop()[:10])),
        threading.Thread(target=active),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert isinstance(results["active"], int) and results["active"] >= 10, results["active"]
    for name in ("silent", "after-a-request", "half-a-header"):
        # Not closed within the client's 6 s socket timeout: an exception here.
        assert isinstance(results[name], tuple), (name, results[name])
        how, data, _ = results[name]
        replies = [(r.opcode, r.opaque) for r in P.responses(data)]
        assert how == "eof", (name, results[name])
        assert replies == ([(P.NOOP, 5)] if name == "after-a-request" else []), name
    closes = {
        name: f"{results[name][2]:.2f} s" for name in ("silent", "after-a-request", "half-a-header")
    }
    print(
        f"\nidle timeout 1 s: closed after {closes}; the active client got {results['active']} replies"
    )
    assert_clean_log(server)

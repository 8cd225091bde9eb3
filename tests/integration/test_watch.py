"""`watch` against real servers: memcached's lines, replies and limits, and a slow watcher.

The same scripted requests go to mbserver and to memcached 1.6.18, each
watched by a connection of its own; the log lines are compared with their
timestamps, global ids, descriptors and client ports masked. A slow watcher
must lose lines (and be told how many) without slowing anyone else.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from .test_text_protocol import text_exchange

pytestmark = pytest.mark.usefixtures("mbserver_only")  # compares the two servers

IO_TIMEOUT = 10.0

# Requests whose lines memcached 1.6.18 and mbserver log alike (`deletions`
# is newer than 1.6.18, and evictions follow memcached's per-class LRUs).
SCRIPT = (
    b"set foo 5 100 3\r\nbar\r\nget foo\r\nget nope\r\nadd foo 0 0 1\r\nx\r\nincr n 1\r\n"
    b"delete foo\r\ntouch foo 1\r\nmg foo v\r\nms m 2\r\nhi\r\nmd m\r\ncas foo 0 0 1 99\r\nx\r\n"
    b"append foo 0 0 1\r\nx\r\nset k%20y 0 0 1\r\nx\r\ngets k%20y\r\nset \xc3\xa9 0 0 1\r\nx\r\n"
    b"set foo 0 0 3\r\nabc\r\ngat 100 foo\r\nprepend foo 0 0 1\r\nx\r\nreplace foo 0 0 1\r\nz\r\n"
    b"ms foo 2 MA\r\nhi\r\nmg foo\r\nma ctr N0\r\nincr foo 1\r\nincr ctr 5\r\ndecr ctr 100\r\n"
)
_MASK = [
    (re.compile(r"^ts=\d+\.\d+ gid=\d+ "), ""),
    (re.compile(r"\bcfd=\d+"), "cfd=_"),
    (re.compile(r"\brport=\d+"), "rport=_"),
]


def masked(line: str) -> str:
    for pattern, replacement in _MASK:
        line = pattern.sub(replacement, line)
    return line


class Watching:
    """A watching connection: `watch ...`, then the lines as they come."""

    def __init__(self, port: int, kinds: bytes, rcvbuf: int | None = None):
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(IO_TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(b"watch " + kinds + b"\r\n" if kinds else b"watch\r\n")
        self.buffer = b""
        self.reply = self._line()

    def _line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(1 << 16)
            assert chunk, f"closed; received {self.buffer!r}"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r").decode()

    def until(self, predicate, lines: list[str] | None = None) -> list[str]:
        """Lines up to and including the first for which predicate is true,
        appended to ``lines`` as they come (kept if a timeout interrupts)."""
        lines = [] if lines is None else lines
        while True:
            line = self._line()
            lines.append(line)
            if predicate(line):
                return lines

    def close(self) -> None:
        self.sock.close()


def watched_script(port: int) -> list[str]:
    watcher = Watching(port, b"fetchers mutations connevents")
    assert watcher.reply == "OK"
    text_exchange("127.0.0.1", port, SCRIPT)  # one connection: opened, used, closed
    lines = watcher.until(lambda line: "type=conn_close" in line)
    watcher.close()
    return [masked(line) for line in lines]


def test_the_lines_are_memcacheds(start_server, memcached):
    ours = start_server()
    expected = watched_script(memcached.port)
    assert len(expected) > 30  # the reference really logged the script
    assert watched_script(ours.port) == expected


@pytest.mark.parametrize(
    "command",
    [b"watch bogus\r\n", b"watch FETCHERS\r\n", b"watch fetchers bogus\r\n", b"watch\r\n",
     b"watch mutations evictions\r\n"],
)
def test_watch_replies_as_memcached(start_server, memcached, command):
    ours = start_server()
    replies = []
    for port in (memcached.port, ours.port):
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(command)
            replies.append(sock.recv(100))
    assert replies[1] == replies[0], replies


def test_the_twenty_first_watcher_is_refused_as_by_memcached(start_server, memcached):
    ours = start_server()
    for port in (memcached.port, ours.port):
        watchers = [Watching(port, b"fetchers") for _ in range(20)]
        assert all(w.reply == "OK" for w in watchers)
        extra = Watching(port, b"fetchers")
        assert extra.reply == "WATCHER_TOO_MANY log watcher limit reached"
        extra.close()
        watchers.pop().close()
        time.sleep(0.2)  # the server notices the close
        again = Watching(port, b"mutations")
        assert again.reply == "OK"
        for w in [*watchers, again]:
            w.close()


def test_deletions_and_evictions(start_server):
    server = start_server("-m", "2", "-I", "512k")
    watcher = Watching(server.port, b"deletions evictions")
    assert watcher.reply == "OK"
    text_exchange(server.host, server.port, b"set d 0 0 1\r\nx\r\ndelete d\r\nms e 1\r\ny\r\nmd e\r\n")
    assert [masked(line) for line in watcher.until(lambda line: "key=e" in line)] == [
        "type=deleted key=d cmd=delete clsid=1 size=1",
        "type=deleted key=e cmd=md clsid=1 size=1",
    ]
    big = b"x" * 100_000
    text_exchange(server.host, server.port,
                  b"".join(b"set big%d 0 0 %d\r\n%b\r\n" % (i, len(big), big) for i in range(30)))
    evicted = masked(watcher.until(lambda line: "type=eviction" in line)[-1])
    # la: seconds since big0 was stored, which a slow run can see tick over.
    last_access = re.search(r"\bla=(\d+) ", evicted)
    assert last_access is not None and int(last_access[1]) <= 5, evicted
    assert evicted.replace(last_access[0], "la=_ ") == (
        "type=eviction key=big0 fetch=no ttl=-1 la=_ clsid=32 size=100000"
    )
    watcher.close()


def test_a_slow_watcher_loses_lines_and_slows_nobody(start_server):
    server = start_server()
    slow = Watching(server.port, b"fetchers", rcvbuf=4096)
    assert slow.reply == "OK"
    total = 30_000
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT) as client:
        for start in range(0, total, 1000):
            # Long keys make long lines: more than the kernel's buffers hold.
            batch = b"".join(b"get %0200d\r\n" % i for i in range(start, start + 1000))
            client.sendall(batch)
            received = b""
            while received.count(b"END\r\n") < 1000:
                chunk = client.recv(1 << 16)
                assert chunk
                received += chunk
    elapsed = time.monotonic() - started
    assert elapsed < 20, f"a client beside a slow watcher took {elapsed:.1f} s"
    # Now the watcher reads: what it got, plus what it was told it lost, is
    # everything. A marker's own line may be lost too while the watcher's
    # buffer is still full: send numbered markers until one arrives.
    lines: list[str] = []
    for marker in range(50):
        text_exchange(server.host, server.port, b"get the-end-%d\r\n" % marker)
        slow.sock.settimeout(0.5)
        try:
            slow.until(lambda line: "key=the-end-" in line, lines)
            break
        except socket.timeout:
            continue
    else:
        raise AssertionError("no marker line reached the watcher")
    seen = int(lines[-1].split("key=the-end-")[1].split()[0])
    got = sum(1 for line in lines if "type=item_get" in line)
    lost = sum(int(line.split("=")[1]) for line in lines if line.startswith("skipped="))
    assert lost > 0, "the watcher was expected to fall behind"
    assert got + lost == total + seen + 1
    slow.close()

"""One client connection: recv → parse every complete request → execute → one send.

What lives here: the per-connection loop that a greenlet runs, protocol
detection from the first byte, output batching, and waiting on the socket.
What does not: parsing (``protocol/``), semantics and locking
(``commands``), or listening (``server``).

Each pass executes every request already buffered and then writes all their
replies in one send, so a pipelining client gets one write per batch. The
store lock is taken and released inside the command layer; by the time this
loop touches the socket no lock is held.

The socket is used in non-blocking mode: a recv or send that would block
raises BlockingIOError (or sends part), and the greenlet then waits on a
gevent read or write watcher for the descriptor, which lets the other
greenlets run. Doing this here instead of through gevent's socket wrapper
saves a layer of Python calls on every request. Objects without a
descriptor (the unit tests' scripted sockets) never block, so need no
watchers.
"""

from __future__ import annotations

import errno
import logging
import socket

import gevent

from .commands import Commands, GetMany
from .protocol.binary import (
    REQUEST_MAGIC,
    BinaryParser,
    ProtocolError,
    write_gets,
    write_response,
)
from .stats import ConnectionInfo, Stats

log = logging.getLogger("mbserver.connection")

RECV_SIZE = 1 << 16
# Replies are sent once this much is waiting even mid-batch, so a pipeline
# of large GETs never builds an unbounded reply in memory.
SEND_THRESHOLD = 1 << 20

# Errors that just mean the client went away.
_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.ENOTCONN, errno.EBADF)

_READ, _WRITE = 1, 2  # libev/libuv event masks


class Connection:
    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        commands: Commands,
        stats: Stats,
        max_item_size: int,
    ):
        self.sock = sock
        self.peer = peer
        self.commands = commands
        self.stats = stats
        self.max_item_size = max_item_size
        self.info = ConnectionInfo(peer, stats.clock())
        # Set by a graceful stop: finish the batch in hand, then close.
        self.stopping = False
        self._hub = gevent.get_hub()
        fileno = getattr(sock, "fileno", None)
        if fileno is None:
            self._readable = self._writable = None
        else:
            self._readable = self._hub.loop.io(fileno(), _READ)
            self._writable = self._hub.loop.io(fileno(), _WRITE)

    @property
    def idle(self) -> bool:
        """Waiting for a request, with no reply owed: safe to close at once."""
        return self.info.state in ("conn_new_cmd", "conn_waiting")

    def serve(self) -> None:
        """Run until the client quits, disconnects or breaks the protocol."""
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a test's socketpair): nothing to tune
        try:
            self._serve()
        except OSError as error:
            if error.errno in _GONE:
                log.debug("%s: connection lost (%s)", self.peer, error.strerror)
            else:
                log.warning("%s: socket error: %s", self.peer, error)
        finally:
            for watcher in (self._readable, self._writable):
                if watcher is not None:
                    watcher.close()

    def _serve(self) -> None:
        stats = self.stats
        info = self.info
        first = self._recv()
        if not first:
            return
        if first[0] != REQUEST_MAGIC:
            info.protocol = "text"
            log.info("%s: text protocol is not served yet; closing", self.peer)
            self._send([b"SERVER_ERROR this server speaks the binary protocol only\r\n"])
            return
        info.protocol = "binary"
        parser = BinaryParser(self.max_item_size)
        next_request = parser.next
        execute = self.commands.execute
        get_many = self.commands.get_many
        clock = stats.clock
        recv = self.sock.recv
        readable = self._readable
        wait = self._hub.wait
        data = first
        while True:
            stats.bytes_read += len(data)
            parser.feed(data)
            out: list = []
            pending = 0
            closing = False
            info.state = "conn_parse_cmd"
            try:
                while (request := next_request()) is not None:
                    if request.__class__ is GetMany:
                        pending += write_gets(request, get_many(request.keys), out)
                    else:
                        pending += write_response(request, execute(request), out)
                        if request.command == "quit":
                            closing = True
                            break
                    if pending >= SEND_THRESHOLD:
                        self._send(out)
                        out = []
                        pending = 0
            except ProtocolError as error:
                log.info("%s: protocol error: %s; closing", self.peer, error)
                if error.reply:
                    out.append(error.reply)
                closing = True
            info.last_cmd = clock()
            if out:
                self._send(out)
            if closing or self.stopping:
                return
            info.state = "conn_waiting"
            # A client waiting for these replies cannot have sent more yet:
            # wait for readability first rather than pay for a recv that
            # fails. A full buffer hints that more is already queued.
            if readable is not None and len(data) < RECV_SIZE:
                wait(readable)
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                data = self._recv()
            if not data:
                return

    def _recv(self) -> bytes:
        """Receive, waiting for the socket to become readable as often as needed."""
        while True:
            try:
                return self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                self._hub.wait(self._readable)

    def _send(self, out: list) -> None:
        data = out[0] if len(out) == 1 else b"".join(out)
        self.info.state = "conn_mwrite"
        total = len(data)
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < total:
            # The client is not reading fast enough: wait until it does.
            view = memoryview(data)
            while sent < total:
                self._hub.wait(self._writable)
                try:
                    sent += self.sock.send(view[sent:])
                except BlockingIOError:
                    pass
        self.stats.bytes_written += total

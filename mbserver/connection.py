"""One client connection: recv → parse every complete request → execute → one send.

What lives here: the per-connection loop that a greenlet runs, protocol
detection from the first byte, and output batching. What does not: parsing
(``protocol/``), semantics and locking (``commands``), or listening
(``server``).

Each pass executes every request already buffered and then writes all their
replies in one ``sendall``, so a pipelining client gets one write per batch.
The store lock is taken and released inside ``Commands.execute``; by the time
this loop touches the socket no lock is held.
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
        # A read watcher, so the loop can wait for a request without a
        # failing recv; sockets without a descriptor (test fakes) just recv.
        fileno = getattr(sock, "fileno", None)
        self._readable = self._hub.loop.io(fileno(), 1) if fileno else None

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

    def _serve(self) -> None:
        sock = self.sock
        stats = self.stats
        info = self.info
        first = sock.recv(RECV_SIZE)
        if not first:
            return
        if first[0] != REQUEST_MAGIC:
            info.protocol = "text"
            log.info("%s: text protocol is not served yet; closing", self.peer)
            self._send([b"SERVER_ERROR this server speaks the binary protocol only\r\n"])
            return
        info.protocol = "binary"
        parser = BinaryParser(self.max_item_size)
        execute = self.commands.execute
        get_many = self.commands.get_many
        data = first
        readable = self._readable
        wait = self._hub.wait
        while True:
            stats.bytes_read += len(data)
            parser.feed(data)
            out: list = []
            counted = pending = 0
            closing = False
            info.state = "conn_parse_cmd"
            try:
                while True:
                    request = parser.next()
                    if request is None:
                        break
                    if request.__class__ is GetMany:
                        write_gets(request, get_many(request.keys), out)
                    else:
                        write_response(request, execute(request), out)
                        if request.command == "quit":
                            closing = True
                            break
                    while counted < len(out):
                        pending += len(out[counted])
                        counted += 1
                    if pending >= SEND_THRESHOLD:
                        self._send(out)
                        out = []
                        counted = pending = 0
            except ProtocolError as error:
                log.info("%s: protocol error: %s; closing", self.peer, error)
                if error.reply:
                    out.append(error.reply)
                closing = True
            info.last_cmd = stats.clock()
            if out:
                self._send(out)
            if closing or self.stopping:
                return
            info.state = "conn_waiting"
            # A client waiting for these replies cannot have sent more yet:
            # wait for readability first rather than pay for a recv that
            # fails with EAGAIN. A full buffer hints that more is queued.
            if readable is not None and len(data) < RECV_SIZE:
                wait(readable)
            data = sock.recv(RECV_SIZE)
            if not data:
                return

    def _send(self, out: list) -> None:
        data = out[0] if len(out) == 1 else b"".join(out)
        self.info.state = "conn_mwrite"
        # One send() usually takes everything; sendall() would also ask the
        # kernel for the socket's buffer size on every call.
        sent = self.sock.send(data)
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])
        self.stats.bytes_written += len(data)

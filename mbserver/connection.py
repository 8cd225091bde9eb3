"""One client connection: recv → parse every complete request → execute → one send.

What lives here: the per-connection loop that a greenlet runs, the TLS
handshake, output batching, and waiting on the socket with the idle and
send timeouts. It names no protocol: the first byte picks one from
``protocol``'s registry, and that object parses, answers and
authenticates. What does not: protocols (``protocol/``), semantics and
locking (``commands``), or listening (``server``).

Each pass executes every request already buffered and then writes all their
replies in one send, so a pipelining client gets one write per batch. The
store lock is taken and released inside the command layer; by the time this
loop touches the socket no lock is held.

The socket is used in non-blocking mode: a recv or send that would block
raises (BlockingIOError, or SSLWant* under TLS) or sends part, and the
greenlet then waits on a gevent read or write watcher for the descriptor,
which lets the other greenlets run. Doing this here instead of through
gevent's socket wrapper saves a layer of Python calls on every request.
Objects without a descriptor (the unit tests' scripted sockets) never
block, so need no watchers.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from time import perf_counter

import gevent
from gevent import Timeout

from .auth import Authenticator
from .commands import Commands, GetMany
from .config import Settings
from .protocol import SEND_THRESHOLD, Protocol, ProtocolError, protocol_for
from .stats import ConnectionInfo, Stats

log = logging.getLogger("mbserver.connection")

RECV_SIZE = 1 << 16
# How long a client gets to complete a TLS handshake.
TLS_HANDSHAKE_TIMEOUT = 10.0

# Errors that just mean the client went away.
_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.ENOTCONN, errno.EBADF)
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError)

_READ, _WRITE = 1, 2  # libev/libuv event masks


class ClientTooSlow(Exception):
    """A reply stayed unread for the send timeout."""


class Connection:
    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        commands: Commands,
        stats: Stats,
        settings: Settings,
        auth: Authenticator | None = None,
        observe_batch=None,
    ):
        self.sock = sock
        self.peer = peer
        self.commands = commands
        self.stats = stats
        self.settings = settings
        self.auth = auth
        self.observe_batch = observe_batch
        self.info = ConnectionInfo(peer, stats.clock())
        # Set by a graceful stop: answer what the client has sent, then close.
        self.stopping = False
        self.protocol: Protocol | None = None  # chosen by the first byte
        self._out: list = []  # replies not sent yet
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._hub = gevent.get_hub()
        fileno = getattr(sock, "fileno", None)
        if fileno is None:
            self._readable = self._writable = None
        else:
            self._readable = self._hub.loop.io(fileno(), _READ)
            self._writable = self._hub.loop.io(fileno(), _WRITE)

    @property
    def idle(self) -> bool:
        """Waiting for a request, none partly received, no reply owed: safe to close now."""
        protocol = self.protocol
        return self.info.state in ("conn_new_cmd", "conn_waiting") and (
            protocol is None or not protocol.parser.buffer.buffered
        )

    def serve(self) -> None:
        """Run until the client quits, disconnects, breaks the protocol or times out."""
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a test's socketpair): nothing to tune
        try:
            if self._tls and not self._handshake():
                return
            self._serve()
        except ClientTooSlow:
            log.info(
                "%s: reply unread for %.0f s; closing", self.peer, self.settings.send_timeout
            )
        except ssl.SSLError as error:
            log.info("%s: TLS error: %s", self.peer, error.reason or error)
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
        """The keep-alive loop: pick the protocol, then answer a batch and wait, until done."""
        # Try at once: a new client usually sends straight away (or has
        # already gone, which this notices without a trip through the hub).
        try:
            data = self.sock.recv(RECV_SIZE)
        except _WOULD_BLOCK:
            data = self._wait_for_request() and self._recv()
        if not data:
            return
        protocol = self.protocol = protocol_for(data[0])(
            self.commands, self.settings, self.auth, self.peer, self._send
        )
        self.info.protocol = protocol.name
        # The lone GET: a read holding exactly one plain GET, the commonest
        # request of all, is answered without feeding the parser, building a
        # run or a reply list (bench/paths.py: 3.8 -> 1.6 us). Locals, not
        # attributes, on this path: each lookup saved is measurable.
        lone_get = protocol.lone_get
        get_reply = protocol.get_reply
        get_record = self.commands.get_record
        send_data = self._send_data
        info = self.info
        stats = self.stats
        clock = stats.clock
        recv = self.sock.recv
        observe = self.observe_batch
        readable = self._readable
        # Waiting for the next request needs no more than a hub switch unless
        # there is an idle timeout, TLS, or no descriptor (a test's socket).
        plain = readable is not None and not self._tls and not self.settings.idle_timeout
        switch = gevent.getcurrent().switch
        hub_switch = self._hub.switch
        while True:
            if observe is not None:
                started = perf_counter()
            stats.bytes_read += len(data)
            if lone_get is not None and (get := lone_get(data)) is not None:
                send_data(get_reply(get[1], get_record(get[0])))
                closing = False
            else:
                closing = self._answer_batch(data)
            info.last_cmd = clock()
            if observe is not None:
                observe(perf_counter() - started)
            if closing:
                return
            if self.stopping:
                data = self._drain()
                if not data:
                    return
                continue
            info.state = "conn_waiting"
            # A client waiting for these replies cannot have sent more yet:
            # wait for readability first rather than pay for a recv that
            # fails. A full buffer hints that more is already queued; under
            # TLS, decrypted bytes may be waiting inside the SSL object.
            if len(data) < RECV_SIZE:
                if plain:
                    # hub.wait(readable) without its per-call Waiter: the
                    # watcher switches straight back to this greenlet, and
                    # anything else that switches in is a bug, not a wakeup.
                    # (callgrind: 33.0k -> 30.3k instructions per request.)
                    readable.start(switch, readable)
                    try:
                        if hub_switch() is not readable:
                            raise RuntimeError("unexpected switch into a connection")
                    finally:
                        readable.stop()
                elif not self._wait_for_request():
                    return
            try:
                data = recv(RECV_SIZE)
            except _WOULD_BLOCK:
                data = self._recv()
            if not data:
                return

    def _answer_batch(self, data: bytes) -> bool:
        """Feed data, answer every complete request, and send the replies
        (once, or every SEND_THRESHOLD bytes); True when the connection
        must close now."""
        protocol = self.protocol
        parser = protocol.parser
        parser.feed(data)
        next_request = parser.next
        answer, answer_gets = protocol.answer, protocol.answer_gets
        out = self._out
        pending = 0
        try:
            while (request := next_request()) is not None:
                if request.__class__ is GetMany:
                    pending = answer_gets(request, out, pending)
                else:
                    pending += answer(request, out)
                if protocol.closing:
                    break
                if pending >= SEND_THRESHOLD:
                    self._send(out)
                    pending = 0
        except ProtocolError as error:
            log.info("%s: protocol error: %s; closing", self.peer, error)
            if error.reply:
                out.append(error.reply)
            protocol.closing = True
        if out:
            self._send(out)
        return protocol.closing

    # -- socket I/O ------------------------------------------------------

    # The waits below are bounded with gevent's silent Timeout (exception
    # False): when it expires the with block is left and the code after it
    # runs, and no Timeout object stays bound to a frame it refers to.

    def _handshake(self) -> bool:
        """Complete the TLS handshake within TLS_HANDSHAKE_TIMEOUT; False if it fails."""
        with Timeout(TLS_HANDSHAKE_TIMEOUT, False):
            while True:
                try:
                    self.sock.do_handshake()
                    return True
                except ssl.SSLWantReadError:
                    self._hub.wait(self._readable)
                except ssl.SSLWantWriteError:
                    self._hub.wait(self._writable)
        log.info("%s: no TLS handshake within %.0f s; closing", self.peer, TLS_HANDSHAKE_TIMEOUT)
        return False

    def _wait_for_request(self) -> bool:
        """Wait until the client sends something; False if the idle timeout passes first."""
        if self._readable is None or (self._tls and self.sock.pending()):
            return True
        idle_timeout = self.settings.idle_timeout
        with Timeout(idle_timeout or None, False):
            self._hub.wait(self._readable)
            return True
        log.info("%s: idle for %.0f s; closing", self.peer, idle_timeout)
        return False

    def _drain(self) -> bytes:
        """While stopping: what the client has already sent, or b"" when it is all answered.

        A request only partly received is waited for (the server's shutdown
        timeout bounds the wait); otherwise nothing new is waited for.
        """
        try:
            return self.sock.recv(RECV_SIZE)
        except _WOULD_BLOCK:
            return self._recv() if self.protocol.parser.buffer.buffered else b""

    def _recv(self) -> bytes:
        """Receive, waiting for the socket as often as it needs."""
        while True:
            try:
                return self.sock.recv(RECV_SIZE)
            except _WOULD_BLOCK:
                self._hub.wait(self._readable)
            except ssl.SSLWantWriteError:
                self._hub.wait(self._writable)

    def _send(self, out: list) -> None:
        """Send and empty ``out``."""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._send_data(data)

    def _send_data(self, data: bytes) -> None:
        self.info.state = "conn_mwrite"
        total = len(data)
        try:
            sent = self.sock.send(data)
        except (*_WOULD_BLOCK, ssl.SSLWantWriteError):
            sent = 0
        if sent < total:
            self._send_rest(memoryview(data), sent)
        self.stats.bytes_written += total

    def _send_rest(self, view: memoryview, sent: int) -> None:
        """The client is not reading fast enough: wait for it, for at most the send timeout."""
        with Timeout(self.settings.send_timeout or None, False):
            while sent < len(view):
                self._hub.wait(self._writable)
                try:
                    sent += self.sock.send(view[sent:])
                except ssl.SSLWantReadError:
                    self._hub.wait(self._readable)
                except (BlockingIOError, ssl.SSLWantWriteError):
                    pass
            return
        raise ClientTooSlow()

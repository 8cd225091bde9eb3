"""One client connection: recv → parse every complete request → execute → one send.

What lives here: the per-connection loop that a greenlet runs, protocol
detection from the first byte, SASL and TLS handshakes, output batching,
and waiting on the socket with the idle and send timeouts. What does not:
parsing (``protocol/``), semantics and locking (``commands``), credential
checks (``auth``), or listening (``server``).

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

from .auth import MECHANISMS, Authenticator
from .commands import Commands, GetMany
from .config import Settings
from .protocol import binary, text
from .protocol.binary import (
    REQUEST_MAGIC,
    SASL_COMMANDS,
    BinaryParser,
    ProtocolError,
    auth_required_reply,
    write_gets,
    write_response,
    write_sasl,
)
from .protocol.text import TextParser, write_text, write_text_gets
from .stats import ConnectionInfo, Stats

log = logging.getLogger("mbserver.connection")

RECV_SIZE = 1 << 16
# Replies are sent once this much is waiting even mid-batch, so a pipeline
# of large GETs never builds more than about this much per connection.
SEND_THRESHOLD = 1 << 20
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
        self.authenticated = auth is None
        self.info = ConnectionInfo(peer, stats.clock())
        # Set by a graceful stop: answer what the client has sent, then close.
        self.stopping = False
        self._parser: BinaryParser | None = None
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
        parser = self._parser
        return self.info.state in ("conn_new_cmd", "conn_waiting") and (
            parser is None or not parser.buffered
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
        stats = self.stats
        info = self.info
        # Try at once: a new client usually sends straight away (or has
        # already gone, which this notices without a trip through the hub).
        try:
            first = self.sock.recv(RECV_SIZE)
        except _WOULD_BLOCK:
            first = self._wait_for_request() and self._recv()
        if not first:
            return
        if first[0] == REQUEST_MAGIC:
            info.protocol = "binary"
            parser = BinaryParser(self.settings.max_item_size, sasl=self.auth is not None)
            answer, answer_gets = self._answer_binary, self._gets_binary
            get_reply = binary.get_reply
        else:
            info.protocol = "text"
            parser = TextParser(self.settings.max_item_size)
            answer, answer_gets = self._answer_text, self._gets_text
            get_reply = text.get_reply
        # Until a client has authenticated, every request goes the long way.
        lone_get = parser.lone_get if self.auth is None else None
        self._parser = parser
        self._answer, self._answer_gets = answer, answer_gets
        get_record = self.commands.get_record
        send = self._send_data
        clock = stats.clock
        sock = self.sock
        recv = sock.recv
        readable = self._readable
        tls = self._tls
        idle_timeout = self.settings.idle_timeout
        observe = self.observe_batch
        # Waiting for the next request needs no more than a hub wait unless
        # there is an idle timeout, TLS, or no descriptor (a test's socket).
        plain = readable is not None and not tls and not idle_timeout
        switch = gevent.getcurrent().switch
        hub_switch = self._hub.switch
        out: list = []
        data = first
        while True:
            if observe is not None:
                started = perf_counter()
            stats.bytes_read += len(data)
            if lone_get is not None and (get := lone_get(data)) is not None:
                # One GET alone in the read, the commonest request of all:
                # answered without building a run or a reply list.
                reply = get_reply(get[1], get_record(get[0]))
                info.last_cmd = clock()
                send(reply)
                closing = False
            else:
                closing = self._answer_all(data, out)
                info.last_cmd = clock()
                if out:
                    self._send(out)
            if observe is not None:
                observe(perf_counter() - started)
            if closing:
                return
            if self.stopping:
                data = self._drain(parser)
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

    def _answer_all(self, data: bytes, out: list) -> bool:
        """Feed data to the parser and answer every complete request into out
        (sending as it grows); True when the connection must close after."""
        parser = self._parser
        parser.feed(data)
        next_request = parser.next
        answer, answer_gets = self._answer, self._answer_gets
        pending = 0
        try:
            while (request := next_request()) is not None:
                if request.__class__ is GetMany:
                    pending = answer_gets(request, out, pending)
                else:
                    pending += answer(request, out)
                if self._closing:
                    return True
                if pending >= SEND_THRESHOLD:
                    self._send(out)
                    pending = 0
        except ProtocolError as error:
            log.info("%s: protocol error: %s; closing", self.peer, error)
            if error.reply:
                out.append(error.reply)
            return True
        return False

    # -- answering: one pair of methods per protocol ---------------------
    #
    # answer(request, out) appends the reply and returns its size, setting
    # _closing when the connection must close after it; answer_gets(run,
    # out, pending) answers a run of GETs and returns the new pending size.

    _closing = False

    def _answer_binary(self, request, out: list) -> int:
        if not self.authenticated:
            return self._before_auth(request, out)
        command = request.command
        if command in SASL_COMMANDS:
            return self._sasl(request, out)
        written = write_response(request, self.commands.execute(request), out)
        if command == "quit":
            self._closing = True
        return written

    def _gets_binary(self, run: GetMany, out: list, pending: int) -> int:
        if not self.authenticated:
            return pending + self._before_auth(run, out)
        records = self.commands.get_many(run.keys)
        written, done = write_gets(run, records, out, 0, SEND_THRESHOLD - pending)
        if done < len(records):
            return self._write_rest(run, records, write_gets, out, done)
        return pending + written

    def _answer_text(self, request, out: list) -> int:
        if not self.authenticated:
            return self._text_auth(request, out)
        written = write_text(request, self.commands.execute(request), out)
        if request.command == "quit":
            self._closing = True
        return written

    def _gets_text(self, run: GetMany, out: list, pending: int) -> int:
        if not self.authenticated:
            return pending + self._text_auth(run, out)
        context = run.context
        if context.error:
            records = []
        elif context.touch:
            records = self.commands.gat_many(run.keys, context.exptime)
        else:
            records = self.commands.get_many(run.keys)
        written, done = write_text_gets(run, records, out, 0, SEND_THRESHOLD - pending)
        if done < len(records):
            return self._write_rest(run, records, write_text_gets, out, done)
        return pending + written

    def _write_rest(self, run: GetMany, records: list, writer, out: list, done: int) -> int:
        """A multi-get of large values: send its replies a slice at a time."""
        while done < len(records):
            self._send(out)
            written, done = writer(run, records, out, done, SEND_THRESHOLD)
        return written

    # -- authentication --------------------------------------------------

    def _before_auth(self, request, out: list) -> int:
        """Answer a binary request from a client that has not authenticated yet.

        As memcached: SASL and VERSION are answered; anything else gets 0x20
        and the connection closes.
        """
        if request.__class__ is not GetMany:
            if request.command in SASL_COMMANDS:
                return self._sasl(request, out)
            if request.command == "version":
                return write_response(request, self.commands.execute(request), out)
        self.stats.auth_errors += 1
        self._closing = True
        reply = auth_required_reply(request)
        out.append(reply)
        log.info("%s: command before authentication; closing", self.peer)
        return len(reply)

    def _sasl(self, request, out: list) -> int:
        if request.command == "sasl_list":
            return write_sasl(request, MECHANISMS, out)
        self.stats.auth_cmds += 1
        user = None
        if request.command == "sasl_auth" and self.auth is not None:
            user = self.auth.plain(request.key, request.value)
        if user is None:
            self.stats.auth_errors += 1
            log.info("%s: authentication failed", self.peer)
            return write_sasl(request, None, out)
        self.authenticated = True
        log.info("%s: authenticated as %s", self.peer, user)
        return write_sasl(request, b"Authenticated", out)

    def _text_auth(self, request, out: list) -> int:
        """memcached's text-protocol authentication (its -Y): the first command
        must be a ``set`` whose value is ``user password``; anything else, or
        a wrong password, is refused and the connection closed."""
        reply = b"CLIENT_ERROR unauthenticated\r\n"
        if request.__class__ is not GetMany and request.command == "set" and not request.refused:
            self.stats.auth_cmds += 1
            user, _, password = request.value.partition(b" ")
            name = self.auth.check(user, password)
            if name is not None:
                self.authenticated = True
                log.info("%s: authenticated as %s", self.peer, name)
                if request.quiet:
                    return 0
                out.append(b"STORED\r\n")
                return 8
            reply = b"CLIENT_ERROR authentication failure\r\n"
        self.stats.auth_errors += 1
        self._closing = True
        log.info("%s: text command without authentication; closing", self.peer)
        out.append(reply)
        return len(reply)

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

    def _drain(self, parser: BinaryParser) -> bytes:
        """While stopping: what the client has already sent, or b"" when it is all answered.

        A request only partly received is waited for (the server's shutdown
        timeout bounds the wait); otherwise nothing new is waited for.
        """
        try:
            return self.sock.recv(RECV_SIZE)
        except _WOULD_BLOCK:
            return self._recv() if parser.buffered else b""

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

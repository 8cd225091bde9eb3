"""One client connection: read → answer every complete request → one send → wait.

What lives here: the per-connection loop that a greenlet runs, the TLS
handshake, output batching, waiting on the socket with the idle and send
timeouts, and answering in the hub (``on_readable``, which the readiness
set calls) when nothing can block. It names no protocol: the first byte
picks one from ``protocol``'s registry, and that object parses, answers
and authenticates. What does not: protocols (``protocol/``), semantics
and locking (``commands``), or listening (``server``).

Each pass answers every request already buffered and then writes all their
replies in one send, so a pipelining client gets one write per batch. The
store lock is taken and released inside the command layer; by the time this
loop touches the socket no lock is held.

**Waiting.** The socket is non-blocking: a recv or send that would block
raises (BlockingIOError, or SSLWant* under TLS) or sends part, and the
code then waits on a gevent watcher for the descriptor. Between requests a
plain connection (not TLS, authenticated, not stopping) parks its greenlet
with its socket left in the hub's readiness set (``ready``), and its
``on_readable``, which the set calls in the hub, answers what arrives
itself: ``_answer`` with ``may_wait`` False, the same code the greenlet
runs. Nothing it does can yield: the store lock is free (checked first;
store calls never yield), and a send that would block is not waited for.
Whatever cannot finish there, because it would block (a full send buffer,
a reply sliced past SEND_THRESHOLD), or is not for the hub (a close, a
protocol error, a graceful stop, the lock in use, EOF), is handed to the
greenlet, which continues from the same state. A request costs no greenlet
switch, no watcher start or stop, and no call from the loop's C code for
its socket alone (the README's Performance section has the figures).

Objects that are not non-blocking sockets (the unit tests' scripted and
gevent sockets) are served by the greenlet alone, as TLS sockets are.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import sys
from time import perf_counter

import gevent
from gevent import Timeout

from .auth import Authenticator
from .commands import Commands, GetMany
from .config import Settings
from .protocol import SEND_THRESHOLD, Protocol, ProtocolError, protocol_for
from .ready import ready_set
from .stats import ConnectionInfo, Stats
from .watch import CLOSE_ERROR, CLOSE_IDLE, CLOSE_NORMAL, CLOSE_SHUTDOWN

log = logging.getLogger("mbserver.connection")

# What one read asks for. On CPython the size costs nothing: the bytes
# object is shrunk to what arrived. PyPy takes the whole size from its
# 1 MiB nursery on every read, however little arrives, so 64 KiB reads
# forced a minor collection every 16 reads: 27,000-30,000 in a 5 s run of
# bench (a), 0.4 µs a request. 16 KiB, memcached's own read size, takes a
# 10 KiB value (bench (d)) in one read and collects a quarter as often.
RECV_SIZE = 1 << 14 if sys.implementation.name == "pypy" else 1 << 16
# How long a client gets to complete a TLS handshake.
TLS_HANDSHAKE_TIMEOUT = 10.0

# Errors that just mean the client went away.
_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.ENOTCONN, errno.EBADF)
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError)
_SEND_WOULD_BLOCK = (*_WOULD_BLOCK, ssl.SSLWantWriteError)

_READ, _WRITE = 1, 2  # libev/libuv event masks
# A plain non-blocking socket (``_nonblocking``) is read and written as its
# descriptor: the same system calls (send with no flags is write), raising
# the same errors, with less argument parsing around them (callgrind: ~700
# instructions a request). The socket is closed only after serve() returns
# (server), so the descriptor cannot be reused under a running connection.
# The choice is written out where replies are sent, not made once as a
# partial: that would be three more objects of the connection's for each
# request to touch.
_read, _write = os.read, os.write

# What _answer reports.
_DONE = 0  # every complete request answered, every reply sent
_CLOSE = 1  # answered; the connection must close now
_HAND_OFF = 2  # (from the hub) replies or requests are left for the greenlet

# What on_readable (or the idle timer) hands the parked greenlet, besides data.
_RESUME = object()  # _answer stopped short: go on where it left off
_IDLE = object()  # the idle timeout passed
_WATCH_WAKE = object()  # a watching connection's wakeup: log lines, or the client went
_WAKE = object()  # what on_readable switches a parked greenlet with


class ClientTooSlow(Exception):
    """A reply stayed unread for the send timeout."""


class Connection:
    # Slots, what a request reads first, so one connection's hot state is a
    # few adjacent cache lines: with 1,000 busy connections a request costs
    # the same instructions as with 16 (callgrind) but far more time, the
    # difference being memory the other connections pushed out of the cache.
    __slots__ = (
        "_parked", "sock", "_fd", "stopping", "_lock", "_logger", "stats",
        "_fresh", "_lone", "_get_reply", "commands", "_store_reply", "_clock",
        "info", "_sock_send", "_nonblocking", "protocol", "_out", "_readable",
        "peer", "settings", "auth", "_tls", "_hub", "_greenlet", "_handed",
        "_idle_timer", "close_reason", "_watch_waiting", "_watch_woken",
        "_watch_closed", "_writable", "_ready", "_polled",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        commands: Commands,
        stats: Stats,
        settings: Settings,
        auth: Authenticator | None = None,
    ):
        fileno = getattr(sock, "fileno", None)
        # Set first, in __slots__' order: what a request reads. CPython lays
        # an object's slots out in their declared order, but PyPy keeps its
        # attributes in the order they are first set.
        self._parked = False  # the greenlet waits for on_readable to hand over
        self.sock = sock
        self._fd = -1 if fileno is None else fileno()
        # Set by a graceful stop: answer what the client has sent, then close.
        self.stopping = False
        self._lock = commands.lock
        self._logger = commands.logger
        self.stats = stats
        self._fresh = False  # the lone GET or SET may be taken (see _after_batch)
        self._lone = self._get_reply = None
        self.commands = commands
        self._store_reply = None
        self._clock = stats.clock
        self.info = ConnectionInfo(peer, stats.clock())
        self._sock_send = sock.send
        self._nonblocking = False  # (below, once the watchers are made)
        self.protocol: Protocol | None = None  # chosen by the first byte
        self._out: list = []  # replies not sent yet
        self.peer = peer
        self.settings = settings
        self.auth = auth
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._hub = gevent.get_hub()
        self._greenlet = None
        self._polled = False  # the socket is in the readiness set, with this as its reader
        self._handed = None  # what the callback hands over: data, _RESUME or _IDLE
        self._idle_timer = None
        self.close_reason = CLOSE_NORMAL
        self._watch_waiting = self._watch_woken = self._watch_closed = False
        if fileno is None:
            self._readable = self._writable = None
        else:
            self._readable = self._hub.loop.io(self._fd, _READ)
            self._writable = self._hub.loop.io(self._fd, _WRITE)
        # Answering from the hub needs a socket whose calls never wait.
        gettimeout = getattr(sock, "gettimeout", None)
        self._nonblocking = (
            self._readable is not None
            and not self._tls
            and gettimeout is not None
            and gettimeout() == 0.0
        )
        # Where a parked connection leaves its socket (only these park).
        self._ready = ready_set(self._hub) if self._nonblocking else None

    @property
    def idle(self) -> bool:
        """Waiting for a request, none partly received, no reply owed: safe to close now."""
        protocol = self.protocol
        return (
            self.info.state in ("conn_new_cmd", "conn_waiting")
            and not self._out
            and (protocol is None or not protocol.parser.partial)
        )

    def serve(self) -> None:
        """Run until the client quits, disconnects, breaks the protocol or times out.

        ``close_reason`` then says why, in memcached's words (`watch connevents`).
        """
        self._greenlet = gevent.getcurrent()
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a unix socket or a test's socketpair): nothing to tune
        try:
            if self._tls and not self._handshake():
                self.close_reason = CLOSE_ERROR
                return
            self._serve()
        except ClientTooSlow:
            self.close_reason = CLOSE_ERROR
            log.info(
                "%s: reply unread for %.0f s; closing", self.peer, self.settings.send_timeout
            )
        except ssl.SSLError as error:
            self.close_reason = CLOSE_ERROR
            log.info("%s: TLS error: %s", self.peer, error.reason or error)
        except OSError as error:
            self.close_reason = CLOSE_ERROR
            if error.errno in _GONE:
                log.debug("%s: connection lost (%s)", self.peer, error.strerror)
            else:
                log.warning("%s: socket error: %s", self.peer, error)
        except gevent.GreenletExit:
            self.close_reason = CLOSE_SHUTDOWN  # server.stop() closes idle connections so
            raise
        finally:
            self.info.state = "conn_closing"
            self._unpoll()
            for watcher in (self._readable, self._writable, self._idle_timer):
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
            self.commands, self.settings, self.auth, self.peer
        )
        self.info.protocol = protocol.name
        # What the lone GET and SET call, looked up once: on the commonest
        # requests each attribute lookup saved shows (callgrind). The
        # command layer's methods are not: a bound method made here would be
        # one more object of this connection's for a request to touch.
        self._lone = protocol.lone
        self._get_reply = protocol.get_reply
        self._store_reply = protocol.store_reply
        self._fresh = self._lone is not None
        while True:
            if self._answer(data, True, self._fd) == _CLOSE:
                break
            if self.stopping:
                data = self._drain()
            else:
                data = self._next_request()
            if data is None:
                break
        watcher = getattr(protocol, "watcher", None)
        if watcher is not None:
            self._watch(watcher)
        elif self.stopping:
            self.close_reason = CLOSE_SHUTDOWN

    # -- answering -------------------------------------------------------

    def _answer(self, data, may_wait: bool, fd: int) -> int:
        """Answer every complete request in the buffer after ``data`` is added,
        and send the replies (once, or every SEND_THRESHOLD bytes).

        ``data`` is bytes read, or _RESUME to go on where a callback stopped.
        ``fd`` is the socket's descriptor: the readiness set passes it to
        ``on_readable``, so a request in the hub does not read ``_fd``,
        which PyPy keeps in an array of its own (one more cache miss a
        request with 1,000 busy connections).
        With ``may_wait`` False (in the hub) a send that would block is not
        waited for: what is left stays in ``_out``, the unanswered requests
        in the parser, and the result is _HAND_OFF.
        """
        if self._logger.requests:
            self._logger.cfd = fd  # `watch` lines name the connection
        if data is not _RESUME:
            self.stats.bytes_read += len(data)
            # The lone GET or SET: a read holding exactly one plain GET or
            # SET, the commonest requests of all, is answered without
            # feeding the parser, building a run or a reply list, through
            # the same command layer. A read holding exactly one multi-get
            # skips the parser too (_answer_run). _fresh says the parser is
            # empty and the protocol allows it (see _after_batch).
            if self._fresh and (lone := self._lone(data)) is not None:
                if lone.__class__ is tuple:
                    reply = self._get_reply(lone[1], self.commands.get_record(lone[0]))
                elif lone.__class__ is GetMany:
                    return self._answer_run(lone, may_wait)
                else:
                    reply = self._store_reply(lone, self.commands.store_request(lone))
                self.info.last_cmd = self._clock()
                try:
                    sent = (
                        _write(fd, reply) if self._nonblocking else self._sock_send(reply)
                    )
                except _SEND_WOULD_BLOCK:
                    sent = 0
                self.stats.bytes_written += sent
                if sent == len(reply):
                    return _DONE
                return self._unsent(memoryview(reply)[sent:], may_wait)
            self._fresh = False  # until _after_batch finds the parser empty again
            self.protocol.parser.feed(data)
        elif self._out and not self._flush(self._out, may_wait):
            return _HAND_OFF
        return self._answer_batch(may_wait)

    def _answer_run(self, run: GetMany, may_wait: bool) -> int:
        """``_answer`` for a read that is exactly one run of GETs (a multi-get):
        the protocol answers it as it would from the parser, without the
        parser. A run too large to write at once goes on in _answer_batch."""
        protocol = self.protocol
        out = self._out
        protocol.answer_gets(run, out, 0)
        if protocol.unfinished is not None:
            return self._answer_batch(may_wait)
        self.info.last_cmd = self._clock()
        if out and not self._flush(out, may_wait):
            return _HAND_OFF
        return _DONE

    def _answer_batch(self, may_wait: bool) -> int:
        """The general case of ``_answer``: every request the parser holds."""
        protocol = self.protocol
        out = self._out
        self.info.state = "conn_parse_cmd"
        next_request = protocol.parser.next
        answer, answer_gets = protocol.answer, protocol.answer_gets
        pending = 0
        try:
            while True:
                if protocol.unfinished is not None:
                    pending = protocol.resume(out)
                else:
                    request = next_request()
                    if request is None:
                        break
                    if request.__class__ is GetMany:
                        pending = answer_gets(request, out, pending)
                    else:
                        pending += answer(request, out)
                    if protocol.closing:
                        break
                if pending >= SEND_THRESHOLD or protocol.unfinished is not None:
                    if out and not self._flush(out, may_wait):
                        return _HAND_OFF
                    pending = 0
        except ProtocolError as error:
            self.close_reason = CLOSE_ERROR
            log.info("%s: protocol error: %s; closing", self.peer, error)
            if error.drop_replies:
                out.clear()
            if error.reply:
                out.append(error.reply)
            protocol.closing = True
        self.info.last_cmd = self._clock()
        if out and not self._flush(out, may_wait):
            return _HAND_OFF
        self._after_batch()
        return _CLOSE if protocol.closing else _DONE

    def _after_batch(self) -> None:
        """Every reply is sent: note what `stats conns` and the lone GET need to know."""
        protocol = self.protocol
        parser = protocol.parser
        # An empty parser holds no part of a request: one property asked,
        # not two, after most batches.
        if parser.empty:
            self.info.state = "conn_waiting"
            self._fresh = protocol.lone is not None
        else:
            self.info.state = "conn_nread" if parser.partial else "conn_waiting"
            self._fresh = False

    # -- waiting for the next request --------------------------------------

    def _next_request(self):
        """The next read to answer, or _RESUME; None when the connection is done.

        A plain connection parks here with its socket in the readiness set,
        and the callback answers requests until something needs this
        greenlet (see the module docstring).
        """
        protocol = self.protocol
        if self._nonblocking and protocol.authenticated:
            return self._park()
        if not self._wait_for_request():
            return None
        try:
            data = self.sock.recv(RECV_SIZE)
        except _WOULD_BLOCK:
            data = self._recv()
        return data or None

    def _park(self):
        if not self._polled:
            self._ready.add(self._fd, self)  # it calls on_readable
            self._polled = True
        if self.settings.idle_timeout and self._idle_timer is None:
            self._start_idle_timer(self.settings.idle_timeout)
        self._parked = True
        try:
            # Only the callbacks below may wake a parked connection; anything
            # else that switches in is a bug, not a wakeup.
            if self._hub.switch() is not _WAKE:
                raise RuntimeError("unexpected switch into a connection")
        finally:
            self._parked = False
        handed, self._handed = self._handed, None
        if handed is _IDLE:
            self.close_reason = CLOSE_IDLE
            log.info("%s: idle for %.0f s; closing", self.peer, self.settings.idle_timeout)
            return None
        if handed is _RESUME or handed:
            return handed
        return None  # EOF

    def on_readable(self, fd: int) -> None:
        """Called by the readiness set, in the hub: answer what arrived, if nothing can block."""
        if not self._parked:
            # The greenlet has the socket (it leaves the set before it takes
            # the socket back, so this is only a late call): not ours to read.
            return
        try:
            data = _read(fd, RECV_SIZE)  # as sock.recv (see _read)
        except BlockingIOError:
            return
        except BaseException as error:
            self._hand_off(error)
            return
        if not data or self.stopping or not self._lock.free:
            self._hand_off(data)
            return
        try:
            outcome = self._answer(data, False, fd)
        except BaseException as error:
            self._hand_off(error)
            return
        if outcome != _DONE:
            self._hand_off(_RESUME if outcome == _HAND_OFF else b"")

    def _hand_off(self, handed) -> None:
        """From the hub: wake the parked greenlet with ``handed`` (or raise it there)."""
        self._unpoll()
        if isinstance(handed, BaseException):
            self._greenlet.throw(handed)
        else:
            self._handed = handed
            self._greenlet.switch(_WAKE)

    def _unpoll(self) -> None:
        """Take the socket out of the readiness set, if it is there."""
        if self._polled:
            self._polled = False
            self._ready.remove(self._fd)

    def _start_idle_timer(self, seconds: float) -> None:
        self._idle_timer = self._hub.loop.timer(seconds)
        self._idle_timer.start(self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        """In the hub: close a parked connection that has been quiet for the idle timeout."""
        timeout = self.settings.idle_timeout
        quiet = self.stats.clock() - self.info.last_cmd
        self._idle_timer.close()
        if quiet < timeout or not self._parked:
            self._start_idle_timer(max(timeout - quiet, 0.001) if quiet < timeout else timeout)
            return
        self._idle_timer = None
        self._hand_off(_IDLE)

    # -- watching the log ------------------------------------------------

    def _watch(self, watcher) -> None:
        """`watch`: send the log lines as the logger buffers them, until the client goes.

        The logger only buffers (a slow watcher loses lines, see ``watch``)
        and arranges a wakeup; this greenlet sends, waiting for the client
        as long as the send timeout allows.
        """
        logger = self._logger
        readable = self._readable
        self.info.state = "conn_watch"
        if readable is None:  # a test's scripted socket: nothing to wait on
            logger.remove(watcher)
            return
        watcher.wake = self._wake_watcher
        readable.start(self._on_watcher_readable)
        try:
            while True:
                data = watcher.take()
                if data:
                    self._flush([data], True)
                    continue
                if self._watch_closed:
                    return
                self._watch_waiting = True
                try:
                    if self._hub.switch() is not _WATCH_WAKE:
                        raise RuntimeError("unexpected switch into a watching connection")
                finally:
                    self._watch_waiting = False
        finally:
            readable.stop()
            logger.remove(watcher)

    def _wake_watcher(self) -> None:
        """Lines arrived (called from wherever they were logged): wake the watcher, later."""
        if self._watch_waiting and not self._watch_woken:
            self._watch_woken = True
            self._hub.loop.run_callback(self._switch_to_watcher)

    def _switch_to_watcher(self) -> None:
        self._watch_woken = False
        if self._watch_waiting:
            self._greenlet.switch(_WATCH_WAKE)

    def _on_watcher_readable(self) -> None:
        """In the hub: a watcher sends nothing memcached reads; notice when it goes."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._watch_closed = True
            self._readable.stop()
            self._wake_watcher()

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
                    self._wait(self._readable)
                except ssl.SSLWantWriteError:
                    self._wait(self._writable)
        log.info("%s: no TLS handshake within %.0f s; closing", self.peer, TLS_HANDSHAKE_TIMEOUT)
        return False

    def _wait(self, watcher) -> None:
        """Wait for one event on ``watcher``; only that watcher may wake this greenlet."""
        watcher.start(self._greenlet.switch, watcher)
        try:
            if self._hub.switch() is not watcher:
                raise RuntimeError("unexpected switch into a connection")
        finally:
            watcher.stop()

    def _wait_for_request(self) -> bool:
        """Wait until the client sends something; False if the idle timeout passes first."""
        if self._readable is None or (self._tls and self.sock.pending()):
            return True
        idle_timeout = self.settings.idle_timeout
        with Timeout(idle_timeout or None, False):
            self._wait(self._readable)
            return True
        self.close_reason = CLOSE_IDLE
        log.info("%s: idle for %.0f s; closing", self.peer, idle_timeout)
        return False

    def _drain(self):
        """While stopping: what the client has already sent, or None when it is all answered.

        A request only partly received is waited for (the server's shutdown
        timeout bounds the wait); otherwise nothing new is waited for.
        """
        try:
            data = self.sock.recv(RECV_SIZE)
        except _WOULD_BLOCK:
            data = self._recv() if self.protocol.parser.partial else b""
        return data or None

    def _recv(self) -> bytes:
        """Receive, waiting for the socket as often as it needs."""
        while True:
            try:
                return self.sock.recv(RECV_SIZE)
            except _WOULD_BLOCK:
                self._wait(self._readable)
            except ssl.SSLWantWriteError:
                self._wait(self._writable)

    def _flush(self, out: list, may_wait: bool) -> bool:
        """Send and empty ``out``; True once all of it is sent.

        With ``may_wait`` False what the socket does not take at once stays
        in ``out`` and the result is False.
        """
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        try:
            sent = _write(self._fd, data) if self._nonblocking else self._sock_send(data)
        except _SEND_WOULD_BLOCK:
            sent = 0
        self.stats.bytes_written += sent
        return sent == len(data) or self._unsent(memoryview(data)[sent:], may_wait) == _DONE

    def _unsent(self, rest: memoryview, may_wait: bool) -> int:
        """The socket took only part of a reply: wait to send the rest, or
        (``may_wait`` False) keep it in ``_out`` for the greenlet."""
        if may_wait:
            self._send_rest(rest, 0)
            return _DONE
        self._out.append(rest)
        return _HAND_OFF

    def _send_rest(self, view: memoryview, sent: int) -> None:
        """The client is not reading fast enough: wait for it, for at most the send timeout."""
        state = self.info.state
        self.info.state = "conn_mwrite"
        with Timeout(self.settings.send_timeout or None, False):
            while sent < len(view):
                self._wait(self._writable)
                try:
                    count = self.sock.send(view[sent:])
                except ssl.SSLWantReadError:
                    self._wait(self._readable)
                except (BlockingIOError, ssl.SSLWantWriteError):
                    pass
                else:
                    sent += count
                    self.stats.bytes_written += count
            self.info.state = state
            return
        raise ClientTooSlow()


class TimedConnection(Connection):
    """A connection whose batches the metrics' latency histogram observes
    (--metrics-port): each ``_answer`` that finishes is timed."""

    __slots__ = ("observe_batch",)

    def __init__(self, *args, observe_batch, **kwargs):
        super().__init__(*args, **kwargs)
        self.observe_batch = observe_batch

    def _answer(self, data, may_wait: bool, fd: int) -> int:
        started = perf_counter()
        outcome = Connection._answer(self, data, may_wait, fd)
        if outcome != _HAND_OFF:
            self.observe_batch(perf_counter() - started)
        return outcome

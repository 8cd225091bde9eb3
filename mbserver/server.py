"""The listening server: StreamServer wiring, the connection limit, signals, stopping.

What lives here: building the store, lock, stats and command layer once,
accepting clients from IP:PORT and/or a unix socket into one bounded pool
with one greenlet each, refusing clients past ``-c`` as memcached does,
stopping on SIGTERM/SIGINT, reloading the TLS certificate on SIGHUP, and
the server's side of the operator commands (``commands.Admin``: shutdown,
cache_memlimit, verbosity, refresh_certs).
What does not: anything a connection does once accepted (``connection``),
the unix socket file's checks (``unixsocket``), TLS files (``tls``).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import time
from typing import Callable

import gevent
import gevent.event
import gevent.socket
from gevent.lock import Semaphore
from gevent.pool import Pool
from gevent.server import StreamServer

from .auth import Authenticator
from .commands import Commands
from .config import Settings
from .connection import Connection, TimedConnection
from .rwlock import RWLock
from .snapshot import Snapshots
from .statgroups import address
from .stats import Stats
from .store import Store
from .tls import TLSFilesError, server_context
from .unixsocket import bind_unix, remove_unix

log = logging.getLogger("mbserver.server")

# Greenlets beyond the connection limit, so clients past it are accepted
# just long enough to be told "too many connections" instead of hanging in
# the listen backlog.
REJECT_SLOTS = 64
BACKLOG = 1024


# cache_memlimit evicts this many items per hold of the store lock, then
# lets other clients run. A slice costs 1-2 ms, plus skipping the slots of
# the items evicted before it (a dict keeps them until it next grows): on
# 1,000,000 items of 100 B the other clients' worst wait was 5-15 ms (a
# busy shared machine), against 1.0-1.4 s for the same eviction in one
# hold (bench/memlimit.py).
EVICT_SLICE = 2000


def log_level(verbosity: int) -> int:
    """The log level for -v given ``verbosity`` times: events, or also a line per connection."""
    return logging.INFO if verbosity <= 0 else logging.DEBUG


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = Store(settings.memory_limit, settings.max_item_size, clock)
        self.lock = RWLock()
        self.stats = Stats(clock)
        self.snapshots = (
            Snapshots(settings.snapshot, self.store, self.lock) if settings.snapshot else None
        )
        self.commands = Commands(
            self.store,
            self.lock,
            self.stats,
            settings,
            admin=self,
            warmup=self.snapshots.progress if self.snapshots else None,
        )
        self.auth = Authenticator(settings.credentials) if settings.credentials else None
        # Swapped whole by refresh_certs and SIGHUP: each connection keeps
        # the context it was accepted with, new ones get the new one.
        self.tls = server_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
        self._ids = itertools.count(1)
        self._connections: dict[int, tuple[Connection, gevent.Greenlet]] = {}
        self._stopped = gevent.event.Event()
        self._stopping = False
        self._resizing = Semaphore()  # one cache_memlimit at a time
        self.metrics = None  # the metrics HTTP server's handle, with --metrics-port
        self._observe_batch = None
        self.pool = Pool(settings.max_connections + REJECT_SLOTS)
        self.listener = None  # IP:PORT's StreamServer
        if settings.host is not None:
            self.listener = StreamServer(
                (settings.host, settings.port),
                self._handle,
                spawn=self.pool,
                backlog=BACKLOG,
            )
        self.unix_listener = None  # --unix-socket's StreamServer, once bound
        self._unix_file = None  # the socket file's identity, once bound (unixsocket)

    @property
    def address(self) -> str | None:
        """IP:PORT as bound (port 0 resolved), or None without a TCP listener."""
        if self.listener is None:
            return None
        host, port = self.listener.address[:2]
        return format_address(host, port)

    def _listeners(self) -> list[StreamServer]:
        return [server for server in (self.listener, self.unix_listener) if server is not None]

    def start(self) -> None:
        """Bind and listen; raises OSError (e.g. EADDRINUSE) if it cannot.

        ``binding`` names the address being bound when it fails.
        """
        settings = self.settings
        try:
            if self.listener is not None:
                self.binding = format_address(settings.host, settings.port)
                self.listener.init_socket()
            if settings.unix_socket is not None:
                self.binding = f"unix:{settings.unix_socket}"
                self._bind_unix()
            if self.snapshots is not None:
                # Only its header, before the first client: the load itself
                # runs behind the open port (start_loading, below).
                self.snapshots.open()
            for listener in self._listeners():
                listener.start()
            # `stats conns` lists the listening sockets first, as memcached.
            if self.listener is not None:
                self.stats.listeners[next(self._ids)] = address(self.address)
            if settings.unix_socket is not None:
                self.stats.listeners[next(self._ids)] = f"unix:{settings.unix_socket}"
            if settings.metrics_port is not None:
                self._start_metrics()
        except BaseException:
            self._close_listeners()
            raise
        where = [self.address] if self.listener is not None else []
        if settings.unix_socket is not None:
            where.append(f"unix:{settings.unix_socket}")
        log.info(
            "listening on %s (memory %d MiB, item size %d bytes, %d connections%s%s)",
            " and ".join(where),
            settings.memory_limit >> 20,
            settings.max_item_size,
            settings.max_connections,
            ", SASL PLAIN required" if self.auth else "",
            ", TLS" if self.tls else "",
        )
        if self.snapshots is not None:
            self.snapshots.start_loading()
            if settings.snapshot_interval:
                self.snapshots.start_periodic(settings.snapshot_interval)

    def _bind_unix(self) -> None:
        settings = self.settings
        raw, replaced, self._unix_file = bind_unix(
            settings.unix_socket, settings.unix_mask, BACKLOG
        )
        if replaced:
            log.warning(
                "replaced the stale socket file %s (no server was listening on it)",
                settings.unix_socket,
            )
        sock = gevent.socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        self.unix_listener = StreamServer(sock, self._handle_unix, spawn=self.pool)

    def _start_metrics(self) -> None:
        # Without IP:PORT (only a unix socket), on loopback.
        host = self.settings.host or "127.0.0.1"
        self.binding = format_address(host, self.settings.metrics_port)
        # Imported only when asked for: prometheus_client costs ~11 MiB.
        from .metrics import start_metrics

        self.metrics = start_metrics(
            host,
            self.settings.metrics_port,
            self.stats,
            self.store,
            self.settings,
            warmup=self.commands.warmup,
            hot_keys=self.commands.hot,
        )
        self._observe_batch = self.metrics.latency.observe
        log.info("metrics on http://%s/metrics", format_address(host, self.metrics.port))

    def _close_listeners(self) -> None:
        """Stop accepting; remove the unix socket file if it is still ours."""
        for listener in self._listeners():
            listener.close()
        if self._unix_file is not None:
            remove_unix(self.settings.unix_socket, self._unix_file)
            self._unix_file = None

    def handle_signals(self) -> None:
        """Stop gracefully on SIGTERM or SIGINT, reload the TLS files on SIGHUP.

        Called before ``start``: a signal sent as soon as the port accepts
        (a supervisor's, a test's) must find the handlers in place, not kill
        the process. The hub runs them once ``serve_forever`` waits.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self._on_signal, signum)
        gevent.signal_handler(signal.SIGHUP, self._on_sighup)

    def serve_forever(self) -> None:
        """Serve until a signal (``handle_signals``) or an allowed `shutdown`
        stops the server, gracefully."""
        self._stopped.wait()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            log.warning("received %s again; exiting now", name)
            os._exit(128 + signum)
        log.info("received %s; stopping (again to exit at once)", name)
        self._begin_stop()

    def _on_sighup(self) -> None:
        if self.settings.tls_cert is None:
            log.info("received SIGHUP; no TLS certificate to reload")
            return
        log.info("received SIGHUP; reloading the TLS certificate and key")
        self.refresh_certs()

    def _begin_stop(self) -> None:
        self._stopping = True
        gevent.spawn(self.stop)

    def stop(self) -> None:
        """Stop accepting; close idle clients now, let busy ones finish.

        A busy connection answers everything its client has already sent,
        then closes; connections still running after --shutdown-timeout are
        closed regardless.
        """
        self._stopping = True
        self.stats.accepting = False
        if self.metrics is not None:
            self.metrics.draining = True
        self._close_listeners()
        for connection, greenlet in list(self._connections.values()):
            if connection.idle:
                greenlet.kill(block=False)
            else:
                connection.stopping = True
        timeout = self.settings.shutdown_timeout
        if not self.pool.join(timeout=timeout):
            log.warning("connections still busy after %.0f s; closing them", timeout)
            self.pool.kill(timeout=1)
        if self.snapshots is not None:
            # Written after the last client is done, so it holds every write
            # they were answered for (and after a load still running has
            # ended, so it holds the whole previous snapshot too). A second
            # signal during it leaves the previous snapshot in place (the
            # write is atomic).
            self.snapshots.stop_periodic()
            self.snapshots.save(final=True)
        if self.metrics is not None:
            self.metrics.stop()
        log.info("stopped")
        self._stopped.set()

    # -- the operator commands (commands.Admin) ------------------------------

    def shutdown(self, graceful: bool) -> None:
        """A client's `shutdown` (or `shutdown graceful`): stop as on SIGTERM."""
        if self._stopping:
            return
        log.info("received shutdown%s from a client; stopping", " graceful" if graceful else "")
        self._begin_stop()

    def set_memory_limit(self, limit_bytes: int) -> None:
        """cache_memlimit: the new -m, evicted down to in slices so that
        other clients are served between them."""
        with self._resizing:
            store, lock = self.store, self.lock
            before = store.evictions + store.reclaimed
            while True:
                with lock.write():
                    done = store.shrink(limit_bytes, EVICT_SLICE)
                if done:
                    break
                gevent.sleep(0)
            log.info(
                "memory limit set to %d MiB (cache_memlimit); %d items evicted",
                limit_bytes >> 20,
                store.evictions + store.reclaimed - before,
            )

    def set_verbosity(self, level: int) -> None:
        logging.getLogger().setLevel(log_level(level))
        log.info("verbosity set to %d (the verbosity command)", level)

    def refresh_certs(self) -> str | None:
        """Load the TLS certificate and key again from their files; None, or
        why the running pair was kept (memcached's words)."""
        settings = self.settings
        if settings.tls_cert is None:
            return "Error TLS not enabled"
        try:
            context = server_context(settings.tls_cert, settings.tls_key)
        except TLSFilesError as error:
            log.warning("kept the running TLS certificate and key: %s", error)
            return str(error)
        self.tls = context
        log.info("reloaded the TLS certificate %s and key %s", settings.tls_cert, settings.tls_key)
        return None

    # -- accepting ---------------------------------------------------------------

    def _handle_unix(self, sock: socket.socket, address: object) -> None:
        # Plain text on the unix socket even with TLS, as memcached (-Z
        # covers its TCP listeners only): the file's permissions guard it.
        self._handle(sock, address, unix=True)

    def _handle(self, sock: socket.socket, address: tuple, unix: bool = False) -> None:
        stats = self.stats
        peer = f"unix:{self.settings.unix_socket}" if unix else format_address(*address[:2])
        if stats.curr_connections >= self.settings.max_connections:
            # Connections whose clients already left are counted until their
            # greenlets run and see it: let them run once before refusing.
            gevent.sleep(0)
        if stats.curr_connections >= self.settings.max_connections:
            stats.rejected_connections += 1
            log.warning("%s: refused, %d connections open", peer, stats.curr_connections)
            try:
                sock.sendall(b"ERROR Too many open connections\r\n")
            except OSError:
                pass
            return
        ident = next(self._ids)
        # The connection drives a plain non-blocking socket itself (see
        # connection.py); the gevent wrapper's descriptor is handed over.
        raw = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        raw.setblocking(False)
        if self.tls is not None and not unix:
            # The handshake runs in this greenlet, under a timeout (connection.py).
            raw = self.tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        if self._observe_batch is None:
            connection = Connection(raw, peer, self.commands, stats, self.settings, self.auth)
        else:
            connection = TimedConnection(
                raw, peer, self.commands, stats, self.settings, self.auth,
                observe_batch=self._observe_batch,
            )
        if unix:
            # `stats conns` shows a unix client as `unix:` (logs keep the path).
            connection.info.peer = "unix"
        stats.curr_connections += 1
        stats.total_connections += 1
        stats.connections[ident] = connection.info
        self._connections[ident] = (connection, gevent.getcurrent())
        log.debug("%s: connected (#%d)", peer, ident)
        logger = self.commands.logger
        # `watch connevents` names a client as memcached's logger does.
        rip, rport, transport = ("unix", 0, b"local") if unix else (*address[:2], b"tcp")
        cfd = raw.fileno()
        if logger.connevents:
            logger.conn_new(rip, rport, transport, cfd)
        try:
            connection.serve()
        finally:
            if logger.connevents:
                logger.conn_close(rip, rport, transport, connection.close_reason, cfd)
            raw.close()
            stats.curr_connections -= 1
            del stats.connections[ident]
            del self._connections[ident]
            log.debug("%s: closed (#%d)", peer, ident)

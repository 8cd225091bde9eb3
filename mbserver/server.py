"""The listening server: StreamServer wiring, the connection limit, signals, stopping.

What lives here: building the store, lock, stats and command layer once,
accepting clients into a bounded pool with one greenlet each, refusing
clients past ``-c`` as memcached does, and stopping on SIGTERM/SIGINT.
What does not: anything a connection does once accepted (``connection``).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import ssl
import time
from typing import Callable

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.server import StreamServer

from .auth import Authenticator
from .commands import Commands
from .config import Settings
from .connection import Connection
from .rwlock import RWLock
from .snapshot import Snapshots
from .statgroups import address
from .stats import Stats
from .store import Store

log = logging.getLogger("mbserver.server")

# Greenlets beyond the connection limit, so clients past it are accepted
# just long enough to be told "too many connections" instead of hanging in
# the listen backlog.
REJECT_SLOTS = 64
BACKLOG = 1024


def tls_context(settings: Settings) -> ssl.SSLContext:
    """A server-side TLS context from --tls-cert and --tls-key (TLS 1.2 or later)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = Store(settings.memory_limit, settings.max_item_size, clock)
        self.lock = RWLock()
        self.stats = Stats(clock)
        self.commands = Commands(self.store, self.lock, self.stats, settings)
        self.auth = Authenticator(settings.credentials) if settings.credentials else None
        self.tls = tls_context(settings) if settings.tls_cert else None
        self._ids = itertools.count(1)
        self._connections: dict[int, tuple[Connection, gevent.Greenlet]] = {}
        self._stopped = gevent.event.Event()
        self._stopping = False
        self.snapshots = (
            Snapshots(settings.snapshot, self.store, self.lock) if settings.snapshot else None
        )
        self.metrics = None  # the metrics HTTP server's handle, with --metrics-port
        self._observe_batch = None
        self.pool = Pool(settings.max_connections + REJECT_SLOTS)
        self.listener = StreamServer(
            (settings.host, settings.port),
            self._handle,
            spawn=self.pool,
            backlog=BACKLOG,
        )

    @property
    def address(self) -> str:
        host, port = self.listener.address[:2]
        return format_address(host, port)

    def start(self) -> None:
        """Bind and listen; raises OSError (e.g. EADDRINUSE) if it cannot.

        ``binding`` names the address being bound when it fails.
        """
        self.binding = format_address(self.settings.host, self.settings.port)
        self.listener.init_socket()  # bind first: a busy port fails before a long load
        if self.snapshots is not None:
            self.snapshots.load()  # before accepting: clients see the whole warm cache
        self.listener.start()
        self.stats.listeners[next(self._ids)] = address(self.address)
        if self.settings.metrics_port is not None:
            self.binding = format_address(self.settings.host, self.settings.metrics_port)
            # Imported only when asked for: prometheus_client costs ~11 MiB.
            from .metrics import start_metrics

            try:
                self.metrics = start_metrics(
                    self.settings.host, self.settings.metrics_port,
                    self.stats, self.store, self.settings,
                )
            except OSError:
                self.listener.close()
                raise
            self._observe_batch = self.metrics.latency.observe
            log.info("metrics on http://%s/metrics", format_address(
                self.settings.host, self.metrics.port))
        log.info(
            "listening on %s (memory %d MiB, item size %d bytes, %d connections%s%s)",
            self.address,
            self.settings.memory_limit >> 20,
            self.settings.max_item_size,
            self.settings.max_connections,
            ", SASL PLAIN required" if self.auth else "",
            ", TLS" if self.tls else "",
        )
        if self.snapshots is not None and self.settings.snapshot_interval:
            self.snapshots.start_periodic(self.settings.snapshot_interval)

    def serve_forever(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self._on_signal, signum)
        self._stopped.wait()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            log.warning("received %s again; exiting now", name)
            os._exit(128 + signum)
        log.info("received %s; stopping (again to exit at once)", name)
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
        self.listener.close()
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
            # they were answered for. A second signal during it leaves the
            # previous snapshot in place (the write is atomic).
            self.snapshots.stop_periodic()
            self.snapshots.save()
        if self.metrics is not None:
            self.metrics.stop()
        log.info("stopped")
        self._stopped.set()

    def _handle(self, sock: socket.socket, address: tuple) -> None:
        stats = self.stats
        peer = format_address(*address[:2]) if address else "unix"
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
        if self.tls is not None:
            # The handshake runs in this greenlet, under a timeout (connection.py).
            raw = self.tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        connection = Connection(
            raw, peer, self.commands, stats, self.settings, self.auth,
            observe_batch=self._observe_batch,
        )
        stats.curr_connections += 1
        stats.total_connections += 1
        stats.connections[ident] = connection.info
        self._connections[ident] = (connection, gevent.getcurrent())
        log.debug("%s: connected (#%d)", peer, ident)
        try:
            connection.serve()
        finally:
            raw.close()
            stats.curr_connections -= 1
            del stats.connections[ident]
            del self._connections[ident]
            log.debug("%s: closed (#%d)", peer, ident)

"""Prometheus metrics and a health check, served over HTTP from the server's own process.

What lives here: ``StatsCollector``, which turns the Stats counters, the
store's figures and the settings into Prometheus metrics when scraped;
``LatencyHistogram``, the per-batch latency histogram the connection loop
feeds; and ``start_metrics``, which serves ``/metrics`` and ``/healthz`` from
a gevent WSGI server in the same hub as the cache. What does not: counting
(``stats``, ``commands``, ``connection`` bump plain attributes as they always
have) or deciding when the server is stopping (``server`` sets
``handle.draining``).

Nothing here runs per request. The counters are read at scrape time, so
serving them costs the cache nothing between scrapes; the histogram costs the
connection loop one ``observe`` call per batch. Reading the figures never
yields and takes no lock: store calls never yield either, so a scrape sees
the store between two calls, never in the middle of one.

Metrics (every counter is zeroed, like memcached's, by ``stats reset``;
Prometheus reads a counter going down as a reset):

  mbserver_commands_total{command,result}   get, touch (with GAT), delete, incr,
                                            decr: hit|miss; cas: hit|miss|badval;
                                            set (every storage command, CAS ones
                                            too, as memcached's cmd_set), flush: any
  mbserver_store_errors_total{reason}       too_large|no_memory
  mbserver_hit_ratio                        get hits / gets since start or reset
  mbserver_current_items, mbserver_current_bytes, mbserver_limit_bytes
  mbserver_items_total, mbserver_items_evicted_total, mbserver_items_reclaimed_total
  mbserver_current_connections, mbserver_max_connections,
  mbserver_connections_total, mbserver_connections_rejected_total
  mbserver_read_bytes_total, mbserver_written_bytes_total
  mbserver_auth_commands_total, mbserver_auth_errors_total
  mbserver_uptime_seconds, mbserver_info{version,memcached_version}
  mbserver_batch_duration_seconds           histogram, one observation per batch
  mbserver_snapshot_loading, mbserver_snapshot_load_progress,
  mbserver_snapshot_loaded_items            with --snapshot: the background load
  mbserver_hot_key_requests{rank,key}       with --hot-keys N: the N hottest keys' estimated
                                            gets and sets (key escaped as in `stats hotkeys`)
  process_*                                 CPU, memory, descriptors (prometheus_client)
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gevent.pool import Pool
from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer
from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from . import MEMCACHED_COMPAT_VERSION, __version__
from .hotkeys import label as hot_key_label

if TYPE_CHECKING:
    from .config import Settings
    from .hotkeys import HotKeys
    from .snapshot import LoadProgress
    from .stats import Stats
    from .storage import ItemStore

log = logging.getLogger("mbserver.metrics")

# From a lone GET to a batch stuck behind a client that reads slowly. A
# one-request batch takes about 20 µs (99% under 50 µs in bench row a), so
# the buckets start at 10 µs: starting at 50 µs would put nearly every
# observation in the first bucket.
LATENCY_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

# Scrapers served at once; more wait in the listen backlog. A scrape takes
# about a millisecond, so this only bounds clients that connect and stall.
HTTP_CONNECTIONS = 16
# Seconds an HTTP client may take over each read or write before it is dropped.
HTTP_TIMEOUT = 10.0

# (command, result, Stats attribute) for mbserver_commands_total.
COMMAND_RESULTS = (
    ("get", "hit", "get_hits"),
    ("get", "miss", "get_misses"),
    ("set", "any", "cmd_set"),
    ("touch", "hit", "touch_hits"),
    ("touch", "miss", "touch_misses"),
    ("delete", "hit", "delete_hits"),
    ("delete", "miss", "delete_misses"),
    ("incr", "hit", "incr_hits"),
    ("incr", "miss", "incr_misses"),
    ("decr", "hit", "decr_hits"),
    ("decr", "miss", "decr_misses"),
    ("cas", "hit", "cas_hits"),
    ("cas", "miss", "cas_misses"),
    ("cas", "badval", "cas_badval"),
    ("flush", "any", "cmd_flush"),
)

# (reason, Stats attribute) for mbserver_store_errors_total.
STORE_ERRORS = (("too_large", "store_too_large"), ("no_memory", "store_no_memory"))

# (metric name without _total, help, Stats attribute) for unlabelled counters.
STATS_COUNTERS = (
    ("mbserver_connections", "Connections accepted.", "total_connections"),
    (
        "mbserver_connections_rejected",
        "Connections refused past the connection limit (-c).",
        "rejected_connections",
    ),
    ("mbserver_read_bytes", "Bytes received from clients.", "bytes_read"),
    ("mbserver_written_bytes", "Bytes sent to clients.", "bytes_written"),
    ("mbserver_auth_commands", "SASL authentication attempts.", "auth_cmds"),
    (
        "mbserver_auth_errors",
        "Failed SASL authentications and commands refused before authentication.",
        "auth_errors",
    ),
)


class LatencyHistogram:
    """How long batches take: from receiving data to handing every reply to the socket.

    One observation per BATCH, not per request: a connection executes every
    request it has buffered and sends their replies together, and the whole
    pass is one observation (one GET, or a pipeline of a thousand). A batch
    whose client reads its replies slowly includes the wait for the client.

    ``observe`` is a bisect and two additions (about 0.2 µs, against
    1.3 µs for a prometheus_client Histogram, which takes a lock per call);
    the buckets are exported at scrape time. Call it from the hub's thread
    only: all greenlets are, and the additions never yield.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS):
        self.bounds = tuple(sorted(bounds))
        # counts[i]: observations at most bounds[i] and above bounds[i-1];
        # the last slot is above every bound (+Inf).
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def metric(self) -> HistogramMetricFamily:
        counts = list(self.counts)  # one consistent copy: nothing yields until it is built
        buckets = []
        cumulative = 0
        for bound, count in zip((*self.bounds, float("inf")), counts):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        return HistogramMetricFamily(
            "mbserver_batch_duration_seconds",
            "Seconds from receiving a batch of requests to handing all its replies "
            "to the socket; one observation per batch, however many requests it holds.",
            buckets=buckets,
            sum_value=self.sum,
        )


class StatsCollector:
    """A prometheus_client collector reading Stats, Store and Settings at scrape time.

    Counters are read by name with getattr, so a Stats without one of them
    (an older or newer Stats) loses that sample instead of failing the scrape.
    """

    def __init__(
        self,
        stats: Stats,
        store: ItemStore,
        settings: Settings,
        latency: LatencyHistogram | None = None,
        warmup: LoadProgress | None = None,
        hot_keys: HotKeys | None = None,
    ):
        self.stats = stats
        self.store = store
        self.settings = settings
        self.latency = latency
        self.warmup = warmup
        self.hot_keys = hot_keys

    def collect(self) -> Iterator[Metric]:
        stats, store = self.stats, self.store

        def counter(name: str, default=None):
            return getattr(stats, name, default)

        commands = CounterMetricFamily(
            "mbserver_commands",
            "Commands executed, by command and result (counts as memcached's stats).",
            labels=("command", "result"),
        )
        for command, result, attribute in COMMAND_RESULTS:
            value = counter(attribute)
            if value is not None:
                commands.add_metric((command, result), value)
        yield commands

        errors = CounterMetricFamily(
            "mbserver_store_errors",
            "Storage commands refused: the item was over -I (too_large) or -m (no_memory).",
            labels=("reason",),
        )
        for reason, attribute in STORE_ERRORS:
            value = counter(attribute)
            if value is not None:
                errors.add_metric((reason,), value)
        yield errors

        hits, misses = counter("get_hits", 0), counter("get_misses", 0)
        yield GaugeMetricFamily(
            "mbserver_hit_ratio",
            "Share of gets that hit since start or `stats reset` (0 before any get); "
            "for a recent ratio use rate() of mbserver_commands_total.",
            value=hits / (hits + misses) if hits + misses else 0.0,
        )

        yield GaugeMetricFamily("mbserver_current_items", "Items stored.", value=len(store))
        yield GaugeMetricFamily(
            "mbserver_current_bytes",
            "Bytes the items are accounted for against -m (key + value + per-item overhead).",
            value=store.bytes,
        )
        yield GaugeMetricFamily(
            "mbserver_limit_bytes", "The memory limit for items (-m).", value=store.limit_bytes
        )
        yield CounterMetricFamily(
            "mbserver_items", "Items stored since start or reset.", value=store.total_items
        )
        yield CounterMetricFamily(
            "mbserver_items_evicted",
            "Live items evicted to make room.",
            value=store.evictions,
        )
        yield CounterMetricFamily(
            "mbserver_items_reclaimed",
            "Expired items dropped, when read or when met by eviction.",
            value=store.reclaimed,
        )

        current = counter("curr_connections")
        if current is not None:
            yield GaugeMetricFamily(
                "mbserver_current_connections", "Client connections open.", value=current
            )
        limit = getattr(self.settings, "max_connections", None)
        if limit is not None:
            yield GaugeMetricFamily(
                "mbserver_max_connections", "The connection limit (-c).", value=limit
            )
        for name, documentation, attribute in STATS_COUNTERS:
            value = counter(attribute)
            if value is not None:
                yield CounterMetricFamily(name, documentation, value=value)

        yield GaugeMetricFamily(
            "mbserver_uptime_seconds",
            "Seconds since the server started.",
            value=max(0.0, stats.clock() - stats.started),
        )
        info = GaugeMetricFamily(
            "mbserver_info",
            "Always 1: the mbserver version and the memcached version it behaves as.",
            labels=("version", "memcached_version"),
        )
        info.add_metric((__version__, MEMCACHED_COMPAT_VERSION), 1)
        yield info

        if self.latency is not None:
            yield self.latency.metric()

        warmup = self.warmup
        if warmup is not None:
            yield GaugeMetricFamily(
                "mbserver_snapshot_loading",
                "1 while the snapshot loads in the background (the cache serves meanwhile).",
                value=1 if warmup.loading else 0,
            )
            yield GaugeMetricFamily(
                "mbserver_snapshot_load_progress",
                "Share of the snapshot's records read by the background load (0 to 1).",
                value=warmup.fraction,
            )
            yield GaugeMetricFamily(
                "mbserver_snapshot_loaded_items",
                "Items the background load has added to the cache.",
                value=warmup.loaded_items,
            )

        if self.hot_keys is not None:
            # As many series as --hot-keys: the rank keeps them apart even
            # if two long keys cut to the same label.
            hot = GaugeMetricFamily(
                "mbserver_hot_key_requests",
                "The hottest keys' gets and sets, estimated from a sample (--hot-keys): "
                "rank 1 is the hottest; the key is escaped as `stats hotkeys` shows it.",
                labels=("rank", "key"),
            )
            for rank, (key, count, *_) in enumerate(self.hot_keys.top(), 1):
                hot.add_metric((str(rank), hot_key_label(key)), count)
            yield hot


def build_registry(
    stats: Stats,
    store: ItemStore,
    settings: Settings,
    latency: LatencyHistogram | None = None,
    warmup: LoadProgress | None = None,
    hot_keys: HotKeys | None = None,
) -> CollectorRegistry:
    """A registry of its own, not prometheus_client's global one: our metrics and process_*."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, store, settings, latency, warmup, hot_keys))
    ProcessCollector(registry=registry)
    return registry


def _plain(environ, start_response, status: str, body: bytes, extra=()) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *extra,
        ],
    )
    # pywsgi sends whatever body it is given, even to a HEAD.
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]


class MetricsServer:
    """The handle ``start_metrics`` returns: the running HTTP server and its health flag.

    ``draining``: set it to True when a graceful stop begins; ``/healthz``
    then answers 503 ``stopping`` so load balancers stop sending clients,
    while ``/metrics`` keeps serving until ``stop()``. While ``warmup``
    says a snapshot is loading, ``/healthz`` answers 200 (the cache serves,
    with misses for what has not loaded yet) with a body that says how far
    the load has come.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        latency: LatencyHistogram,
        warmup: LoadProgress | None = None,
    ):
        self.registry = registry
        self.latency = latency
        self.warmup = warmup
        self.draining = False
        self._metrics_app = make_wsgi_app(registry)
        self._http: WSGIServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the HTTP server listens on: the port if 0 was asked for."""
        return self._http.address[:2]

    @property
    def port(self) -> int:
        return self._http.address[1]

    def app(self, environ, start_response) -> list[bytes]:
        """The WSGI application: /metrics, /healthz, and 404 for anything else."""
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            # prometheus_client's app: text or OpenMetrics by Accept, gzip, ?name[]=.
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
                return _plain(
                    environ,
                    start_response,
                    "405 Method Not Allowed",
                    b"method not allowed\n",
                    [("Allow", "GET, HEAD")],
                )
            if self.draining:
                return _plain(environ, start_response, "503 Service Unavailable", b"stopping\n")
            if self.warmup is not None and self.warmup.loading:
                body = f"ok, {self.warmup.describe()}\n".encode()
                return _plain(environ, start_response, "200 OK", body)
            return _plain(environ, start_response, "200 OK", b"ok\n")
        body = b"not found: try /metrics or /healthz\n"
        return _plain(environ, start_response, "404 Not Found", body)

    def stop(self, timeout: float = 1.0) -> None:
        """Close the listener; scrapes still running get ``timeout`` seconds to finish."""
        if self._http is not None:
            self._http.stop(timeout=timeout)


class _Handler(WSGIHandler):
    def _handle_client_error(self, ex):
        # A client that went quiet or away while sending its headers: close
        # quietly (pywsgi would print a traceback for it).
        if isinstance(ex, OSError):
            log.debug("%s: HTTP request not completed: %s", self.client_address, ex)
            return None
        return super()._handle_client_error(ex)


class _HTTPServer(WSGIServer):
    handler_class = _Handler

    def handle(self, sock, address):
        # A gevent socket's timeout bounds each wait; the wait still yields.
        sock.settimeout(HTTP_TIMEOUT)
        super().handle(sock, address)


def start_metrics(
    host: str,
    port: int,
    stats: Stats,
    store: ItemStore,
    settings: Settings,
    *,
    latency: LatencyHistogram | None = None,
    warmup: LoadProgress | None = None,
    hot_keys: HotKeys | None = None,
) -> MetricsServer:
    """Serve /metrics and /healthz on host:port from this process's gevent hub.

    Binds before returning (raises OSError, e.g. EADDRINUSE, if it cannot);
    port 0 picks a free port (see ``handle.port``). Pass ``latency`` to
    export a histogram made beforehand; otherwise one is made, as
    ``handle.latency``. ``warmup``: a snapshot load's progress, for
    /healthz and the mbserver_snapshot_* metrics; ``hot_keys``: the
    --hot-keys sketch. Requests are logged at debug level.
    """
    latency = latency if latency is not None else LatencyHistogram()
    registry = build_registry(stats, store, settings, latency, warmup, hot_keys)
    handle = MetricsServer(registry, latency, warmup)
    http = _HTTPServer(
        (host, port),
        handle.app,
        spawn=Pool(HTTP_CONNECTIONS),
        log=LoggingLogAdapter(log, logging.DEBUG),  # a line per scrape: -vv only
        error_log=LoggingLogAdapter(log, logging.ERROR),
    )
    http.start()
    handle._http = http
    return handle

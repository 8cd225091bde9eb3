"""The Prometheus collector, the batch latency histogram and the HTTP app, without sockets.

The collector is scraped through prometheus_client's own text exposition and
parser, so the names and values tested are the ones Prometheus would read.
The WSGI app is called directly with a WSGI environ.
"""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mbserver import MEMCACHED_COMPAT_VERSION, __version__
from mbserver.config import Settings
from mbserver.metrics import (
    COMMAND_RESULTS,
    LATENCY_BUCKETS,
    LatencyHistogram,
    MetricsServer,
    build_registry,
)
from mbserver.hotkeys import HotKeys
from mbserver.snapshot import LoadProgress
from mbserver.stats import COUNTERS, Stats
from mbserver.store import ITEM_OVERHEAD, Mode, Store
from ..items import get_item


def scrape(registry) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape: (sample name, sorted labels) → value."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def families(registry) -> dict[str, str]:
    """Family name → type, as Prometheus reads them."""
    text = generate_latest(registry).decode()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def command(samples, name: str, result: str) -> float:
    return samples[("mbserver_commands_total", (("command", name), ("result", result)))]


@pytest.fixture
def stats(clock) -> Stats:
    return Stats(clock)


@pytest.fixture
def store(clock) -> Store:
    return Store(limit_bytes=1 << 20, max_item_size=1 << 16, clock=clock)


@pytest.fixture
def settings() -> Settings:
    return Settings(memory_limit=1 << 20, max_connections=50)


def test_each_command_and_result_reads_its_stats_counter(stats, store, settings):
    for number, (_, _, attribute) in enumerate(COMMAND_RESULTS, 1):
        setattr(stats, attribute, number * 10)
    samples = scrape(build_registry(stats, store, settings))
    for number, (name, result, _) in enumerate(COMMAND_RESULTS, 1):
        assert command(samples, name, result) == number * 10, (name, result)


def test_every_command_result_names_a_stats_counter():
    # A typo here would silently drop a sample (missing counters are skipped).
    assert {attribute for _, _, attribute in COMMAND_RESULTS} <= set(COUNTERS)


def test_store_errors_by_reason(stats, store, settings):
    stats.store_too_large = 3
    stats.store_no_memory = 4
    samples = scrape(build_registry(stats, store, settings))
    assert samples[("mbserver_store_errors_total", (("reason", "too_large"),))] == 3
    assert samples[("mbserver_store_errors_total", (("reason", "no_memory"),))] == 4


def test_store_figures(stats, store, settings, clock):
    store.store(Mode.SET, b"a", b"x" * 100)
    store.store(Mode.SET, b"b", b"y" * 50, ttl=10)
    store.store(Mode.SET, b"a", b"z" * 10)  # replaces: still two items
    store.evictions = 7
    clock.advance(11)
    assert get_item(store, b"b") is None  # expired: reclaimed on read
    samples = scrape(build_registry(stats, store, settings))
    assert samples[("mbserver_current_items", ())] == 1
    assert samples[("mbserver_current_bytes", ())] == ITEM_OVERHEAD + 1 + 10
    assert samples[("mbserver_limit_bytes", ())] == 1 << 20
    assert samples[("mbserver_items_total", ())] == 3
    assert samples[("mbserver_items_evicted_total", ())] == 7
    assert samples[("mbserver_items_reclaimed_total", ())] == 1


def test_connection_and_traffic_figures(stats, store, settings):
    stats.curr_connections = 5
    stats.total_connections = 42
    stats.rejected_connections = 2
    stats.bytes_read = 1000
    stats.bytes_written = 2000
    stats.auth_cmds = 6
    stats.auth_errors = 1
    samples = scrape(build_registry(stats, store, settings))
    assert samples[("mbserver_current_connections", ())] == 5
    assert samples[("mbserver_max_connections", ())] == 50
    assert samples[("mbserver_connections_total", ())] == 42
    assert samples[("mbserver_connections_rejected_total", ())] == 2
    assert samples[("mbserver_read_bytes_total", ())] == 1000
    assert samples[("mbserver_written_bytes_total", ())] == 2000
    assert samples[("mbserver_auth_commands_total", ())] == 6
    assert samples[("mbserver_auth_errors_total", ())] == 1


def test_metric_types(stats, store, settings):
    types = families(build_registry(stats, store, settings, LatencyHistogram()))
    for name in (
        "mbserver_commands",
        "mbserver_store_errors",
        "mbserver_items",
        "mbserver_items_evicted",
        "mbserver_items_reclaimed",
        "mbserver_connections",
        "mbserver_connections_rejected",
        "mbserver_read_bytes",
        "mbserver_written_bytes",
        "mbserver_auth_commands",
        "mbserver_auth_errors",
    ):
        assert types[name] == "counter", name
    for name in (
        "mbserver_hit_ratio",
        "mbserver_current_items",
        "mbserver_current_bytes",
        "mbserver_limit_bytes",
        "mbserver_current_connections",
        "mbserver_max_connections",
        "mbserver_uptime_seconds",
        "mbserver_info",
    ):
        assert types[name] == "gauge", name
    assert types["mbserver_batch_duration_seconds"] == "histogram"
    assert "process_resident_memory_bytes" in types


def test_hit_ratio(stats, store, settings):
    registry = build_registry(stats, store, settings)
    assert scrape(registry)[("mbserver_hit_ratio", ())] == 0.0  # no gets yet: 0, not NaN
    stats.get_hits, stats.get_misses = 3, 1
    assert scrape(registry)[("mbserver_hit_ratio", ())] == 0.75


def test_uptime_follows_the_stats_clock(stats, store, settings, clock):
    registry = build_registry(stats, store, settings)
    assert scrape(registry)[("mbserver_uptime_seconds", ())] == 0
    clock.advance(90.5)
    assert scrape(registry)[("mbserver_uptime_seconds", ())] == 90.5


def test_info(stats, store, settings):
    samples = scrape(build_registry(stats, store, settings))
    labels = (("memcached_version", MEMCACHED_COMPAT_VERSION), ("version", __version__))
    assert samples[("mbserver_info", labels)] == 1


def test_values_are_read_at_scrape_time(stats, store, settings):
    registry = build_registry(stats, store, settings)
    assert command(scrape(registry), "get", "hit") == 0
    stats.get_hits += 5
    store.store(Mode.SET, b"k", b"v")
    samples = scrape(registry)
    assert command(samples, "get", "hit") == 5
    assert samples[("mbserver_current_items", ())] == 1


def test_stats_reset_shows_as_a_counter_reset(stats, store, settings):
    stats.cmd_set = 9
    registry = build_registry(stats, store, settings)
    assert command(scrape(registry), "set", "any") == 9
    stats.reset()
    assert command(scrape(registry), "set", "any") == 0


def test_a_stats_without_a_counter_loses_that_sample_only(store, settings, clock):
    class OldStats:
        """A Stats from before some counters existed: only a few attributes."""

        def __init__(self):
            self.clock = clock
            self.started = clock()
            self.get_hits = 2
            self.get_misses = 2
            self.curr_connections = 1

    samples = scrape(build_registry(OldStats(), store, settings))
    assert command(samples, "get", "hit") == 2
    assert ("mbserver_commands_total", (("command", "set"), ("result", "any"))) not in samples
    assert ("mbserver_connections_total", ()) not in samples
    assert samples[("mbserver_hit_ratio", ())] == 0.5
    assert samples[("mbserver_current_items", ())] == 0


def test_new_stats_fields_do_not_disturb_the_scrape(stats, store, settings):
    stats.some_future_counter = 12
    samples = scrape(build_registry(stats, store, settings))
    assert command(samples, "get", "miss") == 0


def test_registry_is_not_the_global_one(stats, store, settings):
    registry = build_registry(stats, store, settings)
    assert registry is not prometheus_client.REGISTRY
    assert prometheus_client.REGISTRY.get_sample_value("mbserver_current_items") is None
    # A second registry for a second server in the same process does not clash.
    build_registry(Stats(), store, settings)


# -- the latency histogram -------------------------------------------------


def test_histogram_counts_each_observation_in_its_bucket():
    latency = LatencyHistogram()
    for seconds in (0.00003, 0.00005, 0.00007, 0.003, 0.003, 0.9, 1.0, 2.5):
        latency.observe(seconds)
    # Bounds are inclusive ("le"): 50 µs lands in the 50 µs bucket.
    assert latency.counts[LATENCY_BUCKETS.index(0.00005)] == 2
    assert latency.counts[LATENCY_BUCKETS.index(0.0001)] == 1
    assert latency.counts[LATENCY_BUCKETS.index(0.005)] == 2
    assert latency.counts[LATENCY_BUCKETS.index(1.0)] == 2
    assert latency.counts[-1] == 1  # beyond the last bound
    assert sum(latency.counts) == 8
    assert latency.sum == pytest.approx(4.40615)


def test_histogram_buckets_span_10_microseconds_to_1_second():
    assert LATENCY_BUCKETS[0] == 0.00001
    assert LATENCY_BUCKETS[-1] == 1.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_histogram_is_exported_cumulatively(stats, store, settings):
    latency = LatencyHistogram()
    registry = build_registry(stats, store, settings, latency)
    samples = scrape(registry)
    assert samples[("mbserver_batch_duration_seconds_count", ())] == 0
    for seconds in (0.0002, 0.0002, 0.02, 5.0):
        latency.observe(seconds)
    samples = scrape(registry)

    def bucket(le: str) -> float:
        return samples[("mbserver_batch_duration_seconds_bucket", (("le", le),))]

    assert bucket("5e-05") == 0
    assert bucket("0.00025") == 2
    assert bucket("0.01") == 2
    assert bucket("0.025") == 3
    assert bucket("1.0") == 3
    assert bucket("+Inf") == 4
    assert samples[("mbserver_batch_duration_seconds_count", ())] == 4
    assert samples[("mbserver_batch_duration_seconds_sum", ())] == pytest.approx(5.0204)
    buckets = [
        value for (name, _), value in samples.items()
        if name == "mbserver_batch_duration_seconds_bucket"
    ]  # fmt: skip
    assert len(buckets) == len(LATENCY_BUCKETS) + 1


def test_histogram_with_custom_bounds():
    latency = LatencyHistogram((1.0, 0.1))
    latency.observe(0.5)
    assert latency.bounds == (0.1, 1.0)
    assert latency.counts == [0, 1, 0]


def test_no_histogram_without_one(stats, store, settings):
    assert "mbserver_batch_duration_seconds" not in families(
        build_registry(stats, store, settings)
    )


# -- the HTTP application (called as WSGI, no sockets) ----------------------


def call(app, path: str, method: str = "GET", **environ) -> tuple[str, dict, bytes]:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", **environ}
    response = {}

    def start_response(status, headers, exc_info=None):
        response["status"] = status
        response["headers"] = dict(headers)

    body = b"".join(app(environ, start_response))
    return response["status"], response["headers"], body


@pytest.fixture
def handle(stats, store, settings) -> MetricsServer:
    latency = LatencyHistogram()
    return MetricsServer(build_registry(stats, store, settings, latency), latency)


def test_healthz_is_ok_until_draining(handle):
    status, headers, body = call(handle.app, "/healthz")
    assert (status, body) == ("200 OK", b"ok\n")
    assert headers["Content-Type"].startswith("text/plain")
    handle.draining = True
    status, _, body = call(handle.app, "/healthz")
    assert (status, body) == ("503 Service Unavailable", b"stopping\n")


def test_healthz_says_warming_and_stays_ok_while_a_snapshot_loads(stats, store, settings):
    progress = LoadProgress()
    latency = LatencyHistogram()
    handle = MetricsServer(
        build_registry(stats, store, settings, latency, progress), latency, progress
    )
    progress.loading, progress.file_items, progress.read_items = True, 1000, 420
    progress.loaded_items = 400
    status, _, body = call(handle.app, "/healthz")
    assert (status, body) == (
        "200 OK",
        b"ok, warming: 42% of the snapshot read, 400 of 1000 items loaded\n",
    )
    samples = scrape(handle.registry)
    assert samples[("mbserver_snapshot_loading", ())] == 1
    assert samples[("mbserver_snapshot_load_progress", ())] == 0.42
    assert samples[("mbserver_snapshot_loaded_items", ())] == 400
    progress.loading, progress.read_items, progress.loaded_items = False, 1000, 990
    assert call(handle.app, "/healthz")[2] == b"ok\n"
    samples = scrape(handle.registry)
    assert samples[("mbserver_snapshot_loading", ())] == 0
    assert samples[("mbserver_snapshot_load_progress", ())] == 1.0


def test_the_hottest_keys_with_their_rank_and_escaped_key(stats, store, settings):
    hot = HotKeys(2, rate=1)
    for key, times in ((b"user:1", 5), (b"a key\n", 3), (b"cold", 1)):
        for _ in range(times):
            hot.saw_get(key)
    samples = scrape(build_registry(stats, store, settings, hot_keys=hot))
    hottest = {
        labels: value for (name, labels), value in samples.items()
        if name == "mbserver_hot_key_requests"
    }
    assert hottest == {
        (("key", "user:1"), ("rank", "1")): 5.0,
        (("key", "a%20key%0A"), ("rank", "2")): 3.0,
    }


def test_no_hot_key_or_snapshot_metrics_when_off(handle):
    assert not any(name.startswith("mbserver_hot_key") for name in families(handle.registry))


def test_no_snapshot_metrics_without_a_snapshot(handle):
    assert not any(name.startswith("mbserver_snapshot") for name in families(handle.registry))


def test_healthz_head_has_no_body(handle):
    status, headers, body = call(handle.app, "/healthz", "HEAD")
    assert (status, headers["Content-Length"], body) == ("200 OK", "3", b"")


def test_healthz_refuses_other_methods(handle):
    status, headers, _ = call(handle.app, "/healthz", "POST")
    assert status.startswith("405")
    assert headers["Allow"] == "GET, HEAD"


def test_metrics_in_prometheus_text_format(handle, stats):
    stats.get_hits = 4
    handle.latency.observe(0.001)
    status, headers, body = call(handle.app, "/metrics")
    assert status == "200 OK"
    assert headers["Content-Type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"mbserver_commands", "mbserver_batch_duration_seconds"} <= names
    assert "mbserver_commands_total{command=\"get\",result=\"hit\"} 4.0" in body.decode()


def test_metrics_served_while_draining(handle):
    handle.draining = True
    status, _, _ = call(handle.app, "/metrics")
    assert status == "200 OK"


@pytest.mark.parametrize("path", ["/", "/metrics/", "/health", "/favicon.ico", "/healthz/x"])
def test_other_paths_are_not_found(handle, path):
    status, _, _ = call(handle.app, path)
    assert status == "404 Not Found"


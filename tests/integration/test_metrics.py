"""Metrics over HTTP: /metrics, /healthz and 404s, served from a gevent hub.

Two kinds of test. The first start ``start_metrics`` inside this test
process, in its gevent hub, against a Stats and Store built here, and fetch
from it with gevent sockets (a blocking urllib call in the same process
would stall the hub that has to answer it). The last start
``python -m mbserver --metrics-port`` and drive it with a real client.
"""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import bmemcached
import gevent
import gevent.socket
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mbserver import metrics
from mbserver.config import Settings
from mbserver.metrics import LatencyHistogram, start_metrics
from mbserver.stats import Stats
from mbserver.store import Mode, Store
from mbserver.testing import server_command

from .. import packets as P
from .support import REPO_ROOT, free_port
from .wire import Connection

FETCH_TIMEOUT = 5.0


def fetch(address: tuple, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request over a gevent socket: (status, headers, body)."""
    with gevent.Timeout(FETCH_TIMEOUT):
        sock = gevent.socket.create_connection(address)
        try:
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
            )
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        finally:
            sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert "chunked" not in headers.get("transfer-encoding", "")
    return int(status_line.split()[1]), headers, body


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def get_hits(values: dict) -> float:
    return values[("mbserver_commands_total", (("command", "get"), ("result", "hit")))]


@pytest.fixture
def stats() -> Stats:
    return Stats()


@pytest.fixture
def store() -> Store:
    return Store(limit_bytes=1 << 20)


@pytest.fixture
def handle(stats, store):
    handle = start_metrics("127.0.0.1", 0, stats, store, Settings())
    yield handle
    handle.stop()


# -- in this process, in gevent ---------------------------------------------


def test_metrics_over_http(handle, stats, store):
    stats.get_hits = 3
    store.store(Mode.SET, b"k", b"v")
    handle.latency.observe(0.0002)
    status, headers, body = fetch(handle.address, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    values = samples(body.decode())
    assert get_hits(values) == 3
    assert values[("mbserver_current_items", ())] == 1
    assert values[("mbserver_batch_duration_seconds_count", ())] == 1
    assert values[("process_resident_memory_bytes", ())] > 0


def test_healthz_over_http_until_draining(handle):
    assert fetch(handle.address, "/healthz")[::2] == (200, b"ok\n")
    handle.draining = True
    assert fetch(handle.address, "/healthz")[::2] == (503, b"stopping\n")
    assert fetch(handle.address, "/metrics")[0] == 200


def test_other_paths_are_404(handle):
    assert fetch(handle.address, "/")[0] == 404
    assert fetch(handle.address, "/metrics/x")[0] == 404


def test_head_healthz_has_no_body(handle):
    status, headers, body = fetch(handle.address, "/healthz", "HEAD")
    assert (status, headers["content-length"], body) == (200, "3", b"")


def test_a_given_histogram_is_the_one_exported(stats, store):
    latency = LatencyHistogram()
    handle = start_metrics("127.0.0.1", 0, stats, store, Settings(), latency=latency)
    try:
        assert handle.latency is latency
        for _ in range(5):
            latency.observe(0.003)
        values = samples(fetch(handle.address, "/metrics")[2].decode())
        assert values[("mbserver_batch_duration_seconds_bucket", (("le", "0.005"),))] == 5
    finally:
        handle.stop()


def test_stop_closes_the_port(stats, store):
    handle = start_metrics("127.0.0.1", 0, stats, store, Settings())
    address = handle.address
    handle.stop()
    with pytest.raises(OSError):
        fetch(address, "/healthz")


def test_a_port_in_use_raises(handle, stats, store):
    with pytest.raises(OSError):
        start_metrics("127.0.0.1", handle.port, stats, store, Settings())


def test_ipv6_loopback(stats, store):
    try:
        handle = start_metrics("::1", 0, stats, store, Settings())
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        assert handle.address[0] == "::1"
        assert fetch(handle.address, "/healthz")[0] == 200
    finally:
        handle.stop()


def test_a_stalled_client_does_not_hold_up_scrapes(handle):
    stalled = gevent.socket.create_connection(handle.address)
    try:
        stalled.sendall(b"GET /metr")  # and nothing more
        started = time.monotonic()
        assert fetch(handle.address, "/metrics")[0] == 200
        assert time.monotonic() - started < 1
    finally:
        stalled.close()


def test_a_stalled_client_is_dropped_quietly(handle, monkeypatch, capfd):
    monkeypatch.setattr(metrics, "HTTP_TIMEOUT", 0.2)
    stalled = gevent.socket.create_connection(handle.address)
    try:
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: te")  # headers never finish
        with gevent.Timeout(FETCH_TIMEOUT):
            assert stalled.recv(1024) == b""
    finally:
        stalled.close()
    assert "Traceback" not in capfd.readouterr().err


def test_more_scrapers_than_http_slots(handle):
    jobs = [
        gevent.spawn(fetch, handle.address, "/metrics")
        for _ in range(metrics.HTTP_CONNECTIONS * 3)
    ]
    gevent.joinall(jobs, timeout=FETCH_TIMEOUT * 2, raise_error=True)
    assert [job.value[0] for job in jobs] == [200] * len(jobs)


def test_the_hub_keeps_running_cache_work_during_scrapes(handle):
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.001)

    ticker = gevent.spawn(tick)
    try:
        for _ in range(20):
            assert fetch(handle.address, "/metrics")[0] == 200
    finally:
        ticker.kill()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 5
    assert max(gaps) < 0.5


# -- python -m mbserver --metrics-port ----------------------------------------


def _has_metrics_port() -> bool:
    result = subprocess.run(
        server_command("--help"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return "--metrics-port" in result.stdout


requires_metrics_port = pytest.mark.skipif(
    not _has_metrics_port(), reason="python -m mbserver has no --metrics-port yet"
)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """Blocking fetch from another process's metrics server."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=FETCH_TIMEOUT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@requires_metrics_port
@pytest.mark.usefixtures("mbserver_only")
def test_end_to_end_counters_move(start_server):
    metrics_port = free_port()
    server = start_server("--metrics-port", str(metrics_port))
    _wait_for(lambda: _accepts(metrics_port))
    assert http_get(metrics_port, "/healthz") == (200, b"ok\n")
    before = samples(http_get(metrics_port, "/metrics")[1].decode())

    client = bmemcached.Client([server.address])
    try:
        for i in range(3):
            assert client.set(f"metrics-{i}", "value") is True
        assert client.get("metrics-0") == "value"
        assert client.get("metrics-1") == "value"
        assert client.get("metrics-missing") is None
        status, body = http_get(metrics_port, "/metrics")
        assert status == 200
        after = samples(body.decode())
        assert after[("mbserver_current_connections", ())] >= 1
    finally:
        client.disconnect_all()

    def moved(name: str, labels: tuple = ()) -> float:
        return after[(name, labels)] - before.get((name, labels), 0)

    assert moved("mbserver_commands_total", (("command", "get"), ("result", "hit"))) == 2
    assert moved("mbserver_commands_total", (("command", "get"), ("result", "miss"))) == 1
    assert moved("mbserver_commands_total", (("command", "set"), ("result", "any"))) == 3
    assert after[("mbserver_current_items", ())] == 3
    assert after[("mbserver_current_bytes", ())] > 0
    assert after[("mbserver_hit_ratio", ())] == pytest.approx(2 / 3)
    assert moved("mbserver_connections_total") >= 1
    assert moved("mbserver_read_bytes_total") > 0
    assert moved("mbserver_written_bytes_total") > 0
    assert moved("mbserver_batch_duration_seconds_count") >= 6
    assert http_get(metrics_port, "/nope")[0] == 404


@requires_metrics_port
@pytest.mark.usefixtures("mbserver_only")
def test_healthz_says_stopping_during_a_graceful_stop():
    port, metrics_port = free_port(), free_port()
    proc = subprocess.Popen(
        server_command(
            f"127.0.0.1:{port}", "--metrics-port", str(metrics_port), "--shutdown-timeout", "20"
        ),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(lambda: _accepts(port) and _accepts(metrics_port))
        with Connection("127.0.0.1", port, timeout=10) as conn:
            conn.send(P.get(b"unfinished")[:30])  # a request in progress holds the stop
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            _wait_for(lambda: http_get(metrics_port, "/healthz")[0] == 503)
            assert http_get(metrics_port, "/healthz") == (503, b"stopping\n")
            assert http_get(metrics_port, "/metrics")[0] == 200  # still watchable
            assert proc.poll() is None
        assert proc.wait(timeout=15) == 0
        assert not _accepts(metrics_port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False

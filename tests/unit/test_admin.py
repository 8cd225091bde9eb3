"""The operator commands: shutdown, cache_memlimit, verbosity, refresh_certs.

Two halves, no sockets: the text protocol and command layer against a
``FakeAdmin`` (what they ask of the server, and memcached's replies), and
the server's side of ``commands.Admin`` on a ``Server`` that is never
started (evicting in slices, the log level, swapping the TLS context, the
stop). tests/integration/test_admin.py runs them against real processes
and memcached 1.6.18.
"""

from __future__ import annotations

import logging
import shutil
import ssl

import gevent
import pytest

from mbserver.config import Settings
from mbserver.server import EVICT_SLICE, Server
from mbserver.storage import Mode
from mbserver.testing import parse_stats

from ..certs import make_cert
from .test_text_commands import Client

OK = b"OK\r\n"


def settings_of(client: Client) -> dict:
    return parse_stats(client.send(b"stats settings\r\n"))


# -- the text protocol and the command layer ------------------------------------


class TestShutdown:
    def test_refused_without_enable_shutdown(self, clock):
        client = Client(clock)
        for line in (b"shutdown\r\n", b"shutdown graceful\r\n", b"shutdown bogus\r\n"):
            assert client.send(line) == b"ERROR: shutdown not enabled\r\n"
        assert client.admin.calls == []
        assert client.send(b"version\r\n").startswith(b"VERSION ")  # still open

    @pytest.mark.parametrize(
        "line, graceful", [(b"shutdown\r\n", False), (b"shutdown graceful\r\n", True)]
    )
    def test_with_enable_shutdown_the_server_stops_and_the_connection_closes(
        self, clock, line, graceful
    ):
        client = Client(clock, enable_shutdown=True)
        # Nothing after it is answered, and it has no reply of its own.
        assert client.send(line + b"version\r\n") == b""
        assert client.closed
        assert client.admin.calls == [("shutdown", graceful)]

    @pytest.mark.parametrize(
        "line", [b"shutdown now\r\n", b"shutdown noreply\r\n", b"shutdown graceful x\r\n"]
    )
    def test_an_unknown_mode(self, clock, line):
        client = Client(clock, enable_shutdown=True)
        assert client.send(line) == b"CLIENT_ERROR invalid shutdown mode\r\n"
        assert not client.closed and client.admin.calls == []


class TestVerbosity:
    def test_sets_the_level_and_stats_settings_shows_it(self, clock):
        client = Client(clock)
        assert client.send(b"verbosity 1\r\n") == OK
        assert settings_of(client)["verbosity"] == 1
        assert client.send(b"verbosity 0 noreply\r\n") == b""
        assert settings_of(client)["verbosity"] == 0
        assert client.admin.calls == [("set_verbosity", 1), ("set_verbosity", 0)]

    def test_capped_at_2_as_memcached(self, clock):
        client = Client(clock)
        assert client.send(b"verbosity 9\r\n") == OK
        assert client.admin.calls == [("set_verbosity", 2)]
        assert settings_of(client)["verbosity"] == 2

    def test_a_bad_level_changes_nothing(self, clock):
        client = Client(clock)
        assert client.send(b"verbosity x\r\n") == b"CLIENT_ERROR bad command line format\r\n"
        assert client.admin.calls == []


class TestCacheMemlimit:
    VALUE = b"v" * 1000

    def fill(self, client: Client, megabytes: int) -> int:
        count = (megabytes << 20) // 1200
        for i in range(count):
            client.send(b"set key:%d 0 0 %d noreply\r\n%b\r\n" % (i, len(self.VALUE), self.VALUE))
        return count

    def test_lowers_the_limit_and_evicts_down_to_it(self, clock):
        client = Client(clock, memory_limit=32 << 20)
        count = self.fill(client, 20)
        assert len(client.store) == count  # nothing evicted yet
        assert client.send(b"cache_memlimit 8\r\n") == OK
        assert client.admin.calls == [("set_memory_limit", 8 << 20)]
        assert client.store.bytes <= 8 << 20
        stats = parse_stats(client.send(b"stats\r\n"))
        assert stats["limit_maxbytes"] == 8 << 20
        assert stats["evictions"] == count - stats["curr_items"] > 0
        assert settings_of(client)["maxbytes"] == 8 << 20
        # The oldest went; the newest stayed.
        assert client.send(b"get key:0\r\n") == b"END\r\n"
        assert client.send(b"get key:%d\r\n" % (count - 1)).startswith(b"VALUE ")

    def test_raises_the_limit(self, clock):
        client = Client(clock, memory_limit=8 << 20)
        assert client.send(b"cache_memlimit 100 noreply\r\n") == b""
        assert parse_stats(client.send(b"stats\r\n"))["limit_maxbytes"] == 100 << 20
        assert settings_of(client)["maxbytes"] == 100 << 20

    @pytest.mark.parametrize(
        "line, reply",
        [
            (b"cache_memlimit 7\r\n", b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"),
            (
                b"cache_memlimit 1000000001\r\n",
                b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n",
            ),
            (b"cache_memlimit lots\r\n", b"ERROR\r\n"),
            (b"cache_memlimit\r\n", b"ERROR\r\n"),
        ],
    )
    def test_a_bad_value_changes_nothing(self, clock, line, reply):
        client = Client(clock)
        assert client.send(line) == reply
        assert client.admin.calls == []
        assert settings_of(client)["maxbytes"] == 64 << 20


class TestRefreshCerts:
    def test_ok(self, clock):
        client = Client(clock)
        assert client.send(b"refresh_certs\r\n") == OK
        assert client.send(b"refresh_certs noreply\r\n") == b""
        assert client.admin.calls == [("refresh_certs",), ("refresh_certs",)]

    def test_why_not_even_after_noreply(self, clock):
        client = Client(clock)
        client.admin.certs_problem = "Error loading the key: /k.pem : key values mismatch"
        expected = b"Error loading the key: /k.pem : key values mismatch\r\n"
        assert client.send(b"refresh_certs\r\n") == expected
        assert client.send(b"refresh_certs noreply\r\n") == expected


# -- the server's side (commands.Admin) ------------------------------------------


def test_set_memory_limit_evicts_in_slices_and_lets_others_run():
    server = Server(Settings(memory_limit=64 << 20))
    store = server.store
    with server.lock.write():
        for i in range(20 * EVICT_SLICE):
            store.store(Mode.SET, b"key:%d" % i, b"v" * 100)
    seen: list[tuple[int, bool]] = []

    def other_client():
        while True:
            seen.append((len(store), server.lock.locked))
            gevent.sleep(0)

    watcher = gevent.spawn(other_client)
    gevent.sleep(0)
    target = store.bytes // 4
    server.set_memory_limit(target)
    watcher.kill()
    assert store.bytes <= target and store.limit_bytes == target
    during = [count for count, _ in seen[1:]]
    # The other greenlet ran between slices, each at most EVICT_SLICE items...
    assert len(during) >= 14
    assert all(a - b <= EVICT_SLICE for a, b in zip(during, during[1:]))
    # ...and never found the lock held.
    assert not any(locked for _, locked in seen)


def test_set_verbosity_sets_the_log_level():
    root = logging.getLogger()
    before = root.level
    server = Server(Settings())
    try:
        server.set_verbosity(1)
        assert root.level == logging.DEBUG
        server.set_verbosity(0)
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)


def test_shutdown_stops_once():
    server = Server(Settings(enable_shutdown=True))
    stops = []
    server.stop = lambda: stops.append(1)
    server.shutdown(graceful=False)
    server.shutdown(graceful=True)  # already stopping: nothing more
    gevent.sleep(0)
    assert stops == [1]


def served_certificate(context: ssl.SSLContext) -> bytes:
    """The certificate ``context`` presents, by a handshake in memory (no socket)."""
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out)
    server = context.wrap_bio(s_in, s_out, server_side=True)
    done = set()
    for _ in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
                done.add(end)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if client in done:
            return client.getpeercert(binary_form=True)
    raise AssertionError("no handshake")


def der_of(path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(open(path).read())


def test_refresh_certs_swaps_the_context_or_keeps_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = make_cert(tmp_path / "a"), make_cert(tmp_path / "b")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    server = Server(Settings(tls_cert=str(cert), tls_key=str(key)))
    running = server.tls
    assert served_certificate(running) == der_of(first[0])

    shutil.copy(second[0], cert)  # a new certificate whose key is not there yet
    problem = server.refresh_certs()
    assert problem == f"Error loading the key: {key} : key values mismatch"
    assert server.tls is running  # kept whole: new clients still get the first

    shutil.copy(second[1], key)
    assert server.refresh_certs() is None
    assert server.tls is not running
    assert served_certificate(server.tls) == der_of(second[0])
    assert served_certificate(running) == der_of(first[0])  # what old connections use


def test_refresh_certs_without_tls():
    assert Server(Settings()).refresh_certs() == "Error TLS not enabled"

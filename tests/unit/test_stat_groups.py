"""Unit tests for the stat groups (mbserver.statgroups) through the command layer.

Names and order are memcached 1.6.18's (tests/memcached_stats.py, recorded
from it); values come from the store, the counters and the settings. Every
line must stay `STAT name value`: one token per value. A real Store, Stats
and Commands on a fake clock; text requests go through TextProtocol.
"""

from __future__ import annotations

import re

import pytest

from mbserver.commands import Commands, FlushRequest, Request, StatsRequest
from mbserver.config import Settings
from mbserver.rwlock import RWLock
from mbserver.stats import ConnectionInfo, Stats
from mbserver.store import Mode, Store

from .. import memcached_stats as MC
from .textclient import Client

NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class Server:
    """A store, its counters and the command layer, as a server holds them."""

    def __init__(self, clock, **options):
        self.clock = clock
        self.settings = Settings(**options)
        self.store = Store(self.settings.memory_limit, self.settings.max_item_size, clock=clock)
        self.stats = Stats(clock)
        self.lock = RWLock()
        self.commands = Commands(self.store, self.lock, self.stats, self.settings)

    def group(self, name: bytes = b"", *args: bytes) -> list[tuple[str, str]]:
        result = self.commands.execute(StatsRequest(name, args))
        assert not self.lock.locked
        return result.stats

    def values(self, name: bytes = b"") -> dict[str, str]:
        return dict(self.group(name))


@pytest.fixture
def server(clock) -> Server:
    return Server(clock)


def check_tokens(pairs) -> None:
    for name, value in pairs:
        assert value and not re.search(r"\s", value), (name, value)
        assert not re.search(r"\s", name), name
        if name.rpartition(":")[2] not in MC.TEXT_VALUES:
            assert NUMBER.fullmatch(value), (name, value)


# -- names and order ------------------------------------------------------------


def test_general_has_memcacheds_names_in_order(server):
    pairs = server.group()
    assert tuple(name for name, _ in pairs) == MC.GENERAL
    check_tokens(pairs)


def test_settings_has_memcacheds_names_in_order(server):
    pairs = server.group(b"settings")
    assert tuple(name for name, _ in pairs) == MC.SETTINGS
    check_tokens(pairs)


def test_items_and_slabs_have_memcacheds_names_per_class(server):
    server.store.store(Mode.SET, b"small", b"x")
    server.store.store(Mode.SET, b"large", b"x" * 3000)
    items = server.group(b"items")
    assert [name for name, _ in items] == [
        f"items:{cls}:{suffix}" for cls in (1, 17) for suffix in MC.ITEMS
    ]
    slabs = server.group(b"slabs")
    assert [name for name, _ in slabs] == [
        f"{cls}:{suffix}" for cls in (1, 17) for suffix in MC.SLABS
    ] + list(MC.SLABS_TOTALS)
    check_tokens(items + slabs)


def test_an_empty_store_has_no_classes(server):
    assert server.group(b"items") == []
    assert server.group(b"slabs") == [("active_slabs", "0"), ("total_malloced", "0")]
    assert server.group(b"sizes") == []


# -- values -----------------------------------------------------------------------


def test_general_values(server, clock):
    server.stats.listeners[1] = "tcp:127.0.0.1:11211"
    server.stats.curr_connections = 3
    server.commands.execute(Request("set", b"k", b"v"))
    server.commands.get_record(b"k")
    clock.advance(7)
    values = server.values()
    assert values["uptime"] == "7"
    assert values["connection_structures"] == "4"  # three clients and the listener
    assert values["libevent"].startswith(("libev-", "libuv-", "gevent-"))
    assert values["curr_items"] == "1" and values["bytes"] == str(server.store.bytes)
    assert values["threads"] == "1" and values["accepting_conns"] == "1"
    assert int(values["hash_bytes"]) > 0


def test_settings_values_follow_the_settings(clock):
    server = Server(
        clock,
        host="::1",
        port=22122,
        memory_limit=128 << 20,
        max_item_size=2 << 20,
        max_connections=77,
        idle_timeout=30.0,
        unix_socket="/run/my cache.sock",
        unix_mask=0o755,
        enable_shutdown=True,
        prefix_delimiter="#",
        tls_cert="/etc/cert.pem",
        tls_key="/etc/key.pem",
        snapshot="/var/lib/mb.snap",
        credentials=(("u", "p"),),
    )
    values = server.values(b"settings")
    expected = {
        "maxbytes": str(128 << 20),
        "maxconns": "77",
        "tcpport": "22122",
        "inter": "::1",
        "domain_socket": "/run/my%20cache.sock",  # one token: the space escaped
        "umask": "755",
        "shutdown_command": "yes",
        "stat_key_prefix": "#",
        "item_size_max": str(2 << 20),
        "slab_chunk_max": "524288",
        "idle_timeout": "30",
        "ssl_enabled": "yes",
        "ssl_chain_cert": "/etc/cert.pem",
        "ssl_key": "/etc/key.pem",
        "auth_enabled_sasl": "yes",
        "memory_file": "/var/lib/mb.snap",
        "binding_protocol": "auto-negotiate",
        "lru_segmented": "no",
    }
    assert {name: values[name] for name in expected} == expected
    check_tokens(server.group(b"settings"))


def test_settings_follow_the_runtime_switches(server, clock):
    values = server.values(b"settings")
    assert (values["detail_enabled"], values["lru_crawler"], values["oldest"]) == ("no", "yes", "0")
    server.commands.execute(StatsRequest(b"detail", (b"on",)))
    server.commands.crawler.disable()
    server.commands.crawler.tocrawl = 50
    clock.advance(10)
    server.commands.execute(FlushRequest())
    values = server.values(b"settings")
    assert (values["detail_enabled"], values["lru_crawler"]) == ("yes", "no")
    assert values["lru_crawler_tocrawl"] == "50"
    # memcached's clock starts 62 s early, and "oldest" is a second before the flush.
    assert values["oldest"] == str(10 + 61)


def test_small_item_limits_make_smaller_classes(clock):
    server = Server(clock, memory_limit=1 << 20, max_item_size=1024)
    server.store.store(Mode.SET, b"k", b"x" * 900)
    assert server.values(b"settings")["slab_chunk_max"] == "1024"
    assert server.values(b"slabs")["11:chunk_size"] == "1024"


def test_items_values(server, clock):
    store = server.store
    store.store(Mode.SET, b"a", b"x")
    clock.advance(42)
    store.store(Mode.SET, b"b", b"x", flags=9)
    store.get_record(b"a")
    values = server.values(b"items")
    assert values["items:1:number"] == values["items:1:number_cold"] == "2"
    assert values["items:1:number_hot"] == "0"
    assert values["items:1:age"] == "42"
    assert values["items:1:mem_requested"] == str(61 + 65)  # 59 + key + value (+ 4 for flags)
    assert values["items:1:hits_to_cold"] == "1"


def test_slabs_count_the_pages_memcached_would_use(server):
    for i in range(10923):  # one more than a page of class 1 holds
        server.store.store(Mode.SET, b"k%d" % i, b"")
    values = server.values(b"slabs")
    assert values["1:chunks_per_page"] == "10922"
    assert (values["1:total_pages"], values["1:used_chunks"]) == ("2", "10923")
    assert values["1:free_chunks"] == str(2 * 10922 - 10923)
    assert values["total_malloced"] == str(2 << 20)
    assert values["1:cmd_set"] == "10923"


def test_sizes_buckets_are_memcacheds(server):
    store = server.store
    store.store(Mode.SET, b"k", b"x" * 10)  # 59 + 1 + 10 = 70 -> 96
    store.store(Mode.SET, b"j", b"x" * 1)  # 61 -> 64
    store.store(Mode.SET, b"f", b"x" * 1, flags=1)  # 65 with the flags -> 96
    assert server.group(b"sizes") == [("64", "1"), ("96", "2")]


def test_sizes_can_be_disabled_and_enabled(server):
    server.store.store(Mode.SET, b"k", b"x")
    assert server.group(b"sizes_disable") == [("sizes_status", "disabled")]
    assert server.group(b"sizes") == [("sizes_status", "disabled")]
    assert server.values(b"settings")["track_sizes"] == "no"
    assert server.group(b"sizes_enable") == [("sizes_status", "enabled")]
    assert server.group(b"sizes") == [("64", "1")]


def test_conns_lists_listeners_then_clients(server, clock):
    stats = server.stats
    stats.listeners[1] = "tcp6:[::1]:11211"
    stats.listeners[2] = "unix:/tmp/mb.sock"
    stats.connections[3] = ConnectionInfo("[::1]:40000", clock())
    stats.connections[4] = ConnectionInfo("unix", clock())
    clock.advance(3)
    pairs = server.group(b"conns")
    check_tokens(pairs)
    assert dict(pairs) == {
        "1:addr": "tcp6:[::1]:11211",
        "1:state": "conn_listening",
        "1:secs_since_last_cmd": "3",
        "2:addr": "unix:/tmp/mb.sock",
        "2:state": "conn_listening",
        "2:secs_since_last_cmd": "3",
        "3:addr": "tcp6:[::1]:40000",
        "3:listen_addr": "tcp6:[::1]:11211",
        "3:state": "conn_new_cmd",
        "3:secs_since_last_cmd": "3",
        "4:addr": "unix:",
        "4:listen_addr": "unix:/tmp/mb.sock",
        "4:state": "conn_new_cmd",
        "4:secs_since_last_cmd": "3",
    }


# -- the counters per class add up to the global ones ----------------------------

SUMMED = ("get_hits", "cmd_set", "delete_hits", "incr_hits", "decr_hits", "cas_hits",
          "cas_badval", "touch_hits")  # fmt: skip


def test_per_class_counters_add_up_to_the_global_ones(clock):
    client = Client(clock)
    client.send(
        b"set a 0 0 1\r\nx\r\nset big 0 0 3000\r\n" + b"y" * 3000 + b"\r\n"
        b"get a big nope\r\nget a\r\ngets big\r\ngat 100 a nope\r\ntouch big 10\r\n"
        b"add a 0 0 1\r\nz\r\nreplace nope 0 0 1\r\nz\r\nappend a 0 0 2\r\nzz\r\n"
        b"set n 0 0 2\r\n99\r\nincr n 1\r\ndecr n 5\r\nincr nope 1\r\n"
        b"gets n\r\ncas n 0 0 1 999\r\n1\r\ncas n 0 0 1 6\r\n2\r\ncas nope 0 0 1 1\r\n1\r\n"
        b"mg a v\r\nmg big T30\r\nmg nope\r\nms m 2\r\nhi\r\nma n\r\nmd m\r\ndelete a\r\n"
        b"delete nope\r\n"
    )
    counters = client.store.counters
    for name in SUMMED:
        assert getattr(client.stats, name) == counters.total(name), name
    assert client.stats.cmd_set == 10
    assert (client.stats.cas_badval, client.stats.cas_hits) == (1, 1)


def test_reset_zeroes_what_memcached_zeroes(clock):
    client = Client(clock)
    client.send(b"stats detail on\r\nset a:1 0 0 1\r\nx\r\nget a:1\r\nlru_crawler crawl all\r\n")
    assert client.send(b"stats reset\r\n") == b"RESET\r\n"
    values = dict(
        line.split(" ", 2)[1:]
        for line in client.send(b"stats\r\n").decode().splitlines()
        if line.startswith("STAT")
    )
    assert values["get_hits"] == values["cmd_set"] == values["lru_crawler_starts"] == "0"
    assert values["curr_items"] == "1"  # items stay
    assert client.store.counters.total("get_hits") == 0
    assert client.send(b"stats detail dump\r\n") == b"END\r\n"
    assert b"STAT items:1:number 1\r\n" in client.send(b"stats items\r\n")

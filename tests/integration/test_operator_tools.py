"""Operators' tools against mbserver: Debian's memcached-tool, and a Prometheus exporter's scrape.

memcached-tool (Perl, shipped with Debian's memcached) is run unchanged;
its output for mbserver is checked, and its dump compared with its dump of
a memcached holding the same items. The exporter check parses `stats`,
`stats slabs`, `stats items` and `stats settings` the way
prometheus/memcached_exporter (pkg/exporter/exporter.go, with its gomemcache
client) does, and requires every field it reads to be there and to parse:
a missing or malformed one makes it report the server as down
(memcached_up 0). The same scrape of memcached 1.6.18 must pass too, which
keeps the check honest.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from .support import Launcher, require_tool

MEMCACHED_TOOL = Path("/usr/share/memcached/scripts/memcached-tool")
IO_TIMEOUT = 10.0

ITEMS = [
    # (key, flags, exptime, value): classes 1, 1, 8 (59 + 9 + 313 + 4 = 385 > 384) and 17
    (b"user:1", 0, 0, b"alice"),
    (b"user:2", 7, 3600, b"bob"),
    (b"page:home", 3, 0, b"<html>" + b"x" * 300 + b"</html>"),
    (b"blob", 0, 0, b"z" * 3000),
]


def store_items(server) -> None:
    data = b"".join(
        b"set %b %d %d %d\r\n%b\r\n" % (key, flags, exptime, len(value), value)
        for key, flags, exptime, value in ITEMS
    )
    with socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT) as s:
        s.sendall(data + b"get user:1 blob\r\n")
        out = b""
        while not out.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            assert chunk
            out += chunk
    assert out.count(b"STORED\r\n") == len(ITEMS)


@pytest.fixture(scope="module")
def memcached_tool() -> list[str]:
    perl = require_tool("perl")
    if not MEMCACHED_TOOL.is_file():
        message = f"{MEMCACHED_TOOL} is missing (Debian's memcached package ships it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (required when CI=true)")
        pytest.skip(message)
    return [perl, str(MEMCACHED_TOOL)]


@pytest.fixture(scope="module")
def servers():
    """mbserver and memcached holding the same items."""
    ours, theirs = Launcher("mbserver"), Launcher("memcached")
    pair = ours.start(), theirs.start()
    for server in pair:
        store_items(server)
    yield pair
    ours.stop_all()
    theirs.stop_all()


def run_tool(tool: list[str], server, *mode: str) -> str:
    result = subprocess.run(
        [*tool, server.address, *mode], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- memcached-tool ---------------------------------------------------------------------


def test_display_lists_the_populated_classes(memcached_tool, servers):
    ours, theirs = (run_tool(memcached_tool, server, "display") for server in servers)
    header, *rows = ours.splitlines()
    assert header.split() == [
        "#", "Item_Size", "Max_age", "Pages", "Count", "Full?", "Evicted", "Evict_Time", "OOM",
    ]  # fmt: skip
    table = {int(row.split()[0]): row.split() for row in rows}
    assert sorted(table) == [1, 8, 17]
    assert table[1][1] == "96B" and table[1][4] == "2"  # two items in the 96-byte class
    assert table[17][1] == "3.5K" and table[17][4] == "1"
    assert all(row[3] == "1" and re.fullmatch(r"\d+s", row[2]) for row in table.values())

    def columns(output):  # what both must agree on: class, size, pages, count, full
        return [(r.split()[0], r.split()[1], r.split()[3], r.split()[4], r.split()[5])
                for r in output.splitlines()[1:]]  # fmt: skip

    assert columns(ours) == columns(theirs)


def test_stats_and_settings_show_every_field(memcached_tool, servers):
    ours, theirs = servers
    stats = run_tool(memcached_tool, ours, "stats")
    assert stats.splitlines()[0].split() == [f"#{ours.address}", "Field", "Value"]
    values = dict(line.split() for line in stats.splitlines()[1:])
    assert values["curr_items"] == str(len(ITEMS))
    assert values["version"] == "1.6.18"
    their_stats = run_tool(memcached_tool, theirs, "stats")
    assert set(values) == {line.split()[0] for line in their_stats.splitlines()[1:]}

    settings = run_tool(memcached_tool, ours, "settings")
    values = dict(line.split() for line in settings.splitlines()[1:])
    assert (values["item_size_max"], values["chunk_size"], values["growth_factor"]) == (
        "1048576",
        "48",
        "1.25",
    )
    their_settings = run_tool(memcached_tool, theirs, "settings")
    assert set(values) == {line.split()[0] for line in their_settings.splitlines()[1:]}


def parse_dump(output: bytes) -> dict[bytes, tuple[int, bool, bytes]]:
    """memcached-tool's dump: `add KEY FLAGS EXPTIME LEN` lines, each with its value."""
    items = {}
    rest = output
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        verb, key, flags, exptime, length = line.split(b" ")
        assert verb == b"add"
        value, rest = rest[: int(length)], rest[int(length) + 2 :]
        items[key] = (int(flags), int(exptime) != 0, value)
    return items


def test_dump_prints_every_item_as_memcacheds(memcached_tool, servers):
    dumps = []
    for server in servers:
        result = subprocess.run(
            [*memcached_tool, server.address, "dump"], capture_output=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        dumps.append(parse_dump(result.stdout))
    ours, theirs = dumps
    expected = {key: (flags, exptime != 0, value) for key, flags, exptime, value in ITEMS}
    assert ours == expected == theirs


# -- the Prometheus exporter's scrape -------------------------------------------------------


def read_stats(sock_file, command: bytes) -> list[bytes]:
    sock_file.write(command)
    sock_file.flush()
    lines = []
    while (line := sock_file.readline()) != b"END\r\n":
        assert line, f"closed during {command!r}"
        assert not line.startswith(b"CLIENT_ERROR"), line
        lines.append(line)
    return lines


def scrape(server) -> tuple[dict, dict, dict, dict]:
    """(stats, items by class, slabs by class, settings) as gomemcache parses them."""
    with socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT) as s:
        f = s.makefile("rwb")
        general: dict[str, str] = {}
        slabs: dict[int, dict[str, str]] = {}
        items: dict[int, dict[str, str]] = {}
        for command in (b"stats\r\n", b"stats slabs\r\n", b"stats items\r\n"):
            for line in read_stats(f, command):
                fields = line.split(b" ")
                if len(fields) != 3 or not fields[0].startswith(b"STAT"):
                    continue  # gomemcache skips such lines (so a value with a space is lost)
                name = fields[1].decode().split(":")
                value = fields[2].strip().decode()
                if len(name) == 1:
                    general[name[0]] = value
                elif len(name) == 2:
                    slabs.setdefault(int(name[0]), {})[name[1]] = value  # ParseInt, or fail
                elif len(name) == 3:
                    items.setdefault(int(name[1]), {})[name[2]] = value
        settings: dict[str, str] = {}
        for line in read_stats(f, b"stats settings\r\n"):
            fields = line.split(b" ")
            assert len(fields) in (3, 4), f"the exporter fails on {line!r}"
            settings[fields[1].decode()] = fields[2].strip().decode()
    return general, items, slabs, settings


def number(values: dict, key: str) -> None:
    assert key in values, f"missing {key}"
    float(values[key])  # strconv.ParseFloat


def timeval(values: dict, key: str) -> None:
    seconds, micros = values[key].split(".")
    float(seconds), float(micros)


def boolean(values: dict, key: str) -> None:
    assert values[key] in ("yes", "no"), (key, values[key])


# What exporter.go reads. Required: a missing one fails the scrape (cmd_set,
# the CAS fields summed with it); the rest are skipped when absent but must
# parse when present, and mbserver prints them all.
GENERAL_FIELDS = (
    "uptime", "time", "cas_badval", "cmd_flush", "cmd_set", "cas_misses", "cas_hits",
    "bytes", "limit_maxbytes", "curr_items", "total_items", "bytes_read", "bytes_written",
    "curr_connections", "total_connections", "rejected_connections", "conn_yields",
    "listen_disabled_num", "evictions", "reclaimed", "store_too_large", "store_no_memory",
    "lru_crawler_starts", "direct_reclaims", "crawler_items_checked", "crawler_reclaimed",
    "moves_to_cold", "moves_to_warm", "moves_within_lru", "total_malloced", "accepting_conns",
    *(f"{op}_{result}" for op in ("get", "delete", "incr", "decr", "cas", "touch")
      for result in ("hits", "misses")),
)  # fmt: skip
ITEM_FIELDS = (
    "number", "age", "hits_to_hot", "hits_to_warm", "hits_to_cold", "hits_to_temp",
    "crawler_reclaimed", "evicted", "evicted_nonzero", "evicted_time", "evicted_unfetched",
    "expired_unfetched", "outofmemory", "reclaimed", "tailrepairs", "mem_requested",
    "moves_to_cold", "moves_to_warm", "moves_within_lru", "number_hot", "number_warm",
    "number_cold", "age_hot", "age_warm",
)  # fmt: skip
SLAB_FIELDS = (
    "get_hits", "delete_hits", "incr_hits", "decr_hits", "cas_hits", "touch_hits",
    "cas_badval", "cmd_set", "chunk_size", "chunks_per_page", "total_pages", "total_chunks",
    "used_chunks", "free_chunks", "free_chunks_end",
)  # fmt: skip
SETTINGS_FIELDS = (
    "maxconns", "lru_crawler_sleep", "lru_crawler_tocrawl", "hot_lru_pct", "warm_lru_pct",
    "hot_max_factor", "warm_max_factor",
)  # fmt: skip


@pytest.mark.parametrize("kind", ["mbserver", "memcached"])
def test_an_exporter_scrape_finds_every_field_it_reads(servers, kind):
    server = servers[0] if kind == "mbserver" else servers[1]
    general, items, slabs, settings = scrape(server)
    assert general["version"]
    for key in GENERAL_FIELDS:
        number(general, key)
    timeval(general, "rusage_user")
    timeval(general, "rusage_system")
    assert sorted(items) == sorted(slabs) == [1, 8, 17]
    for values in items.values():
        for key in ITEM_FIELDS:
            number(values, key)
    for values in slabs.values():
        for key in SLAB_FIELDS:
            number(values, key)
    assert settings["lru_crawler"] == "yes"  # then the exporter reads the crawler's settings
    for key in SETTINGS_FIELDS:
        number(settings, key)
    boolean(settings, "lru_crawler")
    boolean(settings, "lru_maintainer_thread")

"""Unit tests for mbserver.commands: semantics, statistics, stat groups, locking.

A real Store, RWLock and Stats on a fake clock. The counters are compared with
what memcached 1.6.18 counts for the same binary-protocol requests.
"""

from __future__ import annotations

import os

import gevent
import pytest

from mbserver.commands import (
    Commands,
    FlushRequest,
    MetaRequest,
    Request,
    Result,
    StatsRequest,
)
from mbserver.config import Settings
from mbserver.hotkeys import HotKeys
from mbserver.rwlock import RWLock
from mbserver.snapshot import LoadProgress
from mbserver.stats import COUNTERS, ConnectionInfo, Stats
from mbserver.record import MEMCACHED_ITEM_HEADER, unpack
from mbserver.store import (
    EXISTS,
    NO_MEMORY,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    OK,
    TOO_LARGE,
    Mode,
    Store,
)

# What PROTOCOL.md says a bare STAT returns.
GENERAL_KEYS = (
    "pid",
    "uptime",
    "time",
    "version",
    "curr_connections",
    "total_connections",
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "get_hits",
    "get_misses",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "curr_items",
    "total_items",
    "bytes",
    "limit_maxbytes",
    "evictions",
    "bytes_read",
    "bytes_written",
    "threads",
)


def make_request(command: str, key: bytes = b"", **fields):
    """The request a codec makes for ``command``: stats and flush have their own types."""
    if command == "stats":
        return StatsRequest(key)
    if command == "flush":
        return FlushRequest(fields.get("exptime", 0))
    return Request(command, key, **fields)


def execute(commands: Commands, request):
    """``Commands.execute``, and "get" as both codecs deliver it: ``get_record``."""
    if request.command == "get":
        record = commands.get_record(request.key)
        if record is None:
            return Result(NOT_FOUND)
        item = unpack(record)
        return Result(OK, item.cas, item)
    return commands.execute(request)


class Harness:
    def __init__(self, clock, store: Store | None = None, settings: Settings | None = None):
        self.clock = clock
        self.settings = settings or Settings()
        if store is None:
            store = Store(self.settings.memory_limit, self.settings.max_item_size, clock=clock)
        self.store = store
        self.lock = RWLock()
        self.stats = Stats(clock)
        self.commands = Commands(self.store, self.lock, self.stats, self.settings)

    def run(self, command: str, key: bytes = b"", **fields):
        result = execute(self.commands, make_request(command, key, **fields))
        assert not self.lock.locked, f"{command} returned with the lock held"
        return result

    def counters(self) -> dict[str, int]:
        return {name: getattr(self.stats, name) for name in COUNTERS}

    def changed(self, before: dict[str, int]) -> dict[str, int]:
        after = self.counters()
        return {
            name: after[name] - before[name] for name in COUNTERS if after[name] != before[name]
        }

    def delta(self, command: str, key: bytes = b"", **fields):
        """Run one command; return its result and the counters it changed."""
        before = self.counters()
        result = self.run(command, key, **fields)
        return result, self.changed(before)

    def stat_group(self, group: bytes = b"") -> dict[str, str] | None:
        result = self.run("stats", group)
        if result.status is NOT_FOUND:
            return None
        names = [name for name, _ in result.stats]
        assert len(names) == len(set(names)), f"duplicate stat names in {group!r}"
        assert all(isinstance(v, str) for _, v in result.stats)
        return dict(result.stats)


@pytest.fixture
def h(clock) -> Harness:
    return Harness(clock)


# -- commands and their counters --------------------------------------------


class TestGet:
    def test_miss(self, h):
        result, changed = h.delta("get", b"k")
        assert result.status is NOT_FOUND and result.item is None
        assert changed == {"cmd_get": 1, "get_misses": 1}

    def test_hit(self, h):
        _, cas = h.store.store(Mode.SET, b"k", b"v", 3)
        result, changed = h.delta("get", b"k")
        assert result.status is OK
        assert (result.item.value, result.item.flags, result.cas) == (b"v", 3, cas)
        assert changed == {"cmd_get": 1, "get_hits": 1}


class TestStorage:
    def test_set_add_replace_append_prepend(self, h):
        assert h.run("set", b"k", value=b"b", flags=5).status is OK
        assert h.run("add", b"k", value=b"x").status is NOT_STORED
        assert h.run("replace", b"k", value=b"c").status is OK
        assert h.run("append", b"k", value=b"d").status is OK
        assert h.run("prepend", b"k", value=b"a").status is OK
        assert h.run("replace", b"missing", value=b"x").status is NOT_STORED
        assert h.run("append", b"missing", value=b"x").status is NOT_STORED
        assert h.stats.cmd_set == 7
        item = h.run("get", b"k").item
        assert (item.value, item.flags) == (b"acd", 0)

    def test_the_result_cas_is_the_item_cas(self, h):
        result = h.run("set", b"k", value=b"v")
        assert result.cas and h.run("get", b"k").cas == result.cas

    def test_exptime_is_passed_through(self, h, clock):
        h.run("set", b"k", value=b"v", exptime=10)
        clock.advance(10)
        assert h.run("get", b"k").status is NOT_FOUND

    @pytest.mark.parametrize("command", ["set", "add", "replace"])
    def test_cas_counters(self, h, command):
        cas = h.run("set", b"k", value=b"v").cas
        result, changed = h.delta(command, b"k", value=b"w", cas=cas + 1)
        assert result.status is EXISTS
        assert changed == {"cmd_set": 1, "cas_badval": 1}
        result, changed = h.delta(command, b"k", value=b"w", cas=cas)
        assert result.status is OK
        assert changed == {"cmd_set": 1, "cas_hits": 1}
        result, changed = h.delta(command, b"missing", value=b"w", cas=cas)
        assert result.status is NOT_FOUND
        assert changed == {"cmd_set": 1, "cas_misses": 1}

    @pytest.mark.parametrize("command", ["append", "prepend"])
    def test_append_with_cas_counts_no_cas_stats(self, h, command):
        # memcached 1.6.18 counts cas_hits/cas_badval/cas_misses only for
        # set/add/replace carrying a CAS (NREAD_CAS); an append or prepend
        # with a CAS moves cmd_set alone, whatever the outcome.
        cas = h.run("set", b"k", value=b"v").cas
        result, changed = h.delta(command, b"k", value=b"w", cas=cas + 1)
        assert result.status is EXISTS
        assert changed == {"cmd_set": 1}
        result, changed = h.delta(command, b"k", value=b"w", cas=cas)
        assert result.status is OK
        assert changed == {"cmd_set": 1}
        result, changed = h.delta(command, b"missing", value=b"w", cas=cas)
        assert result.status is NOT_STORED
        assert changed == {"cmd_set": 1}

    def test_refused_too_large(self, h):
        h.run("set", b"k", value=b"old")
        result, changed = h.delta("set", b"k", refused=True)
        assert result.status is TOO_LARGE
        assert changed.get("store_too_large") == 1
        # As memcached: a failed set must not leave the old value readable.
        assert h.run("get", b"k").status is NOT_FOUND

    @pytest.mark.parametrize("command", ["add", "replace", "append", "prepend"])
    def test_refused_too_large_keeps_the_old_value_unless_set(self, h, command):
        h.run("set", b"k", value=b"old")
        assert h.run(command, b"k", refused=True).status is TOO_LARGE
        assert h.stats.store_too_large == 1
        assert h.run("get", b"k").item.value == b"old"

    def test_too_large_from_the_store(self, clock):
        h = Harness(clock, settings=Settings(max_item_size=1024, memory_limit=64 << 20))
        result = h.run("set", b"k", value=b"x" * (1024 - MEMCACHED_ITEM_HEADER))
        assert result.status is TOO_LARGE
        assert h.stats.store_too_large == 1

    def test_no_memory(self, clock):
        store = Store(limit_bytes=2048, max_item_size=1 << 20, clock=clock)
        h = Harness(clock, store=store)
        result, changed = h.delta("set", b"k", value=b"x" * 4096)
        assert result.status is NO_MEMORY
        assert changed.get("store_no_memory") == 1


class TestDelete:
    def test_hits_and_misses(self, h):
        h.run("set", b"k", value=b"v")
        result, changed = h.delta("delete", b"k")
        assert result.status is OK and changed == {"delete_hits": 1}
        result, changed = h.delta("delete", b"k")
        assert result.status is NOT_FOUND and changed == {"delete_misses": 1}

    def test_cas_mismatch_counts_neither(self, h):
        # memcached 1.6.18: a DELETE with a wrong CAS moves no counter.
        cas = h.run("set", b"k", value=b"v").cas
        result, changed = h.delta("delete", b"k", cas=cas + 1)
        assert result.status is EXISTS and changed == {}
        result, changed = h.delta("delete", b"k", cas=cas)
        assert result.status is OK and changed == {"delete_hits": 1}


@pytest.mark.parametrize("command", ["incr", "decr"])
class TestArith:
    def test_hit(self, h, command):
        h.run("set", b"n", value=b"10")
        result, changed = h.delta(command, b"n", delta=3)
        assert result.status is OK
        assert result.number == (13 if command == "incr" else 7)
        assert result.cas == h.run("get", b"n").cas
        assert changed == {f"{command}_hits": 1}

    def test_miss_without_initial(self, h, command):
        result, changed = h.delta(command, b"n", delta=1, initial=None)
        assert result.status is NOT_FOUND
        assert changed == {f"{command}_misses": 1}

    def test_create_with_initial_counts_neither(self, h, command):
        # memcached 1.6.18 creates the item through an internal ADD and
        # counts neither a hit nor a miss.
        result, changed = h.delta(command, b"n", delta=1, initial=42, exptime=0)
        assert (result.status, result.number) == (OK, 42)
        assert result.cas == h.run("get", b"n").cas
        assert changed == {}

    def test_non_numeric_counts_neither(self, h, command):
        # memcached 1.6.18 counts incr_hits/decr_hits only after the value
        # parsed as a number.
        h.run("set", b"n", value=b"abc")
        result, changed = h.delta(command, b"n", delta=1)
        assert result.status is NON_NUMERIC
        assert changed == {}

    def test_cas_mismatch_counts_neither(self, h, command):
        cas = h.run("set", b"n", value=b"5").cas
        result, changed = h.delta(command, b"n", delta=1, cas=cas + 1)
        assert result.status is EXISTS
        assert changed == {}

    def test_cas_match(self, h, command):
        cas = h.run("set", b"n", value=b"5").cas
        result, changed = h.delta(command, b"n", delta=1, cas=cas)
        assert result.status is OK and result.cas > cas
        assert changed == {f"{command}_hits": 1}


@pytest.mark.parametrize("command", ["touch", "gat"])
class TestTouch:
    def test_hit(self, h, clock, command):
        cas = h.run("set", b"k", value=b"v", flags=7).cas
        result, changed = h.delta(command, b"k", exptime=10)
        assert result.status is OK
        assert (result.item.value, result.item.flags, result.cas) == (b"v", 7, cas)
        assert changed == {"cmd_touch": 1, "touch_hits": 1}
        clock.advance(10)
        assert h.run("get", b"k").status is NOT_FOUND

    def test_miss(self, h, command):
        result, changed = h.delta(command, b"k", exptime=10)
        assert result.status is NOT_FOUND and result.item is None
        assert changed == {"cmd_touch": 1, "touch_misses": 1}


class TestFlush:
    def test_flush_now(self, h):
        h.run("set", b"k", value=b"v")
        result, changed = h.delta("flush")
        assert result.status is OK and changed == {"cmd_flush": 1}
        assert h.run("get", b"k").status is NOT_FOUND

    def test_flush_later(self, h, clock):
        h.run("set", b"k", value=b"v")
        h.run("flush", exptime=30)
        assert h.run("get", b"k").status is OK
        clock.advance(30)
        assert h.run("get", b"k").status is NOT_FOUND
        assert h.stats.cmd_flush == 1


@pytest.mark.parametrize("command", ["noop", "version", "quit", "unknown"])
def test_commands_that_touch_nothing(h, command):
    h.run("set", b"k", value=b"v")
    result, changed = h.delta(command)
    assert result.status is OK
    assert changed == {}
    assert len(h.store) == 1


def test_an_unknown_command_name_is_a_programming_error(h):
    with pytest.raises(ValueError):
        h.commands.execute(Request("frobnicate"))
    assert not h.lock.locked


# -- stat groups ------------------------------------------------------------


class TestStatGroups:
    def test_general_has_the_protocol_keys(self, h, clock):
        clock.advance(123)
        h.run("set", b"a", value=b"1")
        h.run("set", b"b", value=b"22")
        h.run("get", b"a")
        h.run("get", b"zz")
        general = h.stat_group()
        missing = [key for key in GENERAL_KEYS if key not in general]
        assert not missing
        assert general["pid"] == str(os.getpid())
        assert general["uptime"] == "123"
        assert general["time"] == str(int(clock()))
        assert general["version"] == "1.6.18"
        assert general["threads"] == "1"
        assert general["cmd_get"] == "2"
        assert general["get_hits"] == "1"
        assert general["get_misses"] == "1"
        assert general["cmd_set"] == "2"
        assert general["curr_items"] == "2"
        assert general["total_items"] == "2"
        assert general["bytes"] == str(h.store.bytes)
        assert general["limit_maxbytes"] == str(h.settings.memory_limit)
        assert general["evictions"] == "0"
        for name in COUNTERS:
            assert general[name] == str(getattr(h.stats, name))

    def test_general_ends_with_the_snapshot_load_when_there_is_one(self, h, clock):
        memcached_order = [name for name, _ in h.run("stats").stats]
        progress = LoadProgress()
        progress.loading, progress.file_items, progress.read_items = True, 1000, 250
        progress.loaded_items = 240
        commands = Commands(h.store, h.lock, h.stats, h.settings, warmup=progress)
        pairs = commands.execute(StatsRequest()).stats
        assert [name for name, _ in pairs[: len(memcached_order)]] == memcached_order
        assert pairs[len(memcached_order) :] == [
            ("snapshot_loading", "1"),
            ("snapshot_load_progress", "0.2500"),
            ("snapshot_loaded_items", "240"),
            ("snapshot_file_items", "1000"),
        ]
        assert not any(name.startswith("snapshot_") for name in memcached_order)

    def test_hotkeys_when_off(self, h):
        assert h.commands.hot is None  # the GET and SET paths' one check
        assert h.stat_group(b"hotkeys") == {"hotkeys:capacity": "0"}

    def test_hotkeys_counts_gets_and_sets_from_every_path(self, clock):
        h = Harness(clock, settings=Settings(hot_keys=2))
        assert isinstance(h.commands.hot, HotKeys) and h.commands.hot.capacity == 2
        h.commands.hot = HotKeys(2, rate=1)  # every request counted, for exact figures
        for _ in range(3):
            h.run("set", b"hot", value=b"v")  # _store
            h.run("get", b"hot")  # get_record, the lone GET
        h.commands.get_many([b"hot", b"warm", b"hot"])  # a multi-get
        h.commands.execute(MetaRequest("ms", b"warm", b"v", mode="set"))
        h.commands.execute(MetaRequest("mg", b"warm", order="v"))
        group = h.stat_group(b"hotkeys")
        assert {k: v for k, v in group.items() if k.startswith("hotkey:1:")} == {
            "hotkey:1:key": "hot",
            "hotkey:1:estimate": "8",
            "hotkey:1:gets": "5",
            "hotkey:1:sets": "3",
            "hotkey:1:percent": "72.73",
        }
        assert (group["hotkey:2:key"], group["hotkey:2:estimate"]) == ("warm", "3")
        assert group["hotkeys:requests"] == "11"

    def test_general_shows_connections(self, h):
        h.stats.curr_connections = 3
        h.stats.total_connections = 10
        general = h.stat_group()
        assert (general["curr_connections"], general["total_connections"]) == ("3", "10")

    def test_settings(self, clock):
        settings = Settings(
            host="::1",
            port=22122,
            memory_limit=128 << 20,
            max_item_size=2 << 20,
            max_connections=77,
            verbosity=2,
        )
        h = Harness(clock, settings=settings)
        group = h.stat_group(b"settings")
        assert group["maxbytes"] == str(128 << 20)
        assert group["maxconns"] == "77"
        assert group["tcpport"] == "22122"
        assert group["inter"] == "::1"
        assert group["verbosity"] == "2"
        assert group["item_size_max"] == str(2 << 20)
        assert group["cas_enabled"] == "yes"

    def test_items(self, h, clock):
        h.run("set", b"a", value=b"1")
        clock.advance(42)
        h.run("set", b"b", value=b"1")
        group = h.stat_group(b"items")
        assert group["items:1:number"] == "2"
        assert group["items:1:age"] == "42"
        assert group["items:1:evicted"] == "0"
        assert group["items:1:reclaimed"] == "0"

    def test_slabs(self, h):
        h.run("set", b"a", value=b"1")
        h.run("set", b"b", value=b"1")
        group = h.stat_group(b"slabs")
        assert group["1:used_chunks"] == "2"
        assert group["1:cmd_set"] == "2"
        assert group["active_slabs"] == "1"
        assert group["total_malloced"] == str(1 << 20)

    def test_sizes(self, h):
        h.run("set", b"k", value=b"x" * 10)  # 1 + 10 + 59 = 70 → the 96 bucket
        h.run("set", b"j", value=b"x" * 12)  # 72 → 96
        h.run("set", b"big", value=b"x" * 100)  # 162 → 192
        assert h.stat_group(b"sizes") == {"96": "2", "192": "1"}

    def test_sizes_of_an_empty_store(self, h):
        assert h.stat_group(b"sizes") == {}

    def test_conns(self, h, clock):
        h.stats.listeners[1] = "tcp:127.0.0.1:11211"
        h.stats.connections[7] = ConnectionInfo("127.0.0.1:5555", clock())
        clock.advance(5)
        group = h.stat_group(b"conns")
        assert group == {
            "1:addr": "tcp:127.0.0.1:11211",
            "1:state": "conn_listening",
            "1:secs_since_last_cmd": "5",
            "7:addr": "tcp:127.0.0.1:5555",
            "7:listen_addr": "tcp:127.0.0.1:11211",
            "7:state": "conn_new_cmd",
            "7:secs_since_last_cmd": "5",
        }

    def test_reset_zeroes_the_counters(self, h):
        h.run("set", b"k", value=b"v")
        h.run("get", b"k")
        h.run("get", b"missing")
        h.run("delete", b"missing")
        h.run("incr", b"n", delta=1, initial=None)
        h.run("touch", b"k", exptime=0)
        h.run("flush", exptime=1000)
        h.stats.bytes_read = h.stats.bytes_written = 100
        result = h.run("stats", b"reset")
        assert result.status is OK and result.stats == []
        assert h.counters() == dict.fromkeys(COUNTERS, 0)
        assert h.store.total_items == 0
        general = h.stat_group()
        assert all(general[name] == "0" for name in COUNTERS)
        # Items are not counters: they stay.
        assert general["curr_items"] == "1"

    def test_reset_zeroes_store_counters(self, clock):
        store = Store(limit_bytes=3000, clock=clock)
        h = Harness(clock, store=store)
        for i in range(20):
            h.run("set", b"k%d" % i, value=b"v" * 100)
        assert store.evictions > 0
        h.run("stats", b"reset")
        general = h.stat_group()
        assert (general["evictions"], general["total_items"], general["reclaimed"]) == (
            "0",
            "0",
            "0",
        )

    @pytest.mark.parametrize("group", [b"bogus", b"items2", b"detail", b"RESET"])
    def test_unknown_group(self, h, group):
        assert h.run("stats", group).status is NOT_FOUND


# -- locking ----------------------------------------------------------------


class SpyStore(Store):
    """Records how the lock was held during each store call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock: RWLock | None = None
        self.calls: list[tuple[str, str]] = []

    def _note(self, name):
        lock = self.lock
        # "free": no hold taken, and none could be (see commands' docstring).
        state = (
            "write" if lock.writer else "read" if lock.readers
            else "free" if lock.free else "none"
        )
        self.calls.append((name, state))

    def get_many(self, *a, **kw):
        self._note("get_many")
        return super().get_many(*a, **kw)

    def get_record(self, *a, **kw):
        self._note("get_record")
        return super().get_record(*a, **kw)

    def touch(self, *a, **kw):
        self._note("touch")
        return super().touch(*a, **kw)

    def store(self, *a, **kw):
        self._note("store")
        return super().store(*a, **kw)

    def refuse(self, *a, **kw):
        self._note("refuse")
        return super().refuse(*a, **kw)

    def delete(self, *a, **kw):
        self._note("delete")
        return super().delete(*a, **kw)

    def arith(self, *a, **kw):
        self._note("arith")
        return super().arith(*a, **kw)

    def flush(self, *a, **kw):
        self._note("flush")
        return super().flush(*a, **kw)

    def reset_counters(self):
        self._note("reset_counters")
        return super().reset_counters()

    def class_usage(self):
        self._note("class_usage")
        return super().class_usage()

    def keys(self):
        self._note("keys")
        return super().keys()

    def entries(self, *a, **kw):
        self._note("entries")
        return super().entries(*a, **kw)


class ExplodingStore(Store):
    """A store whose every operation fails."""

    def _boom(self, *a, **kw):
        raise RuntimeError("store failure")

    get = touch = store = refuse = delete = arith = flush = _boom
    reset_counters = class_usage = keys = entries = __len__ = _boom


REQUESTS = [
    Request("get", b"k"),
    Request("gat", b"k", exptime=5),
    Request("touch", b"k", exptime=5),
    Request("set", b"k", b"v"),
    Request("add", b"k", b"v"),
    Request("replace", b"k", b"v"),
    Request("append", b"k", b"v"),
    Request("prepend", b"k", b"v"),
    Request("set", b"k", refused=True),
    Request("delete", b"k"),
    Request("incr", b"k", delta=1, initial=0),
    Request("decr", b"k", delta=1, initial=None),
    FlushRequest(),
    FlushRequest(10),
    StatsRequest(),
    StatsRequest(b"settings"),
    StatsRequest(b"items"),
    StatsRequest(b"slabs"),
    StatsRequest(b"sizes"),
    StatsRequest(b"conns"),
    StatsRequest(b"reset"),
    StatsRequest(b"bogus"),
    Request("noop"),
    Request("version"),
    Request("quit"),
    Request("unknown", opcode=0x50),
]
REQUEST_IDS = [
    f"{r.command}-{getattr(r, 'key', getattr(r, 'group', b'')).decode() or '-'}"
    f"{'-refused' if getattr(r, 'refused', False) else ''}{'-' + str(r.delay) if r.command == 'flush' else ''}"
    for r in REQUESTS
]


class TestLocking:
    @pytest.mark.parametrize("request_", REQUESTS, ids=REQUEST_IDS)
    def test_released_after_every_command(self, h, request_):
        h.run("set", b"k", value=b"1")
        execute(h.commands, request_)
        assert not h.lock.locked
        assert h.lock.readers == 0 and not h.lock.writer

    @pytest.mark.parametrize("request_", REQUESTS, ids=REQUEST_IDS)
    def test_released_when_the_store_raises(self, clock, request_):
        h = Harness(clock, store=ExplodingStore(clock=clock))
        try:
            execute(h.commands, request_)
        except RuntimeError as error:
            assert str(error) == "store failure"
        assert not h.lock.locked
        # And it still works: a writer gets it at once.
        h.lock.acquire_write()
        h.lock.release_write()

    def test_store_calls_run_under_the_right_hold(self, clock):
        store = SpyStore(clock=clock)
        h = Harness(clock, store=store)
        store.lock = h.lock
        expectations = [
            # The commonest calls skip a hold on a free lock.
            (Request("get", b"k"), ("get_record", "free")),
            (Request("set", b"k", b"1"), ("store", "free")),
            (Request("set", b"k", refused=True), ("refuse", "free")),
            (Request("touch", b"k"), ("touch", "write")),
            (Request("gat", b"k"), ("touch", "write")),
            (Request("delete", b"k"), ("delete", "write")),
            (Request("incr", b"k", delta=1, initial=0), ("arith", "write")),
            (Request("incr", b"k", delta=1, initial=None), ("arith", "write")),
            (FlushRequest(), ("flush", "write")),
            (Request("set", b"k", b"1"), ("store", "free")),
            (StatsRequest(b"items"), ("class_usage", "read")),
            (StatsRequest(b"sizes"), ("keys", "read"), ("entries", "read")),
            (StatsRequest(b"reset"), ("reset_counters", "write")),
        ]
        for request, *calls in expectations:
            store.calls.clear()
            execute(h.commands, request)
            # One store call or several, each under the hold its kind needs.
            assert store.calls and set(store.calls) == set(calls), request
            assert not h.lock.locked

    def test_calls_that_skip_a_free_lock_take_it_when_it_is_not(self, clock):
        store = SpyStore(clock=clock)
        h = Harness(clock, store=store)
        store.lock = h.lock
        h.run("set", b"k", value=b"1")
        # Another reader holds it: a GET and a multi-get join it.
        h.lock.acquire_read()
        store.calls.clear()
        execute(h.commands, Request("get", b"k"))
        h.commands.get_many([b"k", b"j"])
        assert store.calls == [("get_record", "read"), ("get_many", "read")]
        assert h.lock.readers == 1
        # A set waits for the reader, then holds it alone.
        store.calls.clear()
        setter = gevent.spawn(execute, h.commands, Request("set", b"k", b"2"))
        gevent.sleep(0)
        assert store.calls == [] and h.lock.waiting == 1
        # A GET arriving now queues behind the set (FIFO), it does not skip.
        getter = gevent.spawn(execute, h.commands, Request("get", b"k"))
        gevent.sleep(0)
        assert h.lock.waiting == 2
        h.lock.release_read()
        gevent.joinall([setter, getter], raise_error=True)
        assert store.calls == [("store", "write"), ("get_record", "read")]
        assert getter.value.item.value == b"2"
        assert h.lock.free

"""Unit tests for mbserver.watch: memcached's log lines, watchers' buffers, and the hooks.

No sockets: a Logger on a fake clock, watchers read by ``take()``, and the
command layer over a real Store. The expected lines are memcached 1.6.18's,
as `watch` printed them for the same commands (tests/integration/test_watch.py
compares the two servers live).
"""

from __future__ import annotations

import re

import pytest

from mbserver.commands import Commands, MetaRequest, Request
from mbserver.config import Settings
from mbserver.rwlock import RWLock
from mbserver.stats import Stats
from mbserver.store import Store
from mbserver.watch import (
    CONNEVENTS,
    DELETIONS,
    EVICTIONS,
    FETCHERS,
    MUTATIONS,
    WATCHER_BUFFER,
    WATCHER_LIMIT,
    Logger,
    uriencode,
)

from .conftest import T0


def lines(watcher) -> list[str]:
    """The watcher's lines without their ts= and gid= prefix."""
    return [re.sub(r"^ts=\d+\.\d+ gid=\d+ ", "", line) for line in watcher.take().decode().splitlines()]


@pytest.fixture
def harness(clock):
    store = Store(1 << 20, 1 << 19, clock=clock)
    stats = Stats(clock)
    commands = Commands(store, RWLock(), stats, Settings(memory_limit=1 << 20, max_item_size=1 << 19))
    commands.logger.cfd = 9
    return commands


def run(commands, command, key=b"", **fields):
    return commands.execute(Request(command, key, **fields))


def test_the_line_prefix_is_memcacheds(clock):
    clock.now = T0 + 0.000123
    logger = Logger(clock)
    watcher = logger.add(FETCHERS)
    logger.item_get(b"k", b"not_found")
    logger.item_get(b"k", b"not_found")
    first, second = watcher.take().decode().splitlines()
    # %d microseconds, as memcached prints them: 123, not 000123
    assert first == f"ts={int(T0)}.123 gid=1 type=item_get key=k status=not_found clsid=0 cfd=0 size=0"
    assert second.startswith(f"ts={int(T0)}.123 gid=2 ")


def test_keys_are_uriencoded_as_memcached_does():
    assert uriencode(b"k%20y") == b"k%2520y"
    assert uriencode("é".encode()) == b"%C3%A9"
    assert uriencode(b"a-b.c_d~e/f g") == b"a-b.c_d~e%2Ff%20g"


def test_each_watcher_gets_only_the_kinds_it_asked_for(clock):
    logger = Logger(clock)
    fetchers, conns = logger.add(FETCHERS), logger.add(CONNEVENTS)
    logger.item_get(b"a", b"found", 1, 3)
    logger.conn_new("127.0.0.1", 5000, b"tcp", 7)
    logger.conn_close("127.0.0.1", 5000, b"tcp", b"normal", 7)
    assert lines(fetchers) == ["type=item_get key=a status=found clsid=1 cfd=0 size=3"]
    assert lines(conns) == [
        "type=conn_new rip=127.0.0.1 rport=5000 transport=tcp cfd=7",
        "type=conn_close rip=127.0.0.1 rport=5000 transport=tcp reason=normal cfd=7",
    ]


def test_flags_follow_the_watchers(clock):
    logger = Logger(clock)
    assert not (logger.fetchers or logger.requests or logger.connevents)
    watcher = logger.add(FETCHERS | CONNEVENTS)
    assert logger.fetchers and logger.requests and logger.connevents and not logger.mutations
    logger.remove(watcher)
    assert not (logger.fetchers or logger.requests or logger.connevents)


def test_at_most_twenty_watchers(clock):
    logger = Logger(clock)
    watchers = [logger.add(FETCHERS) for _ in range(WATCHER_LIMIT)]
    assert all(watchers) and logger.add(FETCHERS) is None
    logger.remove(watchers[0])
    assert logger.add(FETCHERS) is not None


def test_a_slow_watcher_loses_lines_and_is_told_how_many(clock):
    logger = Logger(clock)
    slow, fast = logger.add(FETCHERS), logger.add(FETCHERS)
    woken = []
    slow.wake = lambda: woken.append(1)
    total = 6000  # about 100 bytes a line: more than a watcher's buffer
    for i in range(total):
        logger.item_get(b"key-%d" % i, b"not_found")
        if i % 100 == 0:
            fast.take()  # this one keeps up
    kept = lines(slow)
    assert sum(map(len, kept)) + len(kept) <= WATCHER_BUFFER
    assert slow.skipped == total - len(kept) > 0
    assert logger.stats.log_watcher_skipped == slow.skipped and not fast.skipped
    logger.item_get(b"after", b"not_found")  # room again: the loss is reported first
    assert lines(slow) == [f"skipped={total - len(kept)}",
                           "type=item_get key=after status=not_found clsid=0 cfd=0 size=0"]
    assert len(woken) == len(kept) + 1


def test_nothing_is_rendered_for_kinds_nobody_watches(harness):
    logger = harness.logger
    run(harness, "set", b"k", value=b"v")
    harness.get_record(b"k")
    assert logger.gid == 0 and logger.stats.log_worker_written == 0


def test_storage_commands_log_the_lookup_then_the_store(harness, clock):
    watcher = harness.logger.add(FETCHERS | MUTATIONS)
    run(harness, "set", b"foo", value=b"bar", flags=5, exptime=100)
    harness.get_record(b"foo")
    harness.get_many([b"nope", b"foo"])
    run(harness, "add", b"foo", value=b"x")
    run(harness, "replace", b"foo", value=b"y", cas=12345)
    run(harness, "append", b"nx", value=b"x")
    run(harness, "prepend", b"foo", value=b"z")
    run(harness, "set", b"big", refused=True)
    assert lines(watcher) == [
        "type=item_get key=foo status=not_found clsid=0 cfd=9 size=0",
        "type=item_store key=foo status=stored cmd=set ttl=100 clsid=1 cfd=9 size=3",
        "type=item_get key=foo status=found clsid=1 cfd=9 size=3",
        "type=item_get key=nope status=not_found clsid=0 cfd=9 size=0",
        "type=item_get key=foo status=found clsid=1 cfd=9 size=3",
        "type=item_get key=foo status=found clsid=1 cfd=9 size=3",
        "type=item_store key=foo status=not_stored cmd=add ttl=0 clsid=1 cfd=9 size=1",
        "type=item_get key=foo status=found clsid=1 cfd=9 size=3",
        "type=item_store key=foo status=exists cmd=cas ttl=0 clsid=1 cfd=9 size=1",
        "type=item_get key=nx status=not_found clsid=0 cfd=9 size=0",
        "type=item_store key=nx status=not_stored cmd=append ttl=0 clsid=1 cfd=9 size=1",
        "type=item_get key=foo status=found clsid=1 cfd=9 size=3",
        "type=item_store key=foo status=stored cmd=prepend ttl=100 clsid=1 cfd=9 size=4",
        "type=item_store key=big status=too_large cmd=set ttl=0 clsid=0 cfd=9 size=0",
        "type=item_get key=big status=not_found clsid=0 cfd=9 size=0",
    ]


def test_counters_touch_and_deletes(harness):
    watcher = harness.logger.add(FETCHERS | MUTATIONS | DELETIONS)
    run(harness, "incr", b"n", delta=1)
    run(harness, "incr", b"c", delta=1, initial=7)
    run(harness, "touch", b"c", exptime=10)
    run(harness, "delete", b"c")
    run(harness, "delete", b"c")
    assert lines(watcher) == [
        "type=item_get key=n status=not_found clsid=0 cfd=9 size=0",
        "type=item_get key=c status=not_found clsid=0 cfd=9 size=0",
        "type=item_get key=c status=not_found clsid=0 cfd=9 size=0",
        "type=item_store key=c status=stored cmd=add ttl=0 clsid=1 cfd=9 size=1",
        "type=item_get key=c status=found clsid=1 cfd=9 size=1",
        "type=item_get key=c status=found clsid=1 cfd=9 size=1",
        "type=deleted key=c cmd=delete clsid=1 size=1",
        "type=item_get key=c status=not_found clsid=0 cfd=9 size=0",
    ]


def test_meta_commands(harness):
    watcher = harness.logger.add(FETCHERS | MUTATIONS | DELETIONS)
    harness.execute(MetaRequest("ms", b"m", value=b"hi", mode="set"))
    harness.execute(MetaRequest("ms", b"m", value=b"!", mode="append"))
    harness.execute(MetaRequest("mg", b"m"))
    harness.execute(MetaRequest("md", b"m"))
    harness.execute(MetaRequest("ma", b"ctr", vivify=0, mode="incr"))
    assert lines(watcher) == [
        "type=item_get key=m status=not_found clsid=0 cfd=9 size=0",
        "type=item_store key=m status=stored cmd=set ttl=0 clsid=1 cfd=9 size=2",
        "type=item_get key=m status=found clsid=1 cfd=9 size=2",
        "type=item_store key=m status=stored cmd=append ttl=0 clsid=1 cfd=9 size=3",
        "type=item_get key=m status=found clsid=1 cfd=9 size=3",
        "type=item_get key=m status=found clsid=1 cfd=9 size=3",
        "type=deleted key=m cmd=md clsid=1 size=3",
        "type=item_get key=ctr status=not_found clsid=0 cfd=9 size=0",
        "type=item_get key=ctr status=not_found clsid=0 cfd=9 size=0",
        "type=item_store key=ctr status=stored cmd=add ttl=0 clsid=1 cfd=9 size=1",
    ]


def test_evictions_are_logged_while_watched(harness, clock):
    store = harness.store
    watcher = harness.logger.add(EVICTIONS)
    assert store.on_evict is not None
    value = b"x" * 100_000
    run(harness, "set", b"read", value=value)
    harness.get_record(b"read")
    clock.advance(3)
    for i in range(12):
        run(harness, "set", b"big%d" % i, value=value)
    evicted = lines(watcher)
    assert evicted[0] == "type=eviction key=read fetch=yes ttl=-1 la=3 clsid=32 size=100000"
    assert evicted[1] == "type=eviction key=big0 fetch=no ttl=-1 la=0 clsid=32 size=100000"
    assert len(evicted) == store.evictions
    harness.logger.remove(watcher)
    assert store.on_evict is None

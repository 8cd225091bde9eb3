"""memcached's LRU crawler, as `lru_crawler` commands see it, and the walks behind it.

What lives here: ``LruCrawler``: its settings (enabled, sleep, tocrawl),
its state and counters for `stats`, and ``crawl``, which reclaims the
expired items of the named size classes in a background greenlet, a slice
at a time. ``walk`` is the slice loop that crawl, the key dumps and
`stats sizes` share: a copy of the keys (``Store.keys``), then each slice's
items read under the store lock and handed out with the lock released, so
other clients are served between slices. What does not: parsing the
commands (``protocol.text``) or formatting dumps (the protocol writes them).

mbserver expires items lazily, when they are touched; a crawl is the way to
drop expired items nobody asks for before eviction gets to them.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

import gevent

from .record import MAX_SLAB_CLASS

if TYPE_CHECKING:
    from .rwlock import RWLock
    from .store import Store

log = logging.getLogger("mbserver.crawler")

# Keys per slice of a walk: a slice's lookups take about a millisecond.
SLICE = 1000

# memcached's results of starting a crawl.
OK = "OK"
BUSY = "BUSY currently processing crawler request"
BADCLASS = "BADCLASS invalid class id"
DISABLED = "CLIENT_ERROR lru crawler disabled"


def walk(
    store: Store,
    lock: RWLock,
    read: Callable[[list[bytes]], object],
    write: bool = False,
    newest_first: bool = False,
    pause: float = 0.0,
) -> Iterator:
    """``read(slice_of_keys)`` for each slice of the store's keys, least
    recently used first (or newest first), each call under a hold of
    ``lock`` (a write hold if ``write``: ``read`` changes the store).
    Yields what each call returns.

    Between slices the lock is free and other greenlets run (for ``pause``
    seconds at least), so a walk of any size stalls other clients no longer
    than the copy of the keys or a slice, and the consumer of each result
    (a dump sending it) runs with the lock released.
    """
    with lock.read():
        keys = store.keys()
    if newest_first:
        keys.reverse()
    for start in range(0, len(keys), SLICE):
        with lock.write() if write else lock.read():
            result = read(keys[start : start + SLICE])
        yield result
        gevent.sleep(pause)


class LruCrawler:
    """The crawler's settings and state, and the crawls it runs."""

    def __init__(self, store: Store, lock: RWLock, sleep: int = 100, tocrawl: int = 0):
        self.store = store
        self.lock = lock
        self.enabled = True
        self.sleep = sleep  # microseconds between slices (memcached: between items)
        self.tocrawl = tocrawl  # items of each class a crawl checks at most; 0: all
        self.starts = 0  # crawls and metadumps started (memcached's lru_crawler_starts)
        self._crawl: gevent.Greenlet | None = None
        self._dumps = 0  # metadumps in progress

    @property
    def running(self) -> bool:
        return self._dumps > 0 or (self._crawl is not None and not self._crawl.dead)

    def enable(self) -> bool:
        """Turn the crawler on; False if it already was (memcached's error)."""
        if self.enabled:
            return False
        self.enabled = True
        return True

    def disable(self) -> None:
        """Turn the crawler off, stopping a crawl in progress."""
        self.enabled = False
        if self._crawl is not None:
            self._crawl.kill(block=False)
            self._crawl = None

    def crawl(self, classes: frozenset[int] | None | str) -> str:
        """`lru_crawler crawl`: start reclaiming the expired items of ``classes``
        (None: all) in the background; memcached's reply."""
        if not self.enabled:
            return DISABLED
        if classes == BADCLASS:
            return BADCLASS
        if self._crawl is not None and not self._crawl.dead:
            return BUSY
        self.starts += 1
        self._crawl = gevent.spawn(self._run, classes, self.tocrawl)
        return OK

    def _run(self, classes: frozenset[int] | None, tocrawl: int) -> None:
        store = self.store
        remaining = [tocrawl] * (MAX_SLAB_CLASS + 1) if tocrawl else None

        def reclaim(keys: list[bytes]) -> None:
            store.crawl(keys, classes, remaining)

        for _ in walk(store, self.lock, reclaim, write=True, pause=self.sleep / 1e6):
            pass
        log.debug("crawl of %s done", "all classes" if classes is None else sorted(classes))

    @contextmanager
    def dumping(self) -> Iterator[None]:
        """Around a metadump: memcached runs those on its crawler, so they
        count as crawler starts and show it running."""
        self.starts += 1
        self._dumps += 1
        try:
            yield
        finally:
            self._dumps -= 1

"""Which parked connections have something to read: one readiness set per hub.

What lives here: ``ReadySet``, where a plain connection parked between
requests leaves its descriptor and a callback, and ``ready_set``, the
hub's one set. What does not: what the callback does (``connection``
answers what arrived, or wakes the connection's greenlet).

On Linux the set is one epoll descriptor, and that descriptor is all the
hub's loop watches for the parked connections. When any of them becomes
readable, libev calls the set once; one ``epoll_wait`` with no timeout
then lists every ready socket, and a plain Python loop calls each one's
callback. With a libev watcher per connection instead, every ready socket
cost a pass through libev's pending queue and a call from C into Python
(a cffi callback on PyPy): on PyPy the set cut the server's user time a
request from 2.6-2.8 to 2.2-2.3 µs with 16 busy connections and from
4.3 to 3.3-3.6 µs with 1,000 (README, Performance). Where there is no
epoll, each descriptor gets a watcher of its own, as before.

Both are level-triggered: a callback that leaves data unread is called
again on the loop's next pass, so a callback must read, or ``remove`` its
descriptor. Nothing here blocks or yields; callbacks run in the hub.
"""

from __future__ import annotations

import select
import weakref
from typing import Callable

_READ = 1  # libev/libuv's read event
# The most ready sockets one epoll_wait lists; any more are listed on the
# loop's next pass (the set's descriptor stays readable).
MAX_EVENTS = 1024


class ReadySet:
    """Descriptors to watch for reading, each with its callback (epoll)."""

    __slots__ = ("_epoll", "_poll", "_callbacks", "_watcher")

    def __init__(self, loop) -> None:
        self._epoll = select.epoll()
        self._poll = self._epoll.poll
        self._callbacks: dict[int, Callable[[], None]] = {}
        # Started only while the set holds a descriptor: a parked connection
        # keeps the hub's loop running, as its own watcher used to, and an
        # empty set does not.
        self._watcher = loop.io(self._epoll.fileno(), _READ)

    def __len__(self) -> int:
        return len(self._callbacks)

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from the hub whenever ``fd`` is readable, until removed."""
        self._epoll.register(fd, select.EPOLLIN)
        if not self._callbacks:
            self._watcher.start(self._on_ready)
        self._callbacks[fd] = callback

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` (added before, and still open)."""
        del self._callbacks[fd]
        self._epoll.unregister(fd)
        if not self._callbacks:
            self._watcher.stop()

    def _on_ready(self) -> None:
        callbacks = self._callbacks
        for fd, _ in self._poll(0, MAX_EVENTS):
            # Looked up as each comes: an earlier callback may have removed it.
            callback = callbacks.get(fd)
            if callback is not None:
                callback()


class WatcherSet:
    """``ReadySet`` where there is no epoll: a loop watcher per descriptor."""

    __slots__ = ("_loop", "_watchers")

    def __init__(self, loop) -> None:
        self._loop = loop
        self._watchers: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self._watchers)

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        if fd in self._watchers:  # as epoll refuses it
            raise FileExistsError(f"descriptor {fd} is already in the set")
        watcher = self._watchers[fd] = self._loop.io(fd, _READ)
        watcher.start(callback)

    def remove(self, fd: int) -> None:
        self._watchers.pop(fd).close()


_SETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ready_set(hub) -> ReadySet | WatcherSet:
    """The hub's readiness set, made on first use."""
    ready = _SETS.get(hub)
    if ready is None:
        kind = ReadySet if hasattr(select, "epoll") else WatcherSet
        ready = _SETS[hub] = kind(hub.loop)
    return ready

"""Which parked connections have something to read: one readiness set per hub.

What lives here: ``ReadySet``, where a plain connection parked between
requests leaves its descriptor and itself, and ``ready_set``, the hub's
one set. What does not: what the connection's ``on_readable`` does
(``connection``: it answers what arrived, or wakes its greenlet).

On Linux the set is one epoll descriptor, and that descriptor is all the
hub's loop watches for the parked connections. When any of them becomes
readable, libev calls the set once; one ``epoll_wait`` with no timeout
then lists every ready socket, and a plain Python loop calls each one's
reader: ``reader.on_readable(fd)``. With a libev watcher per connection
instead, every ready socket cost a pass through libev's pending queue
and a call from C into Python (a cffi callback on PyPy): on PyPy the set
cut the server's user time a request from 2.6-2.8 to 2.2-2.3 µs with 16
busy connections and from 4.3 to 3.3-3.6 µs with 1,000 (README,
Performance). Where there is no epoll, each descriptor gets a watcher of
its own, as before.

The set keeps the reader itself, not a bound method: with 1,000 busy
connections each object a request touches first is a cache miss, and a
bound method made per connection was one more on PyPy (README,
Performance). A method call on the reader makes none on CPython.

Both are level-triggered: a reader that leaves data unread is called
again on the loop's next pass, so it must read, or ``remove`` its
descriptor. Nothing here blocks or yields; readers run in the hub.
"""

from __future__ import annotations

import select
import weakref
from typing import Protocol

_READ = 1  # libev/libuv's read event
# The most ready sockets one epoll_wait lists; any more are listed on the
# loop's next pass (the set's descriptor stays readable).
MAX_EVENTS = 1024


class Reader(Protocol):
    def on_readable(self, fd: int) -> None:
        """``fd`` is readable: called in the hub, must not block or yield."""


class ReadySet:
    """Descriptors to watch for reading, each with its reader (epoll)."""

    __slots__ = ("_epoll", "_poll", "_readers", "_watcher")

    def __init__(self, loop) -> None:
        self._epoll = select.epoll()
        self._poll = self._epoll.poll
        self._readers: dict[int, Reader] = {}
        # Started only while the set holds a descriptor: a parked connection
        # keeps the hub's loop running, as its own watcher used to, and an
        # empty set does not.
        self._watcher = loop.io(self._epoll.fileno(), _READ)

    def __len__(self) -> int:
        return len(self._readers)

    def add(self, fd: int, reader: Reader) -> None:
        """Call ``reader.on_readable(fd)`` from the hub whenever ``fd`` is readable, until removed."""
        self._epoll.register(fd, select.EPOLLIN)
        if not self._readers:
            self._watcher.start(self._on_ready)
        self._readers[fd] = reader

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` (added before, and still open)."""
        del self._readers[fd]
        self._epoll.unregister(fd)
        if not self._readers:
            self._watcher.stop()

    def _on_ready(self) -> None:
        readers = self._readers
        for fd, _ in self._poll(0, MAX_EVENTS):
            # Looked up as each comes: an earlier reader may have removed it.
            reader = readers.get(fd)
            if reader is not None:
                reader.on_readable(fd)


class WatcherSet:
    """``ReadySet`` where there is no epoll: a loop watcher per descriptor."""

    __slots__ = ("_loop", "_watchers")

    def __init__(self, loop) -> None:
        self._loop = loop
        self._watchers: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self._watchers)

    def add(self, fd: int, reader: Reader) -> None:
        if fd in self._watchers:  # as epoll refuses it
            raise FileExistsError(f"descriptor {fd} is already in the set")
        watcher = self._watchers[fd] = self._loop.io(fd, _READ)
        watcher.start(reader.on_readable, fd)

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

"""A gevent-aware, fair reader-writer lock for the in-memory store.

What lives here: `RWLock`, its two context-manager helpers, and the queue
entry a blocked greenlet parks on.  What does not: the store itself, any
notion of which keys are guarded (the lock is store-wide), and anything that
touches sockets.

Rule #1 of this project: the lock must never be held across socket I/O or
any other call that can yield to another greenlet (``recv``, ``sendall``,
``gevent.sleep``, logging to a blocking handler...).  A previous Go version
of this server froze when a dead client blocked a send while the store lock
was held; every other connection then queued behind it forever.  Take the
lock, touch the store, release, and only then talk to the network.
"""

from collections import deque

from gevent import get_hub
from gevent.hub import Waiter

__all__ = ["RWLock"]


class _Queued:
    """One greenlet blocked in the FIFO queue."""

    __slots__ = ("writer", "granted", "waiter")

    def __init__(self, writer):
        self.writer = writer
        # Set by the releaser when it hands the lock over, so the woken
        # greenlet never re-checks state and nobody can barge in between.
        self.granted = False
        self.waiter = Waiter()


class _ReadHold:
    __slots__ = ("_lock",)

    def __init__(self, lock):
        self._lock = lock

    def __enter__(self):
        self._lock.acquire_read()

    def __exit__(self, exc_type, exc, tb):
        self._lock.release_read()


class _WriteHold:
    __slots__ = ("_lock",)

    def __init__(self, lock):
        self._lock = lock

    def __enter__(self):
        self._lock.acquire_write()

    def __exit__(self, exc_type, exc, tb):
        self._lock.release_write()


class RWLock:
    """A fair (FIFO-phase) reader-writer lock for greenlets on one hub.

    Usage::

        with lock.read():
            value = store.get(key)
        with lock.write():
            store.set(key, value)

    Never hold it across socket I/O or anything else that yields: see the
    module docstring.  The critical sections this lock protects are meant to
    be pure, non-yielding store operations.

    Fairness: a reader that arrives while a writer holds the lock, or while
    anyone is queued, joins the queue; a writer queues while anyone holds
    the lock or is queued.  On release the queue head is served: a writer
    gets the lock alone, a reader is admitted together with every reader
    directly behind it, up to the next queued writer.  So neither a stream
    of writers nor a stream of readers can starve the other side.

    The releaser hands the lock over (updates the holder counts) before the
    woken greenlets run, so a newcomer can never slip in ahead of them.

    Limits, chosen to keep the uncontended path to two attribute checks:

    * Not thread-safe: all users must run on the same gevent hub (one OS
      thread).  There is no OS-level locking inside.
    * Not reentrant: a holder that acquires again may deadlock (a reader
      re-reading queues behind any waiting writer, which waits for it).
    * Holds are counted, not owned: releasing a lock that nobody holds
      raises ``RuntimeError``, but releasing a hold taken by another
      greenlet is not detected.

    A greenlet killed while queued (``GreenletExit``, ``gevent.Timeout``)
    leaves the queue, or if the lock had already been handed to it, passes
    the lock on, so the lock is never left stuck.
    """

    __slots__ = ("_readers", "_writer", "_queue", "_read_hold", "_write_hold", "free")

    def __init__(self):
        self._readers = 0
        self._writer = False
        self._queue = deque()
        # Nobody holds it and nobody waits: acquiring it now cannot block.
        # Kept up to date by every change below (a plain attribute: the
        # request path reads it on every request, and a property costs a
        # call). While it is True, a critical section that cannot yield may
        # run without taking the hold at all: taking and releasing it around
        # code no other greenlet can interrupt is invisible to them (the
        # store's commonest calls do this; see ``Commands``).
        self.free = True
        # Built once so `with lock.read():` allocates nothing per request.
        self._read_hold = _ReadHold(self)
        self._write_hold = _WriteHold(self)

    @property
    def readers(self):
        """Number of greenlets currently holding the lock for reading."""
        return self._readers

    @property
    def writer(self):
        """True while a writer holds the lock."""
        return self._writer

    @property
    def waiting(self):
        """Number of greenlets queued for the lock."""
        return len(self._queue)

    @property
    def locked(self):
        """True while anyone holds the lock, for reading or writing."""
        return self._writer or self._readers > 0

    def __repr__(self):
        return "<RWLock readers=%d writer=%s waiting=%d>" % (
            self._readers, self._writer, len(self._queue))

    def read(self):
        """Context manager holding the lock for reading."""
        return self._read_hold

    def write(self):
        """Context manager holding the lock for writing."""
        return self._write_hold

    def acquire_read(self):
        # While readers hold the lock, anything queued is behind a waiting
        # writer; joining the current readers would let a stream starve it.
        self.free = False
        if self._writer or self._queue:
            self._wait(False)
        else:
            self._readers += 1

    def release_read(self):
        if not self._readers:
            raise RuntimeError("release_read() on an RWLock not held for reading")
        self._readers -= 1
        if not self._readers and self._queue:
            self._grant()
        self._settle()

    def reading(self, function, argument):
        """``function(argument)`` under a read hold: acquire, call, release.

        The same as ``with lock.read(): return function(argument)``, in one
        Python call instead of three: the lone GET's path (callgrind: 500
        fewer instructions a GET).
        """
        self.free = False
        if self._writer or self._queue:
            self._wait(False)
        else:
            self._readers += 1
        try:
            return function(argument)
        finally:
            self._readers -= 1
            if not self._readers and self._queue:
                self._grant()
            self._settle()

    def acquire_write(self):
        self.free = False
        if self._writer or self._readers or self._queue:
            self._wait(True)
        else:
            self._writer = True

    def release_write(self):
        if not self._writer:
            raise RuntimeError("release_write() on an RWLock not held for writing")
        self._writer = False
        if self._queue:
            self._grant()
        self._settle()

    def _wait(self, writer):
        entry = _Queued(writer)
        self._queue.append(entry)
        try:
            entry.waiter.get()
        except BaseException:
            if entry.granted:
                # Killed after the lock was handed over but before this
                # greenlet ran: hand it on rather than hold it forever.
                if writer:
                    self.release_write()
                else:
                    self.release_read()
            else:
                self._queue.remove(entry)
                # Leaving may uncover readers that can join the current
                # reader phase, or a free lock for whoever is now first.
                if self._queue:
                    self._grant()
            raise

    def _settle(self):
        """After a release: note whether the lock is now free. (A queued
        greenlet that leaves never frees it: whoever it queued behind holds it.)"""
        self.free = not (self._writer or self._readers or self._queue)

    def _grant(self):
        """Hand the lock to the queue head (and its reader phase) if free."""
        queue = self._queue
        if queue[0].writer:
            if not self._writer and not self._readers:
                self._wake(queue.popleft())
                self._writer = True
            return
        if self._writer:
            return
        while queue and not queue[0].writer:
            self._wake(queue.popleft())
            self._readers += 1

    @staticmethod
    def _wake(entry):
        entry.granted = True
        # Waiter.switch must run in the hub; deferring it also keeps the
        # releaser from yielding inside its own release call.
        get_hub().loop.run_callback(entry.waiter.switch, None)

"""Unit tests for mbserver.rwlock: sharing, exclusion, FIFO fairness, cleanup.

Every critical section here yields (gevent.sleep(0) or an Event wait) so the
contention is real.  Ordering is asserted from event logs and from the lock's
own counters, which the releaser updates synchronously; nothing here measures
or waits on wall-clock time, so a slow machine cannot change an outcome.
"""

import gevent
import pytest
from gevent.event import Event

from mbserver.rwlock import RWLock


def run_until(predicate, budget=1000):
    """Yield to other greenlets until `predicate()` holds.

    Bounded by scheduling steps, not seconds, so a broken lock fails the
    test instead of hanging it.
    """
    for _ in range(budget):
        if predicate():
            return
        gevent.sleep(0)
    raise AssertionError("condition not reached after %d yields" % budget)


class Room:
    """Tracks who is inside the critical section and flags any overlap
    that a reader-writer lock forbids."""

    def __init__(self, lock):
        self.lock = lock
        self.readers = set()
        self.writers = set()
        self.max_readers = 0
        self.log = []

    def enter_read(self, name):
        assert not self.writers, "%s read while %s wrote" % (name, self.writers)
        # The lock counts readers it has granted but that have not run
        # yet, so it may be ahead of the room, never behind.
        assert self.lock.readers > len(self.readers) and not self.lock.writer
        self.readers.add(name)
        self.max_readers = max(self.max_readers, len(self.readers))
        self.log.append(("enter", name))

    def exit_read(self, name):
        self.readers.remove(name)
        self.log.append(("exit", name))

    def enter_write(self, name):
        assert not self.readers and not self.writers, (
            "%s wrote while readers=%s writers=%s" % (name, self.readers, self.writers))
        assert self.lock.writer and self.lock.readers == 0
        self.writers.add(name)
        self.log.append(("enter", name))

    def exit_write(self, name):
        self.writers.remove(name)
        self.log.append(("exit", name))


def gated(lock, log, gates, name):
    """A worker that takes the lock, logs entry, and holds it until its
    gate opens; its kind comes from the first letter of its name."""
    hold = lock.write() if name.startswith("W") else lock.read()
    gates[name] = Event()
    with hold:
        log.append(name)
        gates[name].wait()


def test_many_readers_hold_the_lock_together():
    lock = RWLock()
    log, gates = [], {}
    names = ["R%d" % i for i in range(8)]
    workers = [gevent.spawn(gated, lock, log, gates, n) for n in names]

    run_until(lambda: len(log) == len(names))
    assert lock.readers == len(names)
    assert lock.locked and not lock.writer and lock.waiting == 0

    for n in names:
        gates[n].set()
    gevent.joinall(workers, raise_error=True)
    assert not lock.locked and lock.readers == 0


def test_writer_is_exclusive_under_mixed_contention():
    lock = RWLock()
    room = Room(lock)

    def reader(name):
        for _ in range(20):
            with lock.read():
                room.enter_read(name)
                gevent.sleep(0)
                gevent.sleep(0)
                room.exit_read(name)
            gevent.sleep(0)

    def writer(name):
        for _ in range(20):
            with lock.write():
                room.enter_write(name)
                gevent.sleep(0)
                gevent.sleep(0)
                room.exit_write(name)
            gevent.sleep(0)

    def watch_free():
        # `free` is a plain attribute kept by every change: at every step it
        # must say what the counters say.
        while True:
            assert lock.free == (not lock.locked and lock.waiting == 0)
            gevent.sleep(0)

    workers = []
    for i in range(6):
        workers.append(gevent.spawn(reader, "R%d" % i))
        if i % 2:
            workers.append(gevent.spawn(writer, "W%d" % i))
    watcher = gevent.spawn(watch_free)
    gevent.joinall(workers, raise_error=True)
    assert not watcher.dead, watcher.exception
    watcher.kill()

    entries = [name for what, name in room.log if what == "enter"]
    assert len(entries) == 9 * 20
    # Readers really did share, so the exclusion checks above saw overlap.
    assert room.max_readers > 1
    assert not lock.locked and lock.waiting == 0


def test_grant_order_follows_fifo_phases():
    lock = RWLock()
    log, gates = [], {}
    lock.acquire_write()
    log.append("W0")

    order = ["R1", "W1", "R2", "R3", "W2"]
    workers = []
    for i, name in enumerate(order, 1):
        workers.append(gevent.spawn(gated, lock, log, gates, name))
        run_until(lambda: lock.waiting == i)
    assert log == ["W0"]

    # The releaser hands over before anyone runs, so the counters show
    # each grant the moment it is made.
    lock.release_write()
    assert (lock.readers, lock.writer, lock.waiting) == (1, False, 4)
    run_until(lambda: "R1" in log)

    gates["R1"].set()
    run_until(lambda: "W1" in log)
    assert (lock.readers, lock.writer, lock.waiting) == (0, True, 3)

    gates["W1"].set()
    run_until(lambda: "R2" in log and "R3" in log)
    assert (lock.readers, lock.writer, lock.waiting) == (2, False, 1)

    # W2 waits for the whole reader phase, not just its first member.
    gates["R2"].set()
    run_until(lambda: lock.readers == 1)
    assert "W2" not in log and lock.waiting == 1

    gates["R3"].set()
    run_until(lambda: "W2" in log)
    gates["W2"].set()
    gevent.joinall(workers, raise_error=True)

    assert log[:3] == ["W0", "R1", "W1"]
    assert set(log[3:5]) == {"R2", "R3"}
    assert log[5:] == ["W2"]
    assert not lock.locked and lock.free


def test_writer_stream_cannot_starve_readers():
    lock = RWLock()
    room = Room(lock)
    writers = 4
    rounds = 30

    def writer(name):
        # Re-queue the instant the lock is released: a steady stream.
        for _ in range(rounds):
            with lock.write():
                room.enter_write(name)
                gevent.sleep(0)
                room.exit_write(name)

    def reader(name):
        room.log.append(("arrive", name))
        with lock.read():
            room.enter_read(name)
            gevent.sleep(0)
            room.exit_read(name)

    workers = [gevent.spawn(writer, "W%d" % i) for i in range(writers)]
    # Arrive mid-stream: a writer holds the lock and the others are queued.
    run_until(lambda: sum(1 for e in room.log if e[0] == "enter") >= 5)
    assert lock.writer and lock.waiting == writers - 1
    readers = ["R%d" % i for i in range(3)]
    workers += [gevent.spawn(reader, n) for n in readers]
    gevent.joinall(workers, raise_error=True)

    for name in readers:
        arrived = room.log.index(("arrive", name))
        entered = room.log.index(("enter", name))
        writer_phases = [e for e in room.log[arrived:entered]
                         if e[0] == "enter" and e[1].startswith("W")]
        # At most the holder plus the writers already queued ahead of it;
        # a writer that re-queues lands behind the reader.
        assert len(writer_phases) <= writers, (name, writer_phases)
    # The stream was still running when the readers got in.
    last_reader = max(room.log.index(("enter", n)) for n in readers)
    assert any(e[0] == "enter" and e[1].startswith("W")
               for e in room.log[last_reader:])


def test_reader_stream_cannot_starve_writer():
    lock = RWLock()
    room = Room(lock)
    rounds = 30

    def reader(name):
        # Staggered, overlapping, and re-queuing at once: without fairness
        # the lock would never be free of readers until the stream ends.
        for _ in range(rounds):
            room.log.append(("arrive", name))
            with lock.read():
                room.enter_read(name)
                gevent.sleep(0)
                gevent.sleep(0)
                room.exit_read(name)

    inside_when_w_arrived = set()

    def writer(name):
        room.log.append(("arrive", name))
        inside_when_w_arrived.update(room.readers)
        with lock.write():
            room.enter_write(name)
            gevent.sleep(0)
            room.exit_write(name)

    workers = [gevent.spawn(reader, "R%d" % i) for i in range(5)]
    run_until(lambda: room.max_readers >= 3)
    workers.append(gevent.spawn(writer, "W"))
    gevent.joinall(workers, raise_error=True)

    arrived = room.log.index(("arrive", "W"))
    entered = room.log.index(("enter", "W"))
    between = room.log[arrived:entered]
    # W had to wait for a reader phase in progress...
    assert inside_when_w_arrived
    # ...while readers kept arriving, and none of those got in first.
    assert any(e[0] == "arrive" for e in between[1:])
    assert not any(e[0] == "enter" for e in between)
    # And the reader stream was still going when W got its turn.
    assert any(e[0] == "enter" for e in room.log[entered:])


def test_killed_queued_writer_lets_later_readers_in():
    lock = RWLock()
    log, gates = [], {}
    lock.acquire_read()
    w = gevent.spawn(gated, lock, log, gates, "W1")
    run_until(lambda: lock.waiting == 1)
    r = gevent.spawn(gated, lock, log, gates, "R2")
    run_until(lambda: lock.waiting == 2)

    w.kill()
    # With the writer gone the reader at the head joins the current phase.
    assert (lock.readers, lock.waiting) == (2, 0)
    run_until(lambda: "R2" in log)
    assert "W1" not in log

    gates["R2"].set()
    r.join()
    lock.release_read()
    assert not lock.locked and lock.free
    lock.acquire_write()
    lock.release_write()


def test_killed_queued_reader_leaves_the_queue():
    lock = RWLock()
    log, gates = [], {}
    lock.acquire_write()
    r = gevent.spawn(gated, lock, log, gates, "R1")
    run_until(lambda: lock.waiting == 1)

    r.kill()
    assert lock.waiting == 0
    lock.release_write()
    assert not lock.locked and lock.free and log == []
    lock.acquire_write()
    lock.release_write()


def test_timeout_while_queued_leaves_lock_usable():
    lock = RWLock()
    lock.acquire_write()

    def impatient():
        # The holder only releases after this greenlet has finished, so
        # the timeout fires however fast or slow the machine is.
        with gevent.Timeout(0.001, False):
            lock.acquire_write()
            return "acquired"
        return "timed out"

    g = gevent.spawn(impatient)
    assert g.get() == "timed out"
    assert lock.waiting == 0 and lock.writer

    lock.release_write()
    assert not lock.locked and lock.free
    with lock.read():
        assert lock.readers == 1


def test_waiter_killed_after_grant_passes_lock_on():
    lock = RWLock()
    log, gates = [], {}
    lock.acquire_write()
    w = gevent.spawn(gated, lock, log, gates, "W1")
    run_until(lambda: lock.waiting == 1)
    r = gevent.spawn(gated, lock, log, gates, "R1")
    run_until(lambda: lock.waiting == 2)

    # The kill is scheduled before the release, so it lands after W1 has
    # been handed the lock but before W1 runs again.
    w.kill(block=False)
    lock.release_write()
    assert lock.writer and lock.waiting == 1

    w.join()
    assert w.dead and "W1" not in log
    # W1 passed its grant to the next in line instead of keeping it.
    assert (lock.readers, lock.writer, lock.waiting) == (1, False, 0)
    run_until(lambda: "R1" in log)
    gates["R1"].set()
    r.join()
    assert not lock.locked and lock.free


def test_releasing_an_unheld_lock_raises():
    lock = RWLock()
    with pytest.raises(RuntimeError):
        lock.release_read()
    with pytest.raises(RuntimeError):
        lock.release_write()

    lock.acquire_read()
    with pytest.raises(RuntimeError):
        lock.release_write()
    assert lock.readers == 1
    lock.release_read()

    lock.acquire_write()
    with pytest.raises(RuntimeError):
        lock.release_read()
    assert lock.writer
    lock.release_write()
    assert not lock.locked and lock.free


def test_context_managers_release_on_exception():
    lock = RWLock()
    with pytest.raises(ValueError):
        with lock.read():
            raise ValueError
    assert not lock.locked and lock.free
    with pytest.raises(ValueError):
        with lock.write():
            raise ValueError
    assert not lock.locked and lock.free

    # A failing writer still hands the lock to whoever is queued.
    log, gates = [], {}
    with pytest.raises(ValueError):
        with lock.write():
            r = gevent.spawn(gated, lock, log, gates, "R1")
            run_until(lambda: lock.waiting == 1)
            raise ValueError
    assert lock.readers == 1
    run_until(lambda: "R1" in log)
    gates["R1"].set()
    r.join()
    assert not lock.locked and lock.free


def test_context_managers_allocate_nothing_per_use():
    lock = RWLock()
    assert lock.read() is lock.read()
    assert lock.write() is lock.write()


def test_introspection_reports_state():
    lock = RWLock()
    assert (lock.readers, lock.writer, lock.waiting, lock.locked, lock.free) == (0, False, 0, False, True)
    lock.acquire_read()
    lock.acquire_read()
    assert (lock.readers, lock.writer, lock.waiting, lock.locked, lock.free) == (2, False, 0, True, False)
    log, gates = [], {}
    w = gevent.spawn(gated, lock, log, gates, "W1")
    run_until(lambda: lock.waiting == 1)
    assert (lock.readers, lock.writer, lock.locked) == (2, False, True)
    lock.release_read()
    lock.release_read()
    assert (lock.readers, lock.writer, lock.waiting, lock.locked) == (0, True, 0, True)
    run_until(lambda: "W1" in log)
    gates["W1"].set()
    w.join()
    assert (lock.readers, lock.writer, lock.waiting, lock.locked, lock.free) == (0, False, 0, False, True)


def test_reading_holds_the_lock_for_the_call_alone():
    lock = RWLock()
    seen = []
    assert lock.reading(lambda arg: seen.append((arg, lock.readers, lock.writer)) or 42, "x") == 42
    assert seen == [("x", 1, False)] and not lock.locked
    with pytest.raises(ZeroDivisionError):
        lock.reading(lambda arg: 1 / 0, None)
    assert not lock.locked and lock.free


def test_reading_waits_behind_a_writer_and_keeps_fifo_order():
    lock = RWLock()
    order = []
    lock.acquire_write()
    reader = gevent.spawn(lock.reading, lambda arg: order.append(arg), "reader")
    run_until(lambda: lock.waiting == 1)
    writer = gevent.spawn(lambda: (lock.acquire_write(), order.append("writer"), lock.release_write()))
    run_until(lambda: lock.waiting == 2)
    assert not lock.free
    lock.release_write()
    gevent.joinall([reader, writer], raise_error=True)
    assert order == ["reader", "writer"] and lock.free

"""Unit tests for the readiness set parked connections leave their sockets in (mbserver.ready).

Both kinds are driven over real socketpairs in the hub: the epoll set that
Linux uses and the watcher-per-descriptor set used where there is no epoll.
gevent.sleep(0.01) lets the hub run one pass of its loop; the gevent.Timeout
guards only turn a hang into a failure.
"""

from __future__ import annotations

import socket
import threading

import gevent
import pytest

from mbserver.ready import ReadySet, WatcherSet, ready_set

HANG_GUARD = 10


@pytest.fixture(params=[ReadySet, WatcherSet])
def kind(request):
    return request.param


@pytest.fixture
def pairs():
    """Make socketpairs (ours, the watched end), closed at the end."""
    opened: list[socket.socket] = []

    def make(count: int = 1) -> list[tuple[socket.socket, socket.socket]]:
        made = [socket.socketpair() for _ in range(count)]
        for ours, theirs in made:
            theirs.setblocking(False)
            opened.extend((ours, theirs))
        return made

    yield make
    for sock in opened:
        sock.close()


class Reader:
    """What the set is given in place of a connection: calls ``function(fd)``."""

    def __init__(self, function) -> None:
        self.on_readable = function


def test_a_reader_runs_in_the_hub_while_its_socket_is_readable(kind, pairs):
    ready = kind(gevent.get_hub().loop)
    ((ours, theirs),) = pairs()
    calls: list[bytes] = []

    def on_ready(fd: int) -> None:
        assert gevent.getcurrent() is gevent.get_hub()
        assert fd == theirs.fileno()
        calls.append(theirs.recv(100))

    with gevent.Timeout(HANG_GUARD):
        ready.add(theirs.fileno(), Reader(on_ready))
        gevent.sleep(0.01)
        assert calls == []  # nothing to read: not called
        ours.sendall(b"one")
        gevent.sleep(0.01)
        ours.sendall(b"two")
        gevent.sleep(0.01)
        assert calls == [b"one", b"two"]
        ready.remove(theirs.fileno())
        ours.sendall(b"three")
        gevent.sleep(0.01)
    assert calls == [b"one", b"two"] and len(ready) == 0
    assert theirs.recv(100) == b"three"


def test_a_reader_that_leaves_data_unread_is_called_again(kind, pairs):
    ready = kind(gevent.get_hub().loop)
    ((ours, theirs),) = pairs()
    calls: list[bytes] = []

    def on_ready(fd: int) -> None:
        calls.append(theirs.recv(2))  # a part of what waits
        if len(calls) == 3:
            ready.remove(theirs.fileno())

    with gevent.Timeout(HANG_GUARD):
        ready.add(theirs.fileno(), Reader(on_ready))
        ours.sendall(b"aabbccdd")
        while len(calls) < 3:
            gevent.sleep(0.001)
        gevent.sleep(0.01)
    assert calls == [b"aa", b"bb", b"cc"]


def test_every_ready_socket_is_called_and_a_removed_one_is_not(kind, pairs):
    ready = kind(gevent.get_hub().loop)
    made = pairs(5)
    calls: list[int] = []

    def callback(index: int):
        def on_ready(fd: int) -> None:
            assert fd == made[index][1].fileno()
            calls.append(index)
            made[index][1].recv(100)
            if len(calls) == 6:
                # The first called of the pass that finds all five ready
                # takes the other four out: none of them is called after.
                for other, (_, theirs) in enumerate(made):
                    if other != index:
                        ready.remove(theirs.fileno())
        return on_ready

    with gevent.Timeout(HANG_GUARD):
        for index, (_, theirs) in enumerate(made):
            ready.add(theirs.fileno(), Reader(callback(index)))
        for ours, _ in made:
            ours.sendall(b"x")
        gevent.sleep(0.01)  # one pass: each called once
        assert sorted(calls) == [0, 1, 2, 3, 4]
        for ours, _ in made:
            ours.sendall(b"y")
        gevent.sleep(0.01)
        assert len(calls) == 6 and len(ready) == 1
        for ours, _ in made:
            ours.sendall(b"z")
        gevent.sleep(0.01)
    assert calls[6:] == [calls[5]]


def test_a_socket_that_is_already_in_the_set_is_refused(kind, pairs):
    ready = kind(gevent.get_hub().loop)
    ((_, theirs),) = pairs()
    ready.add(theirs.fileno(), Reader(lambda fd: None))
    with pytest.raises(FileExistsError):
        ready.add(theirs.fileno(), Reader(lambda fd: None))
    assert len(ready) == 1
    ready.remove(theirs.fileno())
    assert len(ready) == 0


def test_the_set_keeps_its_hub_running_only_while_it_holds_a_socket(kind, pairs):
    """As a parked connection's own watcher did: gevent.wait() (wait for the
    loop to run out of work) waits while a socket is in the set, and returns
    once it is empty. In a thread of its own, whose hub nothing else uses."""
    ((_, theirs),) = pairs()
    results: list[object] = []

    def run() -> None:
        try:
            ready = kind(gevent.get_hub().loop)
            ready.add(theirs.fileno(), Reader(lambda fd: None))
            results.append(gevent.wait(timeout=0.05))
            ready.remove(theirs.fileno())
            results.append(gevent.wait(timeout=HANG_GUARD))
        except BaseException as error:  # reported below, in the test's thread
            results.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(HANG_GUARD * 2)
    assert results == [False, True]


def test_a_hub_has_one_set():
    hub = gevent.get_hub()
    assert ready_set(hub) is ready_set(hub)

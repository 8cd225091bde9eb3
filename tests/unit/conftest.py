"""Shared helpers for the unit tests: a movable clock, a fake server, wire-format builders.

What lives here: ``FakeClock`` (tests move time instead of sleeping) as the
``clock`` fixture; ``FakeAdmin``, a stand-in for the server behind the
operator commands (``commands.Admin``) that records what it was asked; and
``wire``: tests/packets.py, which builds request packets and parses
responses with no sockets. Every test collected from this folder is marked ``unit``.
What does not: anything that starts a server (see tests/integration).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .. import packets

HERE = Path(__file__).resolve().parent

# 2023-11-14T22:13:20Z: far enough from 0 that "absolute time in the past"
# and "relative seconds" cannot be confused.
T0 = 1_700_000_000.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.unit)


class FakeClock:
    """A clock for ``Store(clock=...)`` and ``Stats(clock=...)`` that only moves when told."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeAdmin:
    """``commands.Admin`` without a server: records each call in ``calls``.

    ``set_memory_limit`` shrinks ``store`` (when given) as the server does,
    in one go; ``refresh_certs`` answers ``certs_problem``.
    """

    def __init__(self, store=None, certs_problem: str | None = None):
        self.store = store
        self.certs_problem = certs_problem
        self.calls: list[tuple] = []

    def shutdown(self, graceful: bool) -> None:
        self.calls.append(("shutdown", graceful))

    def set_memory_limit(self, limit_bytes: int) -> None:
        self.calls.append(("set_memory_limit", limit_bytes))
        if self.store is not None:
            while not self.store.shrink(limit_bytes, 1000):
                pass

    def set_verbosity(self, level: int) -> None:
        self.calls.append(("set_verbosity", level))

    def refresh_certs(self) -> str | None:
        self.calls.append(("refresh_certs",))
        return self.certs_problem


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(clock):
    """A text connection to a fresh store and command layer, without the socket."""
    from .textclient import Client

    return Client(clock)


@pytest.fixture(scope="session")
def wire():
    """The sans-IO packet builders and response parser shared with tests/integration."""
    return packets

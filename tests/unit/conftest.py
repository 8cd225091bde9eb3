"""Shared helpers for the unit tests: a movable clock and wire-format builders.

What lives here: ``FakeClock`` (tests move time instead of sleeping) as the
``clock`` fixture, and ``wire``: tests/packets.py, which builds request
packets and parses responses with no sockets. Every test collected from this folder is marked ``unit``.
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

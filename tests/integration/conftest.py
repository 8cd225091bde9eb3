"""Fixtures for the integration tests: real server processes on loopback.

`start_server(*args)` starts `python -m mbserver 127.0.0.1:PORT *args` (or
memcached, with MBSERVER_IT_TARGET=memcached); `server` is one shared
default instance per test module; `memcached` is the reference server;
`launcher` and `reference` are a test's own Launchers of mbserver and
memcached (for `start_unix`, and servers side by side).
Every test collected from this folder is marked `integration`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from .support import TARGET, Launcher, ServerProcess, require_tool
from .wire import Connection

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: starts real server processes on loopback")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marker = pytest.mark.integration
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(marker)


@pytest.fixture
def start_server():
    """Factory: `start_server("-m", "1")` → a running ServerProcess, stopped after the test."""
    launcher = Launcher(TARGET)
    yield launcher.start
    launcher.stop_all()


@pytest.fixture
def launcher() -> Launcher:
    """mbserver's Launcher for this test: `.start(*args)`, `.start_unix(path, *args)`."""
    launcher = Launcher("mbserver")
    yield launcher
    launcher.stop_all()


@pytest.fixture
def reference() -> Launcher:
    """The reference memcached's Launcher for this test."""
    launcher = Launcher("memcached")
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def server() -> ServerProcess:
    """One server with default settings, shared by the tests of a module."""
    launcher = Launcher(TARGET)
    yield launcher.start()
    launcher.stop_all()


@pytest.fixture(scope="module")
def memcached() -> ServerProcess:
    """The reference memcached, for byte-level comparisons."""
    launcher = Launcher("memcached")
    yield launcher.start()
    launcher.stop_all()


@pytest.fixture
def conn(server: ServerProcess) -> Connection:
    with Connection(server.host, server.port) as c:
        yield c


@pytest.fixture
def key(request: pytest.FixtureRequest) -> bytes:
    """A key unique to the test, so tests sharing a module's server don't collide."""
    return b"it-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20].encode()


@pytest.fixture
def tool():
    """`tool("memccapable")` → its path; fails under CI=true when missing, else skips."""
    return require_tool


@pytest.fixture
def mbserver_only() -> None:
    """Skip tests of mbserver's own CLI when the target is the reference memcached."""
    if TARGET != "mbserver":
        pytest.skip("tests mbserver's own command line")

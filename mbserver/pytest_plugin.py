"""pytest fixtures that give a test suite a real memcached-compatible server.

Installed with the package through the ``pytest11`` entry point; without
installing, ``pytest -p mbserver.pytest_plugin``. What lives here:

- ``memcached_server``: one mbserver for the session, on a free loopback
  port (``.host``, ``.port``, ``.address``, ``.flush()``, ``.stats()``);
  ``--memcached-server-args`` (or the ``memcached_server_args`` ini value)
  adds command-line arguments to it.
- ``memcached_server_factory``: ``factory(memory_limit=1, username=...,
  password=..., tls_cert=..., tls_key=..., args=[...])`` starts a server of
  the test's own, stopped after the test.
- a report hook: a failing test that used one of these servers gets each
  server's log as a section of its report.

What does not: starting and stopping servers (``mbserver.testing``).
"""

from __future__ import annotations

import shlex
from typing import Iterator

import pytest

from .testing import ServerProcess, running_server, start_server

REPORT_LINES = 200  # lines of a server's log shown in a failing test's report


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mbserver", "memcached-compatible server for tests (mbserver)")
    group.addoption(
        "--memcached-server-args",
        metavar="ARGS",
        default=None,
        help="extra command-line arguments for the memcached_server fixture's server, "
        "split as a shell would, e.g. '-m 256 -v' (default: the memcached_server_args ini value)",
    )
    parser.addini(
        "memcached_server_args",
        "extra command-line arguments for the memcached_server fixture's server",
        default="",
    )


class ServerFactory:
    """``factory(**options)`` → a started server (options as ``mbserver.testing.start_server``)."""

    def __init__(self) -> None:
        self.servers: list[ServerProcess] = []

    def __call__(self, **options: object) -> ServerProcess:
        server = start_server(**options)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        while self.servers:
            self.servers.pop().stop()


@pytest.fixture(scope="session")
def memcached_server(pytestconfig: pytest.Config) -> Iterator[ServerProcess]:
    """One mbserver shared by the session; ``flush()`` it where tests must not share items."""
    args = pytestconfig.getoption("memcached_server_args")
    if args is None:
        args = pytestconfig.getini("memcached_server_args")
    with running_server(args=shlex.split(args)) as server:
        yield server


@pytest.fixture
def memcached_server_factory() -> Iterator[ServerFactory]:
    """Start servers with their own options; each is stopped when the test ends."""
    factory = ServerFactory()
    yield factory
    factory.stop_all()


def _servers_used_by(item: pytest.Item) -> list[ServerProcess]:
    """The servers among the test's fixture values (its own and those its fixtures asked for)."""
    servers: list[ServerProcess] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, ServerProcess):
            candidates = [value]
        elif isinstance(value, ServerFactory):
            candidates = value.servers
        else:
            continue
        servers += [server for server in candidates if server not in servers]
    return servers


def _report_section(server: ServerProcess) -> tuple[str, str]:
    lines = server.log().splitlines()
    if len(lines) > REPORT_LINES:
        lines = [f"[{len(lines) - REPORT_LINES} earlier lines]", *lines[-REPORT_LINES:]]
    state = "" if server.returncode is None else f", exited with status {server.returncode}"
    return f"mbserver {server.address} log (pid {server.pid}{state})", "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in _servers_used_by(item):
            report.sections.append(_report_section(server))

"""`python -m mbserver` as a program: arguments, exit codes, messages, signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from mbserver.testing import server_command

from .. import packets as P
from .support import REPO_ROOT
from .wire import Connection, ConnectionClosed

pytestmark = pytest.mark.usefixtures("mbserver_only")

TIMEOUT = 15


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        server_command(*args),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["nonsense"],
        ["127.0.0.1:99999"],
        ["127.0.0.1:abc"],
        ["127.0.0.1:-1"],
        ["127.0.0.1"],
        [":11211:"],
        ["[::1]"],
        ["::1:11211"],
        ["999.1.1.1:11211"],
        [],
        ["127.0.0.1:11211", "--bogus"],
        ["127.0.0.1:11211", "-m"],
        ["127.0.0.1:11211", "-m", "0"],
        ["127.0.0.1:11211", "-m", "lots"],
        ["127.0.0.1:11211", "-I", "5z"],
        ["127.0.0.1:11211", "-c", "0"],
        ["127.0.0.1:11211", "127.0.0.1:11212"],
    ],
    ids=lambda a: " ".join(a) or "<none>",
)
def test_bad_arguments_exit_2_with_usage(args):
    result = run(*args)
    assert result.returncode == 2, result
    assert "usage:" in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_port_in_use_fails_with_clear_message():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run(f"127.0.0.1:{port}")
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr, result.stderr
    assert "in use" in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr


def test_version_exits_0():
    result = run("--version")
    assert result.returncode == 0, result
    assert result.stdout.strip(), "no version printed"
    assert any(ch.isdigit() for ch in result.stdout)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0(flag):
    result = run(flag)
    assert result.returncode == 0, result
    assert "usage:" in result.stdout.lower()
    for option in ("-m", "-I", "-c", "-v", "--version"):
        assert option in result.stdout


def test_listens_on_ipv6_loopback(start_server):
    server = start_server(host="::1")
    with Connection(server.host, server.port) as conn:
        assert conn.request(P.set_(b"k", b"v6")).status == P.SUCCESS
        assert conn.request(P.get(b"k")).value == b"v6"


@pytest.mark.parametrize(
    "args",
    [["-m", "8"], ["-I", "2m"], ["-I", "512k"], ["-I", "100000"], ["-c", "10"], ["-v"], ["-vv"]],
)
def test_options_are_accepted(start_server, args):
    server = start_server(*args)
    with Connection(server.host, server.port) as conn:
        assert conn.request(P.set_(b"k", b"v")).status == P.SUCCESS
        assert conn.request(P.get(b"k")).value == b"v"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_server(start_server, sig):
    server = start_server()
    with Connection(server.host, server.port) as conn:
        assert conn.request(P.noop(1)).status == P.SUCCESS
        server.proc.send_signal(sig)
        returncode = server.proc.wait(TIMEOUT)
    assert returncode == 0, server.output()
    assert "Traceback" not in server.output()


def test_connection_limit_leaves_server_usable(start_server):
    server = start_server("-c", "2")
    first, second, third = (Connection(server.host, server.port, timeout=1) for _ in range(3))
    try:
        assert first.request(P.noop(1)).status == P.SUCCESS
        assert second.request(P.noop(2)).status == P.SUCCESS
        # Over the limit the server may queue, refuse or close (memcached
        # writes a text "ERROR Too many open connections"); it must not fall over.
        try:
            third.request(P.noop(3))
        except (OSError, ConnectionClosed, P.ProtocolViolation):
            pass
    finally:
        for conn in (first, second, third):
            conn.close()
    # The server sees those clients leave when their greenlets next run, so a
    # connection made at once may still be refused: poll, bounded.
    deadline = time.monotonic() + 5
    while True:
        try:
            with Connection(server.host, server.port) as conn:
                assert conn.request(P.noop(4)).status == P.SUCCESS
            break
        except (OSError, ConnectionClosed, P.ProtocolViolation):
            if time.monotonic() > deadline:
                raise

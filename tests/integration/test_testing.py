"""mbserver.testing with real processes: start-up time, readiness, errors, options, stopping.

What lives here: `running_server`/`start_server` as unittest, scripts and
notebooks use them — how fast a server is ready, the errors for bad options,
a server that never gets ready or cannot listen, a chatty server, SASL, TLS,
IPv6, the developer's MBSERVER_* variables, stopping (also a server a script
forgot). What does not: the pure helpers (tests/unit/test_testing.py), the
pytest fixtures (test_pytest_plugin.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import bmemcached
import pytest
from pymemcache.client.base import Client

from mbserver import testing
from mbserver.testing import ServerStartError, running_server, start_server

from .support import REPO_ROOT, assert_server_gone, mbserver_children, server_implementation
from ..certs import make_cert

pytestmark = pytest.mark.usefixtures("mbserver_only")

# Seconds from spawn to accepting (issue #13). PyPy runs the imports'
# module code without its JIT warm: 0.40-0.44 s on this project's machine,
# 0.7 s while it first writes its bytecode cache (CPython: 0.19-0.20 s).
READY_LIMIT = {"CPython": 0.5, "PyPy": 1.0}


@pytest.fixture
def no_leftovers():
    """Fail if the test leaves an mbserver child running."""
    before = mbserver_children()
    yield
    assert mbserver_children() - before == set()


def test_ready_in_half_a_second_on_cpython_a_second_on_pypy():
    timings = []
    for _ in range(3):
        started = time.monotonic()
        server = start_server()
        timings.append(time.monotonic() - started)
        with socket.create_connection((server.host, server.port), timeout=1):
            pass
        server.stop()
    # The best of three: the machine is shared, one slow start is not a regression.
    assert min(timings) < READY_LIMIT[server_implementation()], timings


def test_running_server_serves_then_stops(no_leftovers):
    with running_server(memory_limit=2) as server:
        assert server.host == "127.0.0.1"
        assert server.address == f"127.0.0.1:{server.port}"
        assert server.returncode is None
        client = Client((server.host, server.port))
        client.set("k", b"v")
        stats = server.stats()
        assert stats["pid"] == server.pid
        assert stats["curr_items"] == 1
        assert stats["limit_maxbytes"] == 2 << 20
        assert server.stats("settings")["maxbytes"] == 2 << 20
        server.flush()
        assert client.get("k") is None
        client.close()
    assert server.returncode == 0
    assert server.stop() == 0  # again: nothing to do, same answer
    assert "stopped" in server.log()
    assert_server_gone(server.pid, server.port)


def test_an_unknown_stats_group_is_an_error():
    with running_server() as server:
        with pytest.raises(testing.ServerError, match="stats bogus answered b'ERROR"):
            server.stats("bogus")


def test_unknown_option_raises_with_the_usage_message(no_leftovers):
    with pytest.raises(ServerStartError) as raised:
        with running_server(no_such_option=1):
            pytest.fail("started with an unknown option")
    message = str(raised.value)
    assert "exited with status 2 before listening" in message
    assert "usage: python -m mbserver" in message
    assert "unrecognized arguments: --no-such-option 1" in message
    assert "usage:" in raised.value.output


def test_bad_option_value_raises_with_the_servers_reason(no_leftovers):
    with pytest.raises(ServerStartError, match="-I cannot be more than half of -m"):
        start_server(memory_limit=1, max_item_size="1m")


def test_never_ready_stops_the_server_and_says_so(no_leftovers):
    with pytest.raises(ServerStartError, match=r"did not start listening within 0\.001 s"):
        start_server(ready_timeout=0.001)


def test_port_in_use_raises_with_the_servers_message(no_leftovers):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServerStartError) as raised:
            start_server(port=port)
    assert "exited with status 1" in str(raised.value)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in raised.value.output


def test_a_chatty_server_never_blocks_on_its_output(monkeypatch):
    # -v logs two lines per connection: 1,500 connections write ~250 KiB,
    # several times a pipe's buffer, while the log kept stays bounded.
    monkeypatch.setattr(testing, "LOG_LIMIT", 8192)
    with running_server(verbose=True) as server:
        for _ in range(1500):
            socket.create_connection((server.host, server.port), timeout=5).close()
        assert server.stats()["total_connections"] >= 1500
    log = server.log()  # after the stop: all of the output has been read
    assert log.startswith("[") and "earlier bytes dropped]" in log.splitlines()[0]
    assert len(log) < 8192 + 100
    assert "connected (#1500)" in log
    assert "connected (#1)\n" not in log


def test_sasl_credentials(no_leftovers):
    with running_server(username="ada", password="s3cret") as server:
        anonymous = bmemcached.Client([server.address])
        with pytest.raises(bmemcached.exceptions.MemcachedException):
            anonymous.set("k", "v")
        anonymous.disconnect_all()
        client = bmemcached.Client([server.address], "ada", "s3cret")
        assert client.set("k", "v")
        assert server.stats()["curr_items"] == 1  # the helpers authenticate themselves
        server.flush()
        assert client.get("k") is None
        client.disconnect_all()
    assert "s3cret" not in server.log()
    assert "s3cret" not in " ".join(server.argv)  # credentials travel in the environment


def test_auth_file_credentials_serve_the_helpers(tmp_path):
    users = tmp_path / "users"
    users.write_text("grace:hopper\n")
    with running_server(auth_file=users) as server:
        assert "SASL PLAIN required" in server.log()
        assert server.stats()["curr_items"] == 0
        server.flush()


def test_tls(tmp_path):
    cert, key = make_cert(tmp_path)
    with running_server(tls_cert=cert, tls_key=key) as server:
        assert ", TLS" in server.log()
        assert server.stats()["curr_connections"] >= 1
        server.flush()


@pytest.fixture
def socket_path():
    directory = tempfile.mkdtemp(prefix="mbu-")  # short: a socket path has at most 107 bytes
    yield os.path.join(directory, "mb.sock")
    shutil.rmtree(directory, ignore_errors=True)


def test_a_unix_socket_alone(socket_path, no_leftovers):
    with running_server(port=None, unix_socket=socket_path) as server:
        assert (server.host, server.port) == ("", 0)
        assert server.address == socket_path
        assert f"<ServerProcess pid={server.pid} {socket_path} running>" == repr(server)
        client = Client(socket_path)
        client.set("k", b"v", noreply=False)
        assert server.stats()["curr_items"] == 1
        assert server.stats("settings")["domain_socket"] == socket_path
        server.flush()
        assert client.get("k") is None
        client.close()
    assert server.returncode == 0
    assert not os.path.exists(socket_path)


def test_a_unix_socket_beside_the_port(socket_path):
    with running_server(unix_socket=socket_path) as server:
        assert server.port and server.address == f"127.0.0.1:{server.port}"
        client = Client(socket_path)
        client.set("k", b"v", noreply=False)
        client.close()
        assert server.stats()["curr_items"] == 1  # over TCP


def test_tls_with_a_unix_socket_alone_talks_plain_text_there(socket_path, tmp_path):
    cert, key = make_cert(tmp_path)
    with running_server(port=None, unix_socket=socket_path, tls_cert=cert, tls_key=key) as server:
        assert server.stats()["curr_connections"] >= 1
        server.flush()


def test_ipv6_loopback():
    with running_server(host="::1") as server:
        assert server.host == "::1"
        assert server.address == f"[::1]:{server.port}"
        assert server.stats()["pid"] == server.pid


def test_the_developers_mbserver_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("MBSERVER_MEMORY_LIMIT", "1")
    monkeypatch.setenv("MBSERVER_USERNAME", "someone")
    with running_server() as server:
        assert server.stats()["limit_maxbytes"] == 64 << 20
    with running_server(env={"MBSERVER_MEMORY_LIMIT": "3"}) as server:
        assert server.stats()["limit_maxbytes"] == 3 << 20


def test_args_pass_through():
    with running_server(args=["-m", "5", "-c", "7"]) as server:
        settings = server.stats("settings")
        assert (settings["maxbytes"], settings["maxconns"]) == (5 << 20, 7)


def test_a_server_killed_from_outside_reports_its_signal():
    server = start_server()
    os.kill(server.pid, signal.SIGKILL)
    assert server.stop() == -signal.SIGKILL
    assert_server_gone(server.pid, server.port)


def test_a_script_that_forgets_to_stop_its_server_stops_it_at_exit():
    script = (
        "from mbserver.testing import start_server\n"
        "server = start_server()\n"
        "print(server.pid, server.port, flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    pid, port = map(int, result.stdout.split())
    assert_server_gone(pid, port)

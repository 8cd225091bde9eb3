"""Hosting: the Procfile under honcho, configuration from the environment, graceful stops.

Procfile hosts stop a process with SIGTERM and kill it 30 s later; these
tests check that mbserver answers everything a client already sent, exits 0
within --shutdown-timeout, and exits at once on a second signal.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import bmemcached
import pytest

from mbserver.testing import server_command

from .. import packets as P
from .support import REPO_ROOT, free_port
from .wire import Connection, ConnectionClosed

pytestmark = pytest.mark.usefixtures("mbserver_only")


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the process exited before listening"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port} within {timeout}s")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_closed(conn: Connection) -> None:
    """The server closed the connection with nothing more to say."""
    with pytest.raises(ConnectionClosed) as closed:
        conn.recv()
    assert closed.value.received == []


def _server(*args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        server_command(f"127.0.0.1:{port}", *args),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _wait_for_port(port, proc)
    return proc, port


def test_procfile_runs_under_honcho_and_stops_cleanly():
    port = free_port()
    env = dict(os.environ)
    # What a Procfile host provides: `python` on PATH (this interpreter),
    # $PORT (honcho's -p), and configuration in the environment.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["MBSERVER_MAX_CONNECTIONS"] = "77"
    env["MBSERVER_MEMORY_LIMIT"] = "16"
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "-d", str(REPO_ROOT), "-f",
         str(REPO_ROOT / "Procfile"), "start", "-p", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_port(port, honcho)
        client = bmemcached.Client([f"127.0.0.1:{port}"])
        assert client.set("hosted", "value") is True
        assert client.get("hosted") == "value"
        stats = client.stats()[f"127.0.0.1:{port}"]
        assert stats["max_connections"] == b"77"
        assert stats["limit_maxbytes"] == str(16 << 20).encode()
        client.disconnect_all()
    finally:
        _stop(honcho)  # honcho itself exits 143 after a SIGTERM; its child is what counts
    output = honcho.stdout.read()
    assert "web.1 stopped (rc=0)" in output, output
    assert "received SIGTERM" in output, output


def test_a_client_mid_pipeline_gets_every_reply_on_sigterm():
    proc, port = _server("--shutdown-timeout", "20")
    try:
        batch = b"".join(
            P.set_(b"drain-%d" % i, b"v%d" % i, opaque=i) + P.get(b"drain-%d" % i, opaque=i)
            for i in range(2000)
        )
        cut = len(batch) // 2 + 7  # mid-packet
        with Connection("127.0.0.1", port, timeout=10) as conn:
            conn.send(batch[:cut])
            # The server has started on the batch: its first replies are here.
            first = conn.recv_n(2)
            assert [r.opaque for r in first] == [0, 0]
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)  # the stop is under way while the batch is half sent
            conn.send(batch[cut:])
            replies = conn.recv_n(4000 - 2)
            assert [r.status for r in replies] == [P.SUCCESS] * (4000 - 2)
            assert [r.value for r in replies[1::2]][-1] == b"v1999"
            _assert_closed(conn)
        assert proc.wait(timeout=15) == 0
    finally:
        _stop(proc, signal.SIGKILL)


def test_a_second_signal_exits_at_once():
    proc, port = _server("--shutdown-timeout", "60")
    try:
        with Connection("127.0.0.1", port, timeout=10) as conn:
            conn.send(P.get(b"never-finished")[:30])  # a request in progress
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None, "the first signal must wait for the client"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 128 + signal.SIGTERM
            assert time.monotonic() - started < 5
    finally:
        _stop(proc, signal.SIGKILL)


def test_shutdown_timeout_bounds_the_drain():
    proc, port = _server("--shutdown-timeout", "1")
    try:
        with Connection("127.0.0.1", port, timeout=10) as conn:
            conn.send(P.get(b"never-finished")[:30])
            time.sleep(0.2)
            started = time.monotonic()
            assert _stop(proc) == 0
            assert time.monotonic() - started < 8
    finally:
        _stop(proc, signal.SIGKILL)


def test_idle_clients_do_not_delay_a_stop():
    proc, port = _server("--shutdown-timeout", "60")
    try:
        conns = [Connection("127.0.0.1", port, timeout=10) for _ in range(20)]
        for i, conn in enumerate(conns):
            assert conn.request(P.noop(i)).status == P.SUCCESS
        started = time.monotonic()
        assert _stop(proc) == 0
        assert time.monotonic() - started < 8
        for conn in conns:
            _assert_closed(conn)
            conn.close()
    finally:
        _stop(proc, signal.SIGKILL)

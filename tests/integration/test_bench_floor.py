"""bench/floorserver.py as a process, with a real client, as bench/floor.py starts it.

Its answers are checked without sockets in tests/unit/test_bench_floor.py;
here python-binary-memcached stores and reads through it, bench/run.py's
memory rows (which bench/floor.py runs on it too) load it and hold idle
connections to it, and a bad command line or a taken port is a message and
exit status 1.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import bmemcached

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
try:
    import run
    import servers
finally:
    sys.path.remove(str(BENCH))

FLOOR = [servers.server_command()[0], str(BENCH / "floorserver.py")]


def test_a_real_client_stores_and_reads_through_the_floor_server(tmp_path):
    server = servers.start("floor", 64, 100, tmp_path)  # up once it answers a NOOP
    try:
        client = bmemcached.Client([f"127.0.0.1:{server.port}"], socket_timeout=5)
        try:
            assert client.set("key", {"a": 1}) is True  # pickled: flags say so
            assert client.get("key") == {"a": 1}
            assert client.set("big", b"x" * 100_000) is True  # more than one read
            assert client.get("big") == b"x" * 100_000
            assert client.get("missing") is None
        finally:
            client.disconnect_all()
    finally:
        assert server.stop() in (0, -15)


def test_the_memory_rows_measure_the_floor_server(tmp_path):
    server = servers.start("floor", 64, 100, tmp_path)
    try:
        items = run.item_memory(server, 20_000)  # pipelined SETQ, then a NOOP
        assert items["refused"] == 0 and items["rss0"] > 0 and items["per_item"] > 100
        idle = run.idle_memory(server, 50, lambda: {"seen": True})
        assert (idle["conns"], idle["seen"]) == (50, True) and idle["rss1"] >= idle["rss0"] > 0
        client = bmemcached.Client([f"127.0.0.1:{server.port}"], socket_timeout=5)
        try:
            assert client.get("bench:0000019999") == "v" * 100  # the load's last item (flags 0: str)
            server.check_alive()
        finally:
            client.disconnect_all()
    finally:
        assert server.stop() in (0, -15)


def test_a_bad_command_line_or_a_taken_port_is_an_error():
    usage = subprocess.run(FLOOR, capture_output=True, text=True, timeout=30)
    assert (usage.returncode, usage.stderr.strip()) == (1, "usage: python bench/floorserver.py PORT")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = subprocess.run([*FLOOR, str(port)], capture_output=True, text=True, timeout=30)
    assert (busy.returncode, busy.stderr.strip()) == (1, f"floorserver: port {port} in use")

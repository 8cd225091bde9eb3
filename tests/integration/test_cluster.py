"""Three mbserver nodes as one cache: behind twemproxy (nutcracker), and
sharded by consistent-hashing clients (pymemcache's HashClient, pylibmc with
ketama over the binary protocol), including losing one node."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pylibmc
import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from .support import REPO_ROOT, ServerProcess, free_port

IO_TIMEOUT = 5.0
KEYS = 300
TWEMPROXY_CONFIG = REPO_ROOT / "deploy" / "twemproxy.yml"
# Debian installs nutcracker in /usr/sbin, which is not on every PATH.
NUTCRACKER_SBIN = Path("/usr/sbin/nutcracker")


@pytest.fixture
def nodes(start_server) -> list[ServerProcess]:
    return [start_server() for _ in range(3)]


def items_per_node(nodes: list[ServerProcess], keys: list[str]) -> list[set[str]]:
    """Which of `keys` each node holds, asked of each node directly."""
    held = []
    for node in nodes:
        c = Client((node.host, node.port), timeout=IO_TIMEOUT)
        held.append(set(c.get_many(keys)))
        c.close()
    return held


def curr_items(node: ServerProcess) -> int:
    c = Client((node.host, node.port), timeout=IO_TIMEOUT)
    try:
        return int(c.stats()[b"curr_items"])
    finally:
        c.close()


# --- twemproxy ---------------------------------------------------------------


def nutcracker_path(tool) -> str:
    if NUTCRACKER_SBIN.is_file() and os.access(NUTCRACKER_SBIN, os.X_OK):
        return str(NUTCRACKER_SBIN)
    return tool("nutcracker")  # on PATH, or fail under CI=true, or skip


def twemproxy_config(listen_port: int, nodes: list[ServerProcess]) -> str:
    """deploy/twemproxy.yml with this test's ports: the shipped file is what runs."""
    text = TWEMPROXY_CONFIG.read_text()
    text, n = re.subn(r"listen: \S+", f"listen: 127.0.0.1:{listen_port}", text)
    assert n == 1, "deploy/twemproxy.yml must have one listen line"
    server_lines = re.findall(r"^( *- )\S+:\d+:(\d+) (\S+)$", text, re.MULTILINE)
    assert len(server_lines) == len(nodes), server_lines
    for node, (indent, weight, name) in zip(nodes, server_lines):
        text = re.sub(
            rf"^ *- \S+:\d+:{weight} {name}$",
            f"{indent}{node.address}:{weight} {name}",
            text,
            count=1,
            flags=re.MULTILINE,
        )
    return text


@pytest.fixture
def twemproxy(nodes, tool, tmp_path):
    binary = nutcracker_path(tool)
    port = free_port()
    conf = tmp_path / "twemproxy.yml"
    conf.write_text(twemproxy_config(port, nodes))
    log = tmp_path / "nutcracker.log"
    argv = [
        binary, "-c", str(conf), "-o", str(log), "-p", str(tmp_path / "nutcracker.pid"),
        "-s", str(free_port()), "-a", "127.0.0.1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, f"nutcracker exited {proc.returncode}:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"nutcracker not listening:\n{log.read_text()}"
                time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_twemproxy_spreads_writes_and_reads_them_back(twemproxy, nodes):
    proxy = Client(twemproxy, connect_timeout=IO_TIMEOUT, timeout=IO_TIMEOUT)
    items = {f"proxy-{i}": f"value-{i}".encode() for i in range(KEYS)}
    for key, value in items.items():
        assert proxy.set(key, value, noreply=False) is True
    counts = [curr_items(node) for node in nodes]
    assert sum(counts) == KEYS
    assert all(n > 0 for n in counts), counts
    assert proxy.get_many(list(items)) == items  # a multi-get split across the nodes
    assert proxy.get("proxy-1") == b"value-1"
    assert proxy.incr("proxy-counter", 1, noreply=False) is None
    proxy.set("proxy-counter", b"1", noreply=False)
    assert proxy.incr("proxy-counter", 41, noreply=False) == 42
    assert proxy.delete("proxy-1", noreply=False) is True
    assert proxy.get("proxy-1") is None
    proxy.close()


# --- consistent-hashing clients ----------------------------------------------


def test_hash_client_loses_only_the_stopped_nodes_share(nodes):
    hc = HashClient(
        [(n.host, n.port) for n in nodes],
        connect_timeout=1,
        timeout=IO_TIMEOUT,
        ignore_exc=True,  # a dead node is a miss, as for any cache
        retry_attempts=1,
        dead_timeout=60,
    )
    items = {f"hc-{i}": str(i).encode() for i in range(KEYS)}
    assert hc.set_many(items, noreply=False) == []
    held = items_per_node(nodes, list(items))
    assert all(held), [len(h) for h in held]
    assert sum(len(h) for h in held) == KEYS

    nodes[0].stop()
    lost = held[0]
    for key, value in items.items():
        assert hc.get(key) == (None if key in lost else value), key
    survivor = next(iter(held[1]))
    assert hc.set(survivor, b"new", noreply=False) is True
    assert hc.get(survivor) == b"new"
    hc.close()


def test_pylibmc_ketama_loses_only_the_stopped_nodes_share(nodes):
    mc = pylibmc.Client(
        [n.address for n in nodes],
        binary=True,
        behaviors={
            "ketama": True,
            # Keep a dead node on the ring: its keys error out instead of being
            # remapped onto the survivors, which would move them and move them back.
            # (Setting remove_failed, libmemcached's other name for it, turns ejection on.)
            "auto_eject": False,
            "retry_timeout": 60,
            "connect_timeout": 1000,
            "receive_timeout": 5_000_000,
            "send_timeout": 5_000_000,
        },
    )
    items = {f"ketama-{i}": str(i).encode() for i in range(KEYS)}
    assert mc.set_multi(items) == []
    assert mc.get_multi(list(items)) == items
    held = items_per_node(nodes, list(items))
    assert all(held), [len(h) for h in held]
    assert sum(len(h) for h in held) == KEYS

    nodes[0].stop()
    lost = held[0]
    for key, value in items.items():
        try:
            got = mc.get(key)
        except pylibmc.Error:
            got = None
        assert got == (None if key in lost else value), key
    survivor = next(iter(held[1]))
    assert mc.set(survivor, b"new") is True
    assert mc.get(survivor) == b"new"
    mc.disconnect_all()

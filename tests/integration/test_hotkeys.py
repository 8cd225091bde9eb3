"""`--hot-keys N`: `stats hotkeys` over both protocols, and the Prometheus metrics.

A real server counts a sample of the traffic: the hot keys here get far more
requests than the rest (20,000, 8,000 and 3,000 against one each), so their
order is the same in every run whatever the sample.
"""

from __future__ import annotations

import socket
import urllib.request

from .. import packets as P
from .support import free_port
from .test_binary_stats import stats as binary_stats
from .textwire import parse_stats, read_reply
from .wire import Connection

TIMEOUT = 10.0


def test_stats_hotkeys_over_both_protocols_and_the_metrics(launcher):
    metrics_port = free_port()
    server = launcher.start("--hot-keys", "3", "--metrics-port", str(metrics_port))
    with Connection(server.host, server.port, timeout=TIMEOUT) as conn:
        conn.sync(P.get(b"hot", P.GETQ) * 20_000)  # misses: quiet GETs answer nothing
        conn.sync(P.get(b"odd key", P.GETQ) * 8_000)  # binary keys may hold a space
        conn.sync(b"".join(P.get(b"cold:%d" % i, P.GETQ) for i in range(1000)))
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"set warm 0 0 1 noreply\r\nx\r\n" * 3000 + b"mn\r\n")
        read_reply(sock, b"MN\r\n")
        sock.sendall(b"stats hotkeys\r\n")
        text = parse_stats(read_reply(sock, b"END\r\n"))

    assert [text[f"hotkey:{rank}:key"] for rank in (1, 2, 3)] == ["hot", "odd%20key", "warm"]
    assert "hotkey:4:key" not in text
    assert (text["hotkeys:capacity"], text["hotkeys:sample_rate"]) == ("3", "16")
    requests = int(text["hotkeys:requests"])
    assert 0.8 * 32_000 < requests < 1.2 * 32_000
    assert 0.8 * 20_000 < int(text["hotkey:1:estimate"]) < 1.2 * 20_000
    assert text["hotkey:1:sets"] == "0" and text["hotkey:3:gets"] == "0"
    assert 50 < float(text["hotkey:1:percent"]) < 75

    with Connection(server.host, server.port, timeout=TIMEOUT) as conn:
        binary = binary_stats(conn, b"hotkeys")
    assert [binary[f"hotkey:{rank}:key"] for rank in (1, 2, 3)] == ["hot", "odd%20key", "warm"]
    assert binary["hotkeys:capacity"] == "3"

    url = f"http://{server.host}:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        metrics = response.read().decode()
    assert 'mbserver_hot_key_requests{key="hot",rank="1"}' in metrics
    assert 'mbserver_hot_key_requests{key="odd%20key",rank="2"}' in metrics
    assert metrics.count("mbserver_hot_key_requests{") == 3


def test_stats_hotkeys_when_off(launcher):
    server = launcher.start()
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"stats hotkeys\r\n")
        assert read_reply(sock, b"END\r\n") == b"STAT hotkeys:capacity 0\r\nEND\r\n"

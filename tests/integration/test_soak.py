"""bench/soak.py for 30 seconds against a fresh server: every reply right, nothing leaked.

What lives here: one short soak (every command, hundreds of connections
that come and go, pipelines, slow readers, abrupt closes, values up to
500 KiB, a memory limit that forces eviction) against a server started by
the `start_server` fixture -- mbserver, or memcached with
MBSERVER_IT_TARGET=memcached, which checks the soak's model against the
reference -- and the soak's command-line errors.

Timing is not judged (the machine is shared): memory flatness needs the
long run (`python bench/soak.py`, see bench/README.md), and the counts
asserted here are far below what 30 seconds give even on a loaded machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
MEMORY_MIB = 32


def soak(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SOAK), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(240)
def test_a_short_soak_gets_only_right_answers_and_leaks_nothing(start_server, tmp_path):
    server = start_server("-m", str(MEMORY_MIB))
    report_path = tmp_path / "soak.json"
    result = soak("--duration", "30", "--connections", "200", "--memory-mib", str(MEMORY_MIB), "--seed", "14",
                  "--server", server.address, "--pid", str(server.proc.pid), "--json", str(report_path))
    assert result.returncode in (0, 1), f"{result.stdout}\n{result.stderr}"
    report = json.loads(report_path.read_text())
    # The server's own log says why it closed or refused anything.
    summary = f"{result.stdout}\n{result.stderr[-3000:]}\nserver log (tail):\n{server.output()[-3000:]}"

    assert report["wrong_replies"] == 0, summary
    assert report["errors"] == {}, summary
    assert report["fds"]["baseline"] is not None and report["fds"]["end"] <= report["fds"]["baseline"], summary
    assert report["fds"]["peak"] >= report["fds"]["baseline"] + 100, summary  # the connections were there
    # A 30-second run cannot judge memory flatness; nothing else may fail.
    assert all(failure.startswith("memory:") for failure in report["failures"]), summary

    assert report["commands_not_run"] == [], summary
    assert min(n for command, n in report["commands"].items() if "flush" not in command) >= 10, summary
    assert report["operations"] >= 50_000, summary
    assert report["outcomes"]["hit"] >= 1_000 and report["outcomes"]["miss"] >= 1_000, summary
    assert report["evictions"] > 0, summary
    assert report["connections_opened"] >= 500 and report["peak_open"] >= 100, summary
    assert report["slow_connections"] >= 1 and report["pipelines"] >= 100, summary
    assert set(report["closes"]) == {"close", "quit", "half-close", "unread", "reset", "cut"}, summary
    assert len(report["flushes"]) == 1, summary


@pytest.mark.parametrize(
    "args, message",
    [
        (["--duration", "0"], "must be positive"),
        (["--memory-mib", "1"], "at least 2"),
        (["--pid", "1"], "--pid goes with --server"),
    ],
)
def test_bad_options_are_usage_errors(args, message):
    result = soak(*args, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr

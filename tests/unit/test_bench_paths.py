"""bench/paths.py, the in-process per-path benchmark, keeps working (a smoke run).

The figures themselves are not checked: timings belong in benchmarks, not
tests. What is checked is that every path it drives is answered (a path that
errored or closed the connection early would report nonsense).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "paths.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120
    )


def test_a_short_run_reports_every_path():
    result = run("--requests", "300", "--repeats", "1", "--keys", "20")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "20 key(s)" in lines[0]
    figures = [line for line in lines[1:] if line.endswith(" us")]
    assert len(figures) == 7
    assert all(float(line.split()[-2]) > 0 for line in figures)


@pytest.mark.parametrize("option", ["--requests", "--repeats", "--keys"])
def test_a_count_below_one_is_a_usage_error(option):
    result = run(option, "0")
    assert result.returncode == 2
    assert "must be at least 1" in result.stderr


def test_every_path_is_answered():
    """Each scripted read gets exactly the replies it asks for."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        import paths
    finally:
        sys.path.remove(str(BENCH.parent))
    from mbserver.commands import Commands
    from mbserver.config import Settings
    from mbserver.connection import Connection
    from mbserver.rwlock import RWLock
    from mbserver.stats import Stats
    from mbserver.store import Mode, Store

    keys = [b"key-%012d" % i for i in range(3)]
    for name, reads, per_read in paths.paths(keys):
        store = Store(1 << 20)
        for key in keys:
            store.store(Mode.SET, key, paths.VALUE)
        stats = Stats()
        sock = paths.ScriptedSocket(reads, 4)
        sent: list[bytes] = []
        sock.send = lambda data: sent.append(bytes(data)) or len(data)
        Connection(sock, "bench", Commands(store, RWLock(), stats, Settings()), stats, Settings()).serve()
        assert sock.index == 4, name  # every read was taken: the connection never closed early
        assert stats.cmd_get + stats.cmd_set == 4 * per_read, name
        assert stats.get_misses == 0, name
        assert b"ERROR" not in b"".join(sent), name

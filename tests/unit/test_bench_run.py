"""bench/run.py's command line and the server commands it starts (no servers run here).

The benchmark itself is run by hand; what is checked here is that
--memcached-threads reaches memcached's command line, and only memcached's,
and that a count memcached would refuse is a usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
try:
    import run
    import servers
finally:
    sys.path.remove(str(BENCH))


def _threads(cmd: list[str]) -> str | None:
    return cmd[cmd.index("-t") + 1] if "-t" in cmd else None


def test_memcached_keeps_its_own_thread_count_by_default():
    assert run.parse_args([]).memcached_threads is None
    assert _threads(servers.command("memcached", 11211, 64, 100)) is None


def test_memcached_threads_reach_memcached_only():
    args = run.parse_args(["--memcached-threads", "1"])
    assert args.memcached_threads == 1
    assert _threads(servers.command("memcached", 11211, 64, 100, args.memcached_threads)) == "1"
    mbserver = servers.command("mbserver", 11211, 64, 100, args.memcached_threads)
    assert "-t" not in mbserver


@pytest.mark.parametrize("count", ["0", "-2", "two"])
def test_a_thread_count_memcached_refuses_is_a_usage_error(count, capsys):
    with pytest.raises(SystemExit) as exited:
        run.parse_args(["--memcached-threads", count])
    assert exited.value.code == 2
    assert "--memcached-threads" in capsys.readouterr().err

"""libmemcached's memccapable conformance suite, binary tests only."""

from __future__ import annotations

import subprocess


def test_memccapable_binary_suite_passes(server, tool):
    memccapable = tool("memccapable")
    result = subprocess.run(
        # -b: binary protocol tests only; -t: per-I/O timeout in seconds.
        [memccapable, "-b", "-h", server.host, "-p", str(server.port), "-t", "5"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    failed = [line for line in output.splitlines() if "FAIL" in line.upper()]
    assert result.returncode == 0, output
    assert failed == [], output
    assert "All tests passed" in output
    assert output.count("[pass]") >= 27, output

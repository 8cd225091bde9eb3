"""loadtest/locustfile.py, run headless by locust against a real server.

A clean run against a live server reports requests and no failures; the
same run against a stopped server reports every request as a failure (never
as a cache miss); a bad --host is one clear line, not a traceback.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support import REPO_ROOT

LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"
REQUEST_NAMES = {"get-hit", "get-miss", "set", "delete", "get-multi", "incr"}
# Locust itself needs a second or two to start and stop around the run time.
LOCUST_TIMEOUT = 60


@pytest.fixture(scope="module", autouse=True)
def locust_installed() -> None:
    # find_spec, not import: importing locust would monkey-patch pytest's process with gevent.
    if importlib.util.find_spec("locust") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("locust is not installed (required when CI=true)")
        pytest.skip("locust is not installed")


def run_locust(tmp_path: Path, host: str, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, tuple[int, int]]]:
    """Run the locustfile headless; return the process and (requests, failures) by request name."""
    report = tmp_path / "stats"
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", host]
    argv += ["--headless", "--only-summary", "--json-file", str(report), "--csv", str(report), *args]
    # No LOCUST_* settings from the caller's shell, and a cwd without locust.conf.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    proc = subprocess.run(
        argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=LOCUST_TIMEOUT
    )
    counts: dict[str, tuple[int, int]] = {}
    if report.with_suffix(".json").exists():
        # Written at shutdown, so it counts every request (the CSV files lag by up to a second).
        for entry in json.loads(report.with_suffix(".json").read_text()):
            counts[entry["name"]] = (entry["num_requests"], entry["num_failures"])
    return proc, counts


def total(counts: dict[str, tuple[int, int]]) -> tuple[int, int]:
    return sum(r for r, _ in counts.values()), sum(f for _, f in counts.values())


def output(proc: subprocess.CompletedProcess) -> str:
    return f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"


def test_clean_run_against_a_live_server(server, tmp_path):
    proc, counts = run_locust(tmp_path, server.address, "-u", "10", "-r", "10", "-t", "4s")
    assert proc.returncode == 0, output(proc)
    requests, failures = total(counts)
    assert requests > 0, output(proc)
    assert failures == 0, output(proc)
    # Every kind of call was made and reported under its own name.
    assert set(counts) == REQUEST_NAMES, output(proc)


def test_a_dead_server_is_failures_not_misses(start_server, tmp_path):
    dead = start_server()
    address = dead.address
    dead.stop()
    proc, counts = run_locust(tmp_path, address, "-u", "10", "-r", "10", "-t", "3s")
    assert proc.returncode == 1, output(proc)  # locust's exit code when requests failed
    requests, failures = total(counts)
    assert failures > 0, output(proc)
    # Not one call passed for a hit, a miss or a stored value.
    assert failures == requests, output(proc)
    assert "get-miss" not in counts, output(proc)
    with open(tmp_path / "stats_failures.csv", newline="") as f:
        errors = {row["Error"] for row in csv.DictReader(f)}
    assert errors and all("ServerUnreachable" in e and "ConnectionRefusedError" in e for e in errors), errors


def test_a_bad_host_is_one_clear_error(tmp_path):
    proc, counts = run_locust(tmp_path, "http://127.0.0.1:11211", "-u", "1", "-t", "2s")
    assert proc.returncode == 1, output(proc)
    assert "a memcached server has no http:// URL" in proc.stderr, output(proc)
    assert "Traceback" not in proc.stderr + proc.stdout, output(proc)
    assert counts == {}, output(proc)  # stopped before any user ran

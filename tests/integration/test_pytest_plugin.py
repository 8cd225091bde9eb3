"""The pytest plugin, run as another project runs it: `pytest -p mbserver.pytest_plugin`.

What lives here: tests/plugin_sample (pymemcache, Django's PyMemcacheCache,
the factory) passing; a failing test's report carrying the servers' logs;
servers stopped after failures, a KeyboardInterrupt raised in a test and a
Ctrl-C (SIGINT) to the run; `--memcached-server-args` and its ini value.
What does not: the plugin from an installed wheel (test_packaging.py).
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from .plugin_runs import (
    RUN_TIMEOUT,
    copy_sample,
    pytest_argv,
    run_pytest,
    sample_environment,
    servers_in,
)
from .support import assert_server_gone

pytestmark = pytest.mark.usefixtures("mbserver_only")

PLUGIN = ("-p", "mbserver.pytest_plugin")


@pytest.fixture
def project(tmp_path):
    return copy_sample(tmp_path)


def test_sample_project_passes(project):
    result = run_pytest(project, *PLUGIN, "test_sample.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout


def test_failing_tests_report_the_server_logs_and_servers_stop(project):
    result = run_pytest(project, *PLUGIN, "test_failing.py")
    output = result.stdout
    assert result.returncode == 1, output + result.stderr
    assert "2 failed" in output
    servers = servers_in(project)
    assert len(servers) == 2
    (session_pid, session_port), (own_pid, own_port) = servers
    for pid, port in servers:
        header = f" mbserver 127.0.0.1:{port} log (pid {pid}) "
        assert header in output, output
        section = output.split(header, 1)[1]
        assert f"listening on 127.0.0.1:{port}" in section.splitlines()[1]
        assert_server_gone(pid, port)
    # Each report shows the server its test used, and only that one.
    first, second = output.split("test_fails_using_a_server_of_its_own ___")
    assert f"(pid {session_pid})" in first and f"(pid {own_pid})" not in first
    assert f"(pid {own_pid})" in second
    assert "memory 3 MiB" in second


def test_passing_tests_get_no_log_section(project):
    result = run_pytest(project, *PLUGIN, "-rA", "test_sample.py")
    assert result.returncode == 0, result.stdout
    assert " log (pid " not in result.stdout


def test_keyboard_interrupt_in_a_test_stops_the_server(project):
    result = run_pytest(project, *PLUGIN, "test_interrupted.py::test_raises_keyboard_interrupt")
    assert result.returncode == pytest.ExitCode.INTERRUPTED, result.stdout + result.stderr
    assert "KeyboardInterrupt" in result.stdout
    [(pid, port)] = servers_in(project)
    assert_server_gone(pid, port)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_test_stops_the_server(project):
    argv = pytest_argv(*PLUGIN, "test_interrupted.py::test_waits_for_ctrl_c")
    run = subprocess.Popen(
        argv,
        cwd=project,
        env=sample_environment(project, repo_on_path=True),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As a terminal's Ctrl-C finds it: a run started in the background
        # by a non-interactive shell (a CI step's `cmd &`) inherits SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=_sigint_default,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not servers_in(project) and run.poll() is None:
            assert time.monotonic() < deadline, "the sample never started its test"
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    [(pid, port)] = servers_in(project)
    assert_server_gone(pid, port)


MAXBYTES_TEST = """
import os

def test_memory_limit(memcached_server):
    assert memcached_server.stats()["limit_maxbytes"] == int(os.environ["EXPECTED_MAXBYTES"])
    assert memcached_server.stats("settings")["item_size_max"] == 256 * 1024
"""


@pytest.mark.parametrize(
    "ini, option, expected_mib",
    [
        (None, "-m 1 -I 256k", 1),
        ("-m 2 -I 256k", None, 2),
        ("-m 2", "--memory-limit=3 --max-item-size 256k", 3),  # the command line wins
    ],
    ids=["option", "ini", "option-over-ini"],
)
def test_server_args_reach_the_session_server(tmp_path, monkeypatch, ini, option, expected_mib):
    (tmp_path / "test_limit.py").write_text(MAXBYTES_TEST)
    if ini is not None:
        (tmp_path / "pytest.ini").write_text(f"[pytest]\nmemcached_server_args = {ini}\n")
    monkeypatch.setenv("EXPECTED_MAXBYTES", str(expected_mib << 20))
    args = [] if option is None else [f"--memcached-server-args={option}"]
    result = run_pytest(tmp_path, *PLUGIN, *args, "test_limit.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_bad_server_args_error_with_the_usage_message(tmp_path):
    (tmp_path / "test_limit.py").write_text(MAXBYTES_TEST)
    result = run_pytest(tmp_path, *PLUGIN, "--memcached-server-args=--bogus", "test_limit.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "ServerStartError" in result.stdout
    assert "unrecognized arguments: --bogus" in result.stdout


def test_the_option_is_documented_in_help(tmp_path):
    result = run_pytest(tmp_path, *PLUGIN, "--help")
    assert result.returncode == 0, result.stderr
    assert "--memcached-server-args=ARGS" in result.stdout
    assert "memcached_server_args" in result.stdout

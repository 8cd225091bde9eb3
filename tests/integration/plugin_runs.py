"""Run tests/plugin_sample as another project's test suite: a copy, a subprocess.

What lives here: `copy_sample` (the sample's files in a directory of their
own, outside this repository's pytest configuration), `run_pytest` (pytest in
a subprocess there, with the mbserver it is given) and `servers_in` (the
"PID PORT" lines the sample writes to SAMPLE_SERVERS_FILE).
What does not: the assertions (test_pytest_plugin.py, test_packaging.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .support import REPO_ROOT

SAMPLE = REPO_ROOT / "tests" / "plugin_sample"
RUN_TIMEOUT = 120


def copy_sample(directory: Path) -> Path:
    project = directory / "project"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def sample_environment(project: Path, repo_on_path: bool) -> dict[str, str]:
    """This environment, with the repository on PYTHONPATH or (for an installed
    mbserver) not: then the servers run on the venv's own interpreter, whatever
    MBSERVER_PYTHON says, as only it has the package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    if repo_on_path:
        env["PYTHONPATH"] = str(REPO_ROOT)
    else:
        env.pop("MBSERVER_PYTHON", None)
    env["SAMPLE_SERVERS_FILE"] = str(project / "servers")
    return env


def pytest_argv(*args: str, python: str = sys.executable) -> list[str]:
    # No .pytest_cache in the copy; -q keeps the output short.
    return [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]


def run_pytest(
    project: Path, *args: str, python: str = sys.executable, repo_on_path: bool = True
) -> subprocess.CompletedProcess:
    return subprocess.run(
        pytest_argv(*args, python=python),
        cwd=project,
        env=sample_environment(project, repo_on_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def servers_in(project: Path) -> list[tuple[int, int]]:
    """(pid, port) of each server the sample's tests wrote down."""
    path = project / "servers"
    if not path.exists():
        return []
    return [tuple(map(int, line.split())) for line in path.read_text().splitlines()]

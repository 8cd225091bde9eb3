"""mbserver as a package: the wheel, its metadata, the `mbserver` command and the plugin's entry point.

What lives here: one wheel built per session (`python -m build --wheel`,
from a copy of the files a release needs) and installed into a fresh venv
with pytest, pymemcache and Django; then, from that venv, `mbserver --help`,
`--version`, usage errors with the same exit codes and messages as
`python -m mbserver`, a server started on port 0 and stopped with SIGTERM,
and tests/plugin_sample run through the installed `pytest11` entry point.
What does not: the plugin's behaviour in detail (test_pytest_plugin.py).
"""

from __future__ import annotations

import email
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mbserver
from mbserver.testing import ServerProcess

from .plugin_runs import copy_sample, run_pytest
from .support import REPO_ROOT, assert_server_gone

pytestmark = pytest.mark.usefixtures("mbserver_only")

BUILD_TIMEOUT = 300  # an isolated build env and a venv's dependencies come through pip
RUN_TIMEOUT = 30
RELEASE_FILES = ("pyproject.toml", "README.md", "LICENSE", "mbserver")
SAMPLE_NEEDS = ("pytest", "pymemcache", "django")
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # no PYTHONPATH, no MBSERVER_*


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a clean copy: a stale build/ in the work tree can't leak into it."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in RELEASE_FILES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(root / "dist"), str(source)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
    )
    [built] = (root / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) holding the wheel and what the sample needs."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    # Without its own pip: this interpreter's pip installs into it (--python), which
    # saves seconds per run; pip's cache makes the downloads one-off.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT,
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", str(wheel), *SAMPLE_NEEDS],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=BUILD_TIMEOUT,
    )
    return path


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd="/",  # nowhere near this repository's mbserver
        env=CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def test_wheel_metadata_is_complete_for_an_index_page(wheel):
    dist_info = f"mbserver-{mbserver.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.message_from_string(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert wheel.name == f"mbserver-{mbserver.__version__}-py3-none-any.whl"
    assert metadata["Name"] == "mbserver"
    assert metadata["Version"] == mbserver.__version__
    assert metadata["Summary"].startswith("A memcached-compatible cache server")
    assert metadata["Requires-Python"] == ">=3.9"
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert f"{dist_info}/licenses/LICENSE" in names
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload() == (REPO_ROOT / "README.md").read_text()
    assert {"memcached", "pytest"} <= set(metadata["Keywords"].split(","))
    classifiers = metadata.get_all("Classifier")
    assert "Framework :: Pytest" in classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert sorted(metadata.get_all("Requires-Dist")) == ["gevent>=24.2", "prometheus_client>=0.20"]
    assert metadata.get_all("Project-URL") is None  # none known yet
    assert "[console_scripts]\nmbserver = mbserver.__main__:main" in entry_points
    assert "[pytest11]\nmbserver.pytest_plugin = mbserver.pytest_plugin" in entry_points
    for module in ("__main__", "testing", "pytest_plugin", "server", "protocol/binary"):
        assert f"mbserver/{module}.py" in names
    assert not any(name.startswith("tests/") for name in names)


def test_help_names_the_command_as_it_was_run(venv):
    command = run(str(venv / "bin" / "mbserver"), "--help")
    module = run(str(venv / "bin" / "python"), "-m", "mbserver", "--help")
    assert command.returncode == module.returncode == 0, command.stderr + module.stderr
    assert command.stdout.startswith("usage: mbserver [-h]")
    assert module.stdout.startswith("usage: python -m mbserver [-h]")
    # The usage lines wrap by the program's name; everything after them is the same.
    assert command.stdout.split("\n\n")[1:] == module.stdout.split("\n\n")[1:]


def test_version_prints_the_package_version(venv):
    result = run(str(venv / "bin" / "mbserver"), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"mbserver {mbserver.__version__} (memcached 1.6.18 compatible)\n"


def _in_use_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize(
    "args", [["--bogus"], ["127.0.0.1:abc"], [], ["127.0.0.1:0", "-m", "1", "-I", "1m"], "in use"]
)
def test_exit_codes_and_messages_match_python_m(venv, args):
    holder = _in_use_port() if args == "in use" else None
    if holder is not None:
        args = [f"127.0.0.1:{holder.getsockname()[1]}"]
    try:
        command = run(str(venv / "bin" / "mbserver"), *args)
        module = run(str(venv / "bin" / "python"), "-m", "mbserver", *args)
    finally:
        if holder is not None:
            holder.close()
    assert command.returncode == module.returncode != 0
    assert command.stdout == module.stdout == ""
    last_line = module.stderr.splitlines()[-1].replace("python -m mbserver", "mbserver")
    assert command.stderr.splitlines()[-1] == last_line
    assert "Traceback" not in command.stderr


def test_serves_on_port_0_and_stops_on_sigterm(venv):
    server = ServerProcess(
        [str(venv / "bin" / "mbserver"), "127.0.0.1:0"], CLEAN_ENV
    )
    server.wait_ready()
    try:
        stats = server.stats()
        assert stats["pid"] == server.pid
        assert stats["version"] == mbserver.MEMCACHED_COMPAT_VERSION
        assert str(venv) in Path(f"/proc/{server.pid}/cmdline").read_text()
    finally:
        returncode = server.stop()
    assert returncode == 0, server.log()
    assert "received SIGTERM" in server.log()
    assert_server_gone(server.pid, server.port)


def test_sample_project_through_the_entry_point(venv, tmp_path):
    project = copy_sample(tmp_path)
    python = str(venv / "bin" / "python")
    result = run_pytest(project, "test_sample.py", python=python, repo_on_path=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout
    # The fixtures came from the installed plugin: without it they don't exist.
    disabled = run_pytest(
        project, "-p", "no:mbserver.pytest_plugin", "test_sample.py", python=python,
        repo_on_path=False,
    )
    assert disabled.returncode == 1
    assert "fixture 'memcached_server' not found" in disabled.stdout


def test_p_option_beside_the_installed_entry_point_loads_the_plugin_once(venv, tmp_path):
    project = copy_sample(tmp_path)
    result = run_pytest(
        project, "-p", "mbserver.pytest_plugin", "test_sample.py",
        python=str(venv / "bin" / "python"), repo_on_path=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout

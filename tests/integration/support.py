"""Start and stop server processes for the integration tests.

`Launcher` runs either mbserver (`python -m mbserver`) or the reference
memcached on a free loopback port (or, with `start_unix`, on a unix socket
alone), waits until it accepts connections and stops everything it started.  Fixtures wrapping it live in `conftest.py`.

Set MBSERVER_IT_TARGET=memcached to run the mbserver-facing tests against the
real memcached instead: that is how the expectations themselves are checked.
Set MBSERVER_PYTHON to run every mbserver these tests start with that
interpreter (PyPy: scripts/test.sh does) while the tests stay on this one.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mbserver.testing import server_command

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

TARGET = os.environ.get("MBSERVER_IT_TARGET", "mbserver")
if TARGET not in ("mbserver", "memcached"):
    raise RuntimeError(f"MBSERVER_IT_TARGET must be 'mbserver' or 'memcached', not {TARGET!r}")


def require_tool(name: str) -> str:
    """Path of an external program; fail under CI=true when missing, else skip."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (required when CI=true)")
        pytest.skip(message)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def mbserver_argv(host: str, port: int, args: tuple[str, ...]) -> list[str]:
    return server_command(format_address(host, port), *args)


@functools.lru_cache(maxsize=None)
def server_implementation() -> str:
    """What runs the mbservers these tests start: "CPython" or "PyPy"."""
    python = server_command()[0]
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_implementation())"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()


def memcached_argv(host: str, port: int, args: tuple[str, ...]) -> list[str]:
    # -U 0: no UDP, so nothing but the TCP port is opened.
    user = ["-u", "root"] if os.geteuid() == 0 else []
    return [require_tool("memcached"), *user, "-l", host, "-p", str(port), "-U", "0", *args]


def mbserver_unix_argv(path: str, args: tuple[str, ...]) -> list[str]:
    return server_command("--unix-socket", path, *args)


def memcached_unix_argv(path: str, args: tuple[str, ...]) -> list[str]:
    # memcached's -s turns off its TCP (and UDP) listeners.
    user = ["-u", "root"] if os.geteuid() == 0 else []
    return [require_tool("memcached"), *user, "-s", path, *args]


@dataclass
class ServerProcess:
    host: str
    port: int
    proc: subprocess.Popen
    argv: list[str]
    log_dir: Path
    kind: str = "mbserver"
    unix_socket: str | None = None  # started by Launcher.start_unix

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def output(self) -> str:
        """What the process wrote so far, stdout then stderr."""
        parts = []
        for name in ("stdout", "stderr"):
            text = (self.log_dir / name).read_text(errors="replace")
            if text:
                parts.append(f"--- {name} ---\n{text}")
        return "\n".join(parts)

    def stop(self) -> int:
        """SIGTERM, wait, then SIGKILL if still running; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def connect_unix(path: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def _accepts_unix(path: str) -> bool:
    try:
        connect_unix(path, 0.5).close()
        return True
    except OSError:
        return False


@dataclass
class Launcher:
    """Starts servers of one kind and remembers them so `stop_all` can end them."""

    kind: str = TARGET
    started: list[ServerProcess] = field(default_factory=list)

    def start(
        self, *args: str, host: str = "127.0.0.1", ready_timeout: float = READY_TIMEOUT
    ) -> ServerProcess:
        argv_for = mbserver_argv if self.kind == "mbserver" else memcached_argv
        last_error = ""
        # A free port can be taken between probing and binding: try a few.
        for _ in range(3):
            port = free_port(host)
            server = self._spawn(argv_for(host, port, args), host, port)
            if self._wait_ready(server, ready_timeout):
                return server
            server.stop()
            last_error = server.output()
            if "in use" not in last_error.lower():
                break
        pytest.fail(
            f"{self.kind} did not start on {format_address(host, port)} within {ready_timeout}s:\n"
            f"argv: {server.argv}\nexit code: {server.proc.returncode}\n{last_error}"
        )

    def start_unix(
        self, path: str, *args: str, ready_timeout: float = READY_TIMEOUT
    ) -> ServerProcess:
        """A server listening on the unix socket `path` alone."""
        argv_for = mbserver_unix_argv if self.kind == "mbserver" else memcached_unix_argv
        server = self._spawn(argv_for(path, args), "", 0, unix_socket=path)
        if not self._wait_ready(server, ready_timeout):
            server.stop()
            pytest.fail(
                f"{self.kind} did not start on unix:{path} within {ready_timeout}s:\n"
                f"argv: {server.argv}\nexit code: {server.proc.returncode}\n{server.output()}"
            )
        return server

    def _spawn(
        self, argv: list[str], host: str, port: int, unix_socket: str | None = None
    ) -> ServerProcess:
        log_dir = Path(tempfile.mkdtemp(prefix=f"{self.kind}-{port}-"))
        with open(log_dir / "stdout", "wb") as out, open(log_dir / "stderr", "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        server = ServerProcess(host, port, proc, argv, log_dir, self.kind, unix_socket)
        self.started.append(server)
        return server

    @staticmethod
    def _wait_ready(server: ServerProcess, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                return False
            if server.unix_socket is not None:
                if _accepts_unix(server.unix_socket):
                    return True
            elif _accepts(server.host, server.port):
                return True
            time.sleep(0.05)
        return False

    def stop_all(self) -> None:
        while self.started:
            server = self.started.pop()
            server.stop()
            shutil.rmtree(server.log_dir, ignore_errors=True)


def mbserver_children() -> set[int]:
    """PIDs of this process's children that run mbserver (from /proc)."""
    me = os.getpid()
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == me and b"mbserver" in cmdline:
            found.add(int(stat.parent.name))
    return found


def assert_server_gone(pid: int, port: int, host: str = "127.0.0.1") -> None:
    """No mbserver process `pid` (gone, or the number reused by another program), port closed."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        cmdline = b""
    assert b"mbserver" not in cmdline, f"server {pid} still runs: {cmdline!r}"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=2).close()

"""Start and stop the servers under test, and read their resident memory.

What lives here: finding a free loopback port, launching memcached and
mbserver with the same memory and connection limits (and floor.py's
minimal server), waiting until each answers, stopping each by its own PID
(SIGTERM, then SIGKILL), and VmRSS from /proc (of a server started here,
or of any PID). What does not: any workload (memaslap.py, mcclient.py,
soak.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import mcclient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from mbserver.testing import server_command  # noqa: E402  (after the path)

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


class ServerError(Exception):
    """A server would not start, or died while being measured."""


def vmrss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ServerError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(kind: str, port: int, memory_mib: int, max_conns: int, memcached_threads: int | None = None) -> list[str]:
    """The command line; ``memcached_threads`` is memcached's -t (its own default, 4, if None)."""
    if kind == "memcached":
        cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", str(memory_mib), "-c", str(max_conns)]
        if memcached_threads is not None:
            cmd += ["-t", str(memcached_threads)]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]  # memcached refuses to run as root without it
        return cmd
    if kind == "mbserver":
        # $MBSERVER_PYTHON, if set, runs it (run.py --server-python).
        return server_command(f"127.0.0.1:{port}", "-m", str(memory_mib), "-c", str(max_conns))
    if kind == "floor":
        # floor.py's minimal server, on mbserver's interpreter; it has no limits to set.
        return [server_command()[0], str(REPO / "bench" / "floorserver.py"), str(port)]
    raise ValueError(kind)


@dataclass
class Server:
    """One running server process; `stop()` is safe to call more than once."""

    kind: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    cmd: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise ServerError(f"{self.kind} (pid {self.pid}) exited with {code}; log tail:\n{self.log_tail()}")

    def rss_bytes(self) -> int:
        self.check_alive()
        return vmrss(self.pid)

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds the process has used, all its threads."""
        self.check_alive()
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM this process (only it, by PID), SIGKILL it if it lingers; return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


def start(kind: str, memory_mib: int, max_conns: int, log_dir: Path, tag: str = "", timeout: float = 15.0,
          memcached_threads: int | None = None) -> Server:
    """Launch one server on a free loopback port and wait until it answers a NOOP."""
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = free_port()
        cmd = command(kind, port, memory_mib, max_conns, memcached_threads)
        log_path = log_dir / f"{kind}{'-' + tag if tag else ''}-{port}.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        with open(log_path, "wb") as log:
            # Own session: a Ctrl-C in the terminal reaches only the bench,
            # which then stops each server itself, in order.
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(kind, port, proc, log_path, cmd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with mcclient.Connection(port, timeout=2) as conn:
                    conn.noop()
                return server
            except OSError:
                time.sleep(0.05)
        server.stop()
        if "in use" not in server.log_tail():
            raise ServerError(f"{kind} did not come up on port {port}; log tail:\n{server.log_tail()}")
    raise ServerError(f"{kind}: no free port after 3 attempts")

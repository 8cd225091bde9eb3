"""A real mbserver in a subprocess, for other projects' tests, scripts and notebooks.

What lives here: ``running_server(**options)``, a context manager;
``start_server(**options)``, the same server left for the caller to stop;
``ServerProcess``, one started server (its address, its log, ``flush()``,
``stats()``, ``stop()``); and how keyword options become command-line
arguments and the server's environment.
What does not: anything pytest-specific (``mbserver.pytest_plugin`` is a
thin layer over this module), nor the server itself, which runs as
``python -m mbserver``: with the current interpreter, or with the one the
environment variable MBSERVER_PYTHON names (``server_command``), so that
the same tests can drive a server under PyPy.

A server starts on a port of its own choosing (port 0) and this module reads
the port from its "listening on IP:PORT" log line, so two test runs never
race for a port; a server on a unix socket alone (``port=None,
unix_socket=PATH``) is ready at its "listening on unix:PATH" line. A thread
keeps reading its output after that, so a chatty server never blocks on a
full pipe.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
from typing import Iterator, Mapping, Sequence

from .config import read_credentials

READY_TIMEOUT = 10.0  # seconds for the server to say it is listening
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL
CLIENT_TIMEOUT = 5.0  # seconds for flush() and stats() to get their reply
LOG_LIMIT = 1 << 20  # bytes of output kept; older output is dropped

# The server logs this once its socket listens (mbserver/server.py); the
# address is the real one, so with port 0 it carries the chosen port.
_LISTENING = re.compile(rb"\blistening on (?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):([0-9]+)\b")
# ... or, without IP:PORT, on its unix socket alone.
_LISTENING_UNIX = re.compile(rb"\blistening on unix:")
_ERROR_LINE = re.compile(
    rb"(?:\A|\r\n)(?:ERROR|CLIENT_ERROR [^\r\n]*|SERVER_ERROR [^\r\n]*)\r\n\Z"
)


def server_command(*args: str) -> list[str]:
    """The command line that starts a server: ``python -m mbserver`` with
    ``args``, run by $MBSERVER_PYTHON if set (a PyPy, say), else by this
    interpreter."""
    return [os.environ.get("MBSERVER_PYTHON") or sys.executable, "-m", "mbserver", *args]


class ServerError(RuntimeError):
    """The server answered ``flush()`` or ``stats()`` with something unexpected."""


class ServerStartError(ServerError):
    """The server exited, or did not start listening in time; ``output`` is what it printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(f"{message}\n--- mbserver output ---\n{output}" if output else message)
        self.output = output


def option_arguments(options: Mapping[str, object]) -> list[str]:
    """``memory_limit=8, verbose=True`` → ``["--memory-limit", "8", "--verbose"]``.

    Any keyword becomes the long option of the same name (one letter: the
    short option), so options the server gains later need nothing here; the
    server rejects unknown ones with its usage message. ``None`` and
    ``False`` leave an option out.
    """
    argv: list[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = ("-" if len(name) == 1 else "--") + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, (str, int, float, os.PathLike)):
            argv += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
        else:
            raise TypeError(
                f"option {name}={value!r}: expected a string, number, path, True or False"
            )
    return argv


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_environment(
    base: Mapping[str, str],
    username: str | None = None,
    password: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``base`` without MBSERVER_* variables, plus the SASL credentials and ``extra``.

    A developer's own MBSERVER_* settings must not change the servers their
    tests start. Credentials travel as MBSERVER_USERNAME/PASSWORD rather than
    in argv, where any local user could read them.
    """
    env = {name: value for name, value in base.items() if not name.startswith("MBSERVER_")}
    if username is not None:
        env["MBSERVER_USERNAME"] = username
    if password is not None:
        env["MBSERVER_PASSWORD"] = password
    env.update(extra or {})
    return env


def parse_listening(line: bytes) -> tuple[str, int] | None:
    """(host, port) from the server's "listening on IP:PORT" log line, else None."""
    match = _LISTENING.search(line)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).decode("ascii"), int(match.group(3))


def parse_stats(reply: bytes) -> dict[str, int | str]:
    """A text ``stats`` reply → {name: value}; whole numbers become ints."""
    stats: dict[str, int | str] = {}
    for line in reply.split(b"\r\n"):
        if line in (b"END", b""):
            continue
        label, _, rest = line.partition(b" ")
        name, _, value = rest.partition(b" ")
        if label != b"STAT" or not name:
            raise ServerError(f"unexpected line in a stats reply: {line!r}")
        text = value.decode("utf-8", "replace")
        number = text.isascii() and text.isdigit()
        stats[name.decode("utf-8", "replace")] = int(text) if number else text
    return stats


class ServerProcess:
    """One mbserver subprocess: where it listens, what it printed, and how to stop it.

    ``credentials`` and ``tls`` tell ``flush()`` and ``stats()`` how to reach
    a server that requires SASL or TLS; ``unix_socket``, that it listens on
    one (``host`` and ``port`` stay empty if that is all it listens on).
    """

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        credentials: tuple[str, str] | None = None,
        tls: bool = False,
        unix_socket: str | None = None,
    ) -> None:
        self.argv = argv
        self.host = ""
        self.port = 0
        self.unix_socket = unix_socket
        self._ready = False
        self._credentials = credentials
        self._tls = tls
        self._output = bytearray()
        self._dropped = 0
        self._lock = threading.Lock()
        self._settled = threading.Event()  # listening, or the output ended
        # Not a session of its own: a Ctrl-C or a kill of the test run's
        # process group reaches the server too, so it cannot outlive the run.
        self._proc = subprocess.Popen(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        _live.add(self)
        self._reader = threading.Thread(
            target=self._drain, name=f"mbserver-{self._proc.pid}-output", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"`` (``"[::1]:PORT"`` for IPv6), as clients and Django take it;
        the unix socket's path for a server that listens only there."""
        if not self.port and self.unix_socket is not None:
            return self.unix_socket
        return format_address(self.host, self.port)

    @property
    def returncode(self) -> int | None:
        """None while running; else the exit status (negative: the signal that ended it)."""
        return self._proc.poll()

    def log(self) -> str:
        """Everything the server printed (stdout and stderr), up to the last LOG_LIMIT bytes."""
        with self._lock:
            text = self._output.decode("utf-8", "replace")
            dropped = self._dropped
        return f"[{dropped} earlier bytes dropped]\n{text}" if dropped else text

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once the server listens; else stop it and raise ServerStartError."""
        if self._settled.wait(timeout) and self._ready:
            return
        if self._settled.is_set():  # the output ended: the server is exiting
            try:
                status = self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                status = self.stop()
            self._forget()
            raise ServerStartError(
                f"mbserver exited with status {status} before listening: {' '.join(self.argv)}",
                self.log(),
            )
        self.stop()
        raise ServerStartError(
            f"mbserver did not start listening within {timeout} s: {' '.join(self.argv)}",
            self.log(),
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit status. Idempotent."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        self._forget()
        return self._proc.returncode

    def flush(self) -> None:
        """Invalidate every item (``flush_all``)."""
        reply = self._request(b"flush_all\r\n")
        if reply != b"OK\r\n":
            raise ServerError(f"flush_all answered {reply!r}")

    def stats(self, group: str = "") -> dict[str, int | str]:
        """The text ``stats`` command (``stats("settings")`` for a group) as a dict."""
        command = f"stats {group}".strip().encode() + b"\r\n"
        reply = self._request(command, until=b"END\r\n")
        if _ERROR_LINE.search(reply):
            raise ServerError(f"{command.strip().decode()} answered {reply!r}")
        return parse_stats(reply)

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exited {self.returncode}"
        where = self.address if self._ready else "starting"
        return f"<ServerProcess pid={self.pid} {where} {state}>"

    def _drain(self) -> None:
        """Read the output until it ends: keep it, and spot the listening line."""
        for line in self._proc.stdout:
            with self._lock:
                self._output += line
                excess = len(self._output) - LOG_LIMIT
                if excess > 0:
                    del self._output[:excess]
                    self._dropped += excess
            if not self._ready:
                address = parse_listening(line)
                if address is not None:
                    self.host, self.port = address
                    self._ready = True
                elif self.unix_socket is not None and _LISTENING_UNIX.search(line):
                    self._ready = True
                if self._ready:
                    self._settled.set()
        self._proc.stdout.close()
        self._settled.set()

    def _forget(self) -> None:
        # The output ends as the process exits; bounded all the same.
        self._reader.join(STOP_TIMEOUT)
        _live.discard(self)

    def _connect(self) -> socket.socket:
        if self.port:
            return socket.create_connection((self.host, self.port), timeout=CLIENT_TIMEOUT)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CLIENT_TIMEOUT)
        try:
            sock.connect(self.unix_socket)
        except OSError:
            sock.close()
            raise
        return sock

    def _request(self, command: bytes, until: bytes = b"\r\n") -> bytes:
        """One text command on a fresh connection, over TLS and authenticated as needed.

        Over IP:PORT when the server has one; else its unix socket, where
        the server speaks plain text even with TLS (as memcached does).
        """
        with self._connect() as raw:
            sock = _client_tls().wrap_socket(raw) if self._tls and self.port else raw
            if self._credentials:
                user, password = self._credentials
                token = f"{user} {password}".encode()
                sock.sendall(b"set auth 0 0 %d\r\n%s\r\n" % (len(token), token))
                reply = _read_reply(sock, b"\r\n")
                if reply != b"STORED\r\n":
                    raise ServerError(f"text authentication answered {reply!r}")
            sock.sendall(command)
            return _read_reply(sock, until)


def _read_reply(sock: socket.socket, until: bytes) -> bytes:
    """Bytes up to ``until`` or an error line, whichever ends the reply."""
    reply = b""
    while not (reply.endswith(until) or _ERROR_LINE.search(reply)):
        chunk = sock.recv(65536)
        if not chunk:
            raise ServerError(f"the server closed the connection after {reply!r}")
        reply += chunk
    return reply


def _client_tls() -> ssl.SSLContext:
    # These helpers only ever talk over loopback to the process this module
    # started, whose certificate is usually a test's self-signed one.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def start_server(
    *,
    args: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int | None = 0,
    username: str | None = None,
    password: str | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
    **options: object,
) -> ServerProcess:
    """Start ``python -m mbserver`` and return it listening; the caller stops it.

    ``options`` are the server's command-line options by their long names
    (``memory_limit=8``, ``max_item_size="2m"``, ``auth_file=path``,
    ``tls_cert=cert, tls_key=key``, ``unix_socket=path``, ``verbose=True``);
    ``args`` are further arguments as they would be typed. ``port=None``
    leaves out IP:PORT (with ``unix_socket``: a server on that socket
    alone). ``username`` and ``password`` turn on SASL. ``env`` adds environment variables. A bad option raises
    ServerStartError carrying the server's usage message. ``flush()`` and
    ``stats()`` know to authenticate and use TLS from ``username``/``password``,
    ``auth_file`` and ``tls_cert`` (not from the same options given in ``args``).
    """
    address = [] if port is None else [format_address(host, port)]
    argv = server_command(*address, *option_arguments(options), *args)
    credentials = None
    if username is not None and password is not None:
        credentials = (username, password)
    elif options.get("auth_file"):
        with contextlib.suppress(OSError, ValueError):  # the server reports a bad file
            credentials = read_credentials(os.fspath(options["auth_file"]))[0]
    server = ServerProcess(
        argv,
        server_environment(os.environ, username, password, env),
        credentials=credentials,
        tls=bool(options.get("tls_cert")),
        unix_socket=os.fspath(options["unix_socket"]) if options.get("unix_socket") else None,
    )
    server.wait_ready(ready_timeout)
    return server


@contextlib.contextmanager
def running_server(**options: object) -> Iterator[ServerProcess]:
    """``with running_server(memory_limit=8) as server:`` — ``start_server``, stopped on exit."""
    server = start_server(**options)
    try:
        yield server
    finally:
        server.stop()


# Servers not yet stopped. At interpreter exit (a script or notebook that
# never stopped its server) they are stopped rather than left running.
_live: set[ServerProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        server.stop()

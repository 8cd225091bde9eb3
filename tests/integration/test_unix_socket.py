"""The unix socket listener (-s/--unix-socket, -a/--unix-mask) with real processes.

What lives here: python-binary-memcached, pylibmc and pymemcache over the
socket; the socket alone or beside IP:PORT; the file's mask; a stale file
replaced, a live server's socket left alone, unusable paths refused (exit
1); the file gone after SIGTERM and left after SIGKILL; SASL and TLS on it;
`stats settings` and `stats conns` compared with memcached 1.6.18 on a
unix socket of its own. Sockets live in a short temporary directory (a
socket path has at most 107 bytes).
What does not: the path checks without a process (tests/unit/test_unixsocket.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile

import bmemcached
import pylibmc
import pytest
from pymemcache.client.base import Client

from mbserver.testing import server_command

from .. import packets as P
from .support import REPO_ROOT, connect_unix
from .test_cli import TIMEOUT, run
from .test_hostile_input import assert_clean_log, poll, read_until_closed
from .textwire import parse_stats, read_reply

pytestmark = pytest.mark.usefixtures("mbserver_only")

@pytest.fixture
def sockdir():
    """A short-named temporary directory for socket files (pytest's tmp_path can be long)."""
    directory = tempfile.mkdtemp(prefix="mbu-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def path(sockdir) -> str:
    return os.path.join(sockdir, "mb.sock")


def text(path: str, data: bytes, until: bytes = b"\r\n") -> bytes:
    """A text exchange over the unix socket at `path` (whatever else the server listens on)."""
    with connect_unix(path) as sock:
        sock.sendall(data)
        return read_reply(sock, until)


def stats(path: str, group: bytes = b"") -> dict[str, str]:
    return parse_stats(text(path, b"stats " + group + b"\r\n", until=b"END\r\n"))


# -- clients ---------------------------------------------------------------------


def test_python_binary_memcached(launcher, path):
    launcher.start_unix(path)
    client = bmemcached.Client([path], socket_timeout=5)
    try:
        assert client.set("k", {"a": 1}) is True
        assert client.get("k") == {"a": 1}
        assert client.set("n", 41) is True and client.incr("n", 1) == 42
        assert client.delete("k") is True and client.get("k") is None
        assert list(client.stats().values())[0]["curr_items"] == b"1"
    finally:
        client.disconnect_all()


def test_pylibmc_binary(launcher, path):
    launcher.start_unix(path)
    client = pylibmc.Client(
        [path], binary=True, behaviors={"connect_timeout": 5000, "receive_timeout": 5_000_000}
    )
    try:
        client.set("k", b"v" * 10_000)
        assert client.get("k") == b"v" * 10_000
        client.set_multi({f"k{i}": i for i in range(100)})
        assert client.get_multi([f"k{i}" for i in range(100)]) == {f"k{i}": i for i in range(100)}
    finally:
        client.disconnect_all()


def test_pymemcache_text(launcher, path):
    launcher.start_unix(path)
    client = Client(path, connect_timeout=5, timeout=5)
    try:
        assert client.set("k", b"v", noreply=False) is True
        assert client.gets("k")[0] == b"v"
        assert client.get_many(["k", "missing"]) == {"k": b"v"}
    finally:
        client.close()


def test_both_protocols_share_the_items(launcher, path):
    launcher.start_unix(path)
    with connect_unix(path) as sock:
        sock.sendall(P.set_(b"shared", b"from binary", flags=7))
        assert P.responses(sock.recv(1024))[0].status == P.SUCCESS
    assert text(path, b"get shared\r\n", until=b"END\r\n") == (
        b"VALUE shared 7 11\r\nfrom binary\r\nEND\r\n"
    )


# -- where it listens ---------------------------------------------------------------


def test_alone_it_listens_on_no_port(launcher, path):
    server = launcher.start_unix(path)
    output = poll(server.output, lambda out: "listening on" in out, 5)
    assert f"listening on unix:{path} (" in output
    settings = stats(path, b"settings")
    assert settings["domain_socket"] == path
    assert settings["inter"] == "NULL"  # as memcached with -s alone


def test_with_an_address_it_listens_on_both(launcher, path):
    server = launcher.start("--unix-socket", path)
    client = Client((server.host, server.port), connect_timeout=5, timeout=5)
    try:
        client.set("k", b"over tcp", noreply=False)
        assert text(path, b"get k\r\n", until=b"END\r\n") == b"VALUE k 0 8\r\nover tcp\r\nEND\r\n"
    finally:
        client.close()
    assert f"listening on {server.address} and unix:{path} (" in server.output()


def test_from_the_environment(sockdir):
    path = os.path.join(sockdir, "env.sock")
    env = {**os.environ, "MBSERVER_UNIX_SOCKET": path, "MBSERVER_UNIX_MASK": "0750"}
    proc = subprocess.Popen(
        server_command(),
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert poll(lambda: os.path.exists(path), bool, 10)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o750
        assert text(path, b"version\r\n").startswith(b"VERSION ")
    finally:
        proc.terminate()
        assert proc.wait(TIMEOUT) == 0
    assert not os.path.exists(path)


@pytest.mark.parametrize("mask", [None, "0770", "666"])
def test_the_mask_is_applied(launcher, path, mask):
    launcher.start_unix(path, *([] if mask is None else ["-a", mask]))
    expected = 0o700 if mask is None else int(mask, 8)
    assert stat.S_IMODE(os.lstat(path).st_mode) == expected
    assert stats(path, b"settings")["umask"] == f"{expected:o}"


# -- the socket file's life ----------------------------------------------------------


def test_the_file_is_removed_on_sigterm_and_left_by_sigkill(launcher, path):
    server = launcher.start_unix(path)
    assert server.stop() == 0
    assert not os.path.exists(path)
    server = launcher.start_unix(path)
    server.proc.kill()
    server.proc.wait(TIMEOUT)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)  # what a crash leaves


def test_a_stale_file_is_replaced(launcher, path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays; nobody listens
    server = launcher.start_unix(path)
    assert text(path, b"version\r\n").startswith(b"VERSION ")
    assert f"replaced the stale socket file {path}" in server.output()
    assert server.stop() == 0
    assert not os.path.exists(path)


def test_a_live_servers_socket_is_not_taken(launcher, path):
    first = launcher.start_unix(path)
    text(path, b"set k 0 0 5\r\nfirst\r\n")
    result = run("--unix-socket", path)
    assert result.returncode == 1, result
    assert result.stderr.strip() == (
        f"mbserver: cannot listen on unix:{path}: another server is listening on it"
    )
    # The first server still owns the path and serves on it.
    assert text(path, b"get k\r\n", until=b"END\r\n") == b"VALUE k 0 5\r\nfirst\r\nEND\r\n"
    assert first.proc.poll() is None
    assert_clean_log(first)


def test_a_live_socket_is_refused_even_with_an_address_bound_first(launcher, path):
    launcher.start_unix(path)
    result = run("127.0.0.1:0", "--unix-socket", path)
    assert result.returncode == 1
    assert "another server is listening on it" in result.stderr


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: os.path.join(d, "missing", "mb.sock"), "no such directory: {d}/missing"),
        (lambda d: _regular_file(d), "a file that is not a socket is in the way"),
        (
            lambda d: os.path.join(d, "x" * (108 - len(d))),
            "a unix socket path has at most 107",
        ),
    ],
    ids=["missing directory", "regular file", "too long"],
)
def test_an_unusable_path_is_refused_with_exit_1(sockdir, make, reason):
    target = make(sockdir)
    result = run("--unix-socket", target)
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"mbserver: cannot listen on unix:{target}: ")
    assert reason.format(d=sockdir) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    if os.path.exists(target):
        assert open(target).read() == "keep me"  # left alone


def _regular_file(directory: str) -> str:
    target = os.path.join(directory, "mb.sock")
    with open(target, "w") as f:
        f.write("keep me")
    return target


# -- SASL and TLS -----------------------------------------------------------------------


def test_sasl_applies_on_the_socket(launcher, path, sockdir):
    users = os.path.join(sockdir, "users")
    with open(users, "w") as f:
        f.write("ada:lovelace\n")
    launcher.start_unix(path, "--auth-file", users)
    client = bmemcached.Client([path], "ada", "lovelace", socket_timeout=5)
    try:
        assert client.set("k", "v") is True and client.get("k") == "v"
    finally:
        client.disconnect_all()
    with connect_unix(path) as sock:
        sock.sendall(P.get(b"k"))
        reply, _ = read_until_closed(sock)
    assert P.responses(reply)[0].status == 0x20  # auth error, then closed
    assert text(path, b"get k\r\n") == b"CLIENT_ERROR unauthenticated\r\n"


def test_with_tls_the_socket_speaks_plain_text_as_memcached(
    launcher, reference, path, sockdir, tmp_path
):
    """memcached 1.6.18 -Z -s: TLS on TCP listeners only; the unix socket is plain."""
    from ..certs import make_cert

    cert, key = make_cert(tmp_path)
    ours = launcher.start("--unix-socket", path, "--tls-cert", str(cert), "--tls-key", str(key))
    theirs_path = os.path.join(sockdir, "memcached.sock")
    reference.start_unix(
        theirs_path, "-Z", "-o", f"ssl_chain_cert={cert},ssl_key={key}"
    )
    for where in (path, theirs_path):
        assert text(where, b"set k 0 0 1\r\nx\r\n") == b"STORED\r\n"
    # mbserver's TCP port still wants TLS.
    with socket.create_connection((ours.host, ours.port), timeout=5) as plain:
        plain.sendall(b"version\r\n")
        reply, _ = read_until_closed(plain)
    assert not reply.startswith(b"VERSION")


# -- stats, compared with memcached ----------------------------------------------------


def test_stats_settings_and_conns_as_memcached(launcher, reference, path, sockdir):
    theirs_path = os.path.join(sockdir, "memcached.sock")
    launcher.start_unix(path, "-a", "0750")
    reference.start_unix(theirs_path, "-a", "0750")
    for where, client in ((path, "unix:"), (theirs_path, "?:<AF 0>")):
        # One connection for both groups: a server may still list a client
        # that has just closed (memcached did, once), so a second connection
        # would not always be the only one.
        with connect_unix(where) as sock:
            sock.sendall(b"stats settings\r\n")
            settings = parse_stats(read_reply(sock, b"END\r\n"))
            sock.sendall(b"stats conns\r\n")
            # memcached's listener line can carry stray bytes (parse_stats).
            lenient = "strict" if where == path else "backslashreplace"
            conns = parse_stats(read_reply(sock, b"END\r\n"), errors=lenient)
        assert (settings["domain_socket"], settings["umask"]) == (where, "750")
        assert settings["shutdown_command"] == "no"
        # Both list the listening socket, and a unix client with no address
        # of its own and where it came in; memcached writes that address
        # "?:<AF 0>", which splits its STAT line in four: mbserver "unix:".
        client_lines = {
            name.split(":", 1)[1]: value
            for name, value in conns.items()
            if name.split(":")[0] == _own_connection(conns)
        }
        assert client_lines["addr"] == client
        assert client_lines["listen_addr"] == f"unix:{where}"


def _own_connection(conns: dict[str, str]) -> str:
    """The id of the one client connection (the one with a listen_addr line)."""
    ids = {name.split(":")[0] for name in conns if name.endswith(":listen_addr")}
    assert len(ids) == 1, conns
    return ids.pop()


def test_connections_on_both_listeners_count_against_one_limit(launcher, path):
    server = launcher.start("--unix-socket", path, "-c", "2")
    held = [connect_unix(path), socket.create_connection((server.host, server.port), timeout=5)]
    try:
        for sock in held:
            sock.sendall(b"version\r\n")
            assert sock.recv(100).startswith(b"VERSION")
        with connect_unix(path) as extra:
            reply, _ = read_until_closed(extra)
        assert reply == b"ERROR Too many open connections\r\n"
    finally:
        for sock in held:
            sock.close()

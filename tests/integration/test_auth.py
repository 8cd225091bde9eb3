"""SASL PLAIN against a real server: --auth-file, MBSERVER_USERNAME/PASSWORD, raw packets.

What lives here: python-binary-memcached with and without the right
credentials; the raw exchange (LIST_MECHS answers PLAIN, VERSION and SASL
are the only commands allowed before authenticating, anything else gets
0x20 and a close, a wrong password gets 0x20 and the connection stays
open); the text protocol is refused outright when authentication is on (no
back door); passwords never reach the log, even at -vv; a bad --auth-file
is a usage error (exit 2).

What does not: PLAIN message parsing on its own (tests/unit/test_auth.py),
authentication over TLS (test_tls.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import bmemcached
import pytest
from bmemcached.exceptions import MemcachedException

from mbserver.testing import server_command

from .. import packets as P
from .support import REPO_ROOT, TARGET, Launcher
from .test_hostile_input import read_until_closed
from .wire import Connection

pytestmark = pytest.mark.usefixtures("mbserver_only")

AUTH_ERROR = 0x20
AUTH_FAILURE = b"Auth failure."
USER, PASSWORD = "cacheuser", "Pw-7f3a9c-correct-horse"
OTHER_USER, OTHER_PASSWORD = "second", "Pw-91b2e0-battery-staple"
WRONG_PASSWORD = "Pw-wrong-0d15ea5e"
ENV_USER, ENV_PASSWORD = "envuser", "Pw-env-5ca1ab1e"


def plain(user: str, password: str, authzid: str = "") -> bytes:
    return f"{authzid}\0{user}\0{password}".encode()


def sasl_auth(message: bytes, mechanism: bytes = b"PLAIN", opaque: int = 0) -> bytes:
    return P.request(P.SASL_AUTH, mechanism, b"", message, opaque=opaque)


@pytest.fixture(scope="module")
def auth_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "users"
    path.write_text(f"# users for the tests\n\n{USER}:{PASSWORD}\n{OTHER_USER}:{OTHER_PASSWORD}\n")
    return path


@pytest.fixture(scope="module")
def auth_server(auth_file):
    """A server requiring SASL, at -vv so that every line that could leak is written."""
    if TARGET != "mbserver":  # module scope: set up before `mbserver_only` can skip
        pytest.skip("tests mbserver's own options")
    launcher = Launcher()
    yield launcher.start("--auth-file", str(auth_file), "-vv")
    launcher.stop_all()


def client(server, *credentials: str) -> bmemcached.Client:
    return bmemcached.Client([server.address], *credentials, socket_timeout=5)


def authenticated(server) -> Connection:
    c = Connection(server.host, server.port)
    reply = c.request(sasl_auth(plain(USER, PASSWORD)))
    assert (reply.status, reply.value) == (P.SUCCESS, b"Authenticated")
    return c


# -- python-binary-memcached ----------------------------------------------------------


@pytest.mark.parametrize("user,password", [(USER, PASSWORD), (OTHER_USER, OTHER_PASSWORD)])
def test_bmemcached_with_credentials_from_the_auth_file(auth_server, user, password):
    mc = client(auth_server, user, password)
    try:
        assert mc.set(f"auth-{user}", {"n": 1})
        assert mc.get(f"auth-{user}") == {"n": 1}
        keys = {f"auth-multi-{user}-{i}": i for i in range(50)}
        assert mc.set_multi(keys) == []
        assert mc.get_multi(list(keys)) == keys
        assert mc.set(f"auth-counter-{user}", 10) and mc.incr(f"auth-counter-{user}", 5) == 15
        assert mc.delete(f"auth-{user}")
        assert mc.get(f"auth-{user}") is None
    finally:
        mc.disconnect_all()


def test_bmemcached_without_credentials_is_refused(auth_server):
    mc = client(auth_server)
    try:
        with pytest.raises(MemcachedException) as refused:
            mc.set("no-auth-key", "value")
        assert refused.value.code == AUTH_ERROR
        try:
            assert mc.get("no-auth-key") is None
        except MemcachedException as error:
            assert error.code == AUTH_ERROR
    finally:
        mc.disconnect_all()
    with authenticated(auth_server) as c:  # nothing was stored
        assert c.request(P.get(b"no-auth-key")).status == P.KEY_NOT_FOUND


@pytest.mark.parametrize(
    "user,password", [(USER, WRONG_PASSWORD), ("nobody", PASSWORD), (USER, PASSWORD.upper())]
)
def test_bmemcached_with_wrong_credentials_is_refused(auth_server, user, password):
    mc = client(auth_server, user, password)
    try:
        with pytest.raises(MemcachedException) as refused:
            mc.set("wrong-auth-key", "value")
        assert refused.value.code == AUTH_ERROR
    finally:
        mc.disconnect_all()
    with authenticated(auth_server) as c:
        assert c.request(P.get(b"wrong-auth-key")).status == P.KEY_NOT_FOUND


def test_credentials_from_the_environment(start_server, auth_file, monkeypatch):
    # start_server's process inherits this process's environment.
    monkeypatch.setenv("MBSERVER_USERNAME", ENV_USER)
    monkeypatch.setenv("MBSERVER_PASSWORD", ENV_PASSWORD)
    server = start_server("--auth-file", str(auth_file))
    for user, password in ((ENV_USER, ENV_PASSWORD), (USER, PASSWORD)):  # both sources count
        mc = client(server, user, password)
        try:
            assert mc.set("env-key", user)
            assert mc.get("env-key") == user
        finally:
            mc.disconnect_all()
    mc = client(server, ENV_USER, WRONG_PASSWORD)
    try:
        with pytest.raises(MemcachedException) as refused:
            mc.set("env-key", "x")
        assert refused.value.code == AUTH_ERROR
    finally:
        mc.disconnect_all()


def test_credentials_from_the_environment_alone(start_server, monkeypatch):
    monkeypatch.setenv("MBSERVER_USERNAME", ENV_USER)
    monkeypatch.setenv("MBSERVER_PASSWORD", ENV_PASSWORD)
    server = start_server()
    mc = client(server, ENV_USER, ENV_PASSWORD)
    try:
        assert mc.set("env-only", 42) and mc.get("env-only") == 42
    finally:
        mc.disconnect_all()
    with Connection(server.host, server.port) as c:
        replies, closed = c.exchange(P.get(b"env-only", opaque=3))
    assert [(r.status, r.opaque) for r in replies] == [(AUTH_ERROR, 3)] and closed


# -- raw packets --------------------------------------------------------------------


def test_list_mechs_answers_plain(auth_server):
    with Connection(auth_server.host, auth_server.port) as c:
        reply = c.request(P.request(P.SASL_LIST_MECHS, opaque=0x11))
    assert (reply.opcode, reply.status, reply.opaque, reply.value) == (
        P.SASL_LIST_MECHS,
        P.SUCCESS,
        0x11,
        b"PLAIN",
    )


def test_wrong_password_keeps_the_connection_then_the_right_one_works(auth_server):
    with Connection(auth_server.host, auth_server.port) as c:
        assert c.request(P.request(P.VERSION, opaque=1)).status == P.SUCCESS  # allowed before
        for n, (mechanism, message) in enumerate(
            [
                (b"PLAIN", plain(USER, WRONG_PASSWORD)),
                (b"PLAIN", plain("nobody", PASSWORD)),
                (b"PLAIN", plain(USER, PASSWORD, authzid=OTHER_USER)),  # acting as another
                (b"PLAIN", b"garbage"),
                (b"CRAM-MD5", plain(USER, PASSWORD)),
            ],
            start=10,
        ):
            reply = c.request(sasl_auth(message, mechanism, opaque=n))
            assert (reply.opcode, reply.status, reply.opaque, reply.value) == (
                P.SASL_AUTH,
                AUTH_ERROR,
                n,
                AUTH_FAILURE,
            ), mechanism
        step = c.request(P.request(P.SASL_STEP, b"PLAIN", b"", b"more", opaque=20))
        assert (step.status, step.opaque) == (AUTH_ERROR, 20)
        # Still open, still unauthenticated, and now the right password.
        assert c.request(P.request(P.SASL_LIST_MECHS)).value == b"PLAIN"
        reply = c.request(sasl_auth(plain(USER, PASSWORD), opaque=30))
        assert (reply.status, reply.opaque, reply.value) == (P.SUCCESS, 30, b"Authenticated")
        replies = c.sync(P.set_(b"raw-auth", b"v", opaque=31) + P.get(b"raw-auth", opaque=32))
        assert [(r.status, r.opaque) for r in replies] == [(0, 31), (0, 32)]
        assert replies[1].value == b"v"
        c.send(P.request(P.STAT))
        general = {}
        while (r := c.recv()).key:
            general[r.key] = int(r.value) if r.value.isdigit() else r.value
    assert general[b"auth_cmds"] >= 7 and general[b"auth_errors"] >= 6


O = 7  # the opaque of the refused command
DATA_COMMANDS = {
    "get": P.get(b"k", opaque=O),
    "getk": P.get(b"k", P.GETK, opaque=O),
    "getkq": P.get(b"k", P.GETKQ, opaque=O),
    "set": P.set_(b"k", b"v", opaque=O),
    "setq": P.set_(b"k", b"v", opcode=P.SETQ, opaque=O),
    "delete": P.request(P.DELETE, b"k", opaque=O),
    "incr": P.counter(P.INCREMENT, b"k", 1, opaque=O),
    "append": P.request(P.APPEND, b"k", b"", b"v", opaque=O),
    "touch": P.request(P.TOUCH, b"k", P.expiry_extras(10), opaque=O),
    "flush": P.request(P.FLUSH, opaque=O),
    "noop": P.request(P.NOOP, opaque=O),
    "stat": P.request(P.STAT, opaque=O),
    "quit": P.request(P.QUIT, opaque=O),
    "unknown": P.request(0x30, opaque=O),
}


@pytest.mark.parametrize("name", DATA_COMMANDS)
def test_data_command_before_auth_gets_0x20_then_eof(auth_server, name):
    packet = DATA_COMMANDS[name]
    with Connection(auth_server.host, auth_server.port) as c:
        # Pipelined with more behind it: the 0x20 is the last thing said.
        c.send(
            P.request(P.VERSION, opaque=1)
            + packet
            + P.request(P.VERSION, opaque=2)
            + P.set_(b"sneaky", b"v")
        )
        version = c.recv()
        assert (version.opcode, version.status, version.opaque) == (P.VERSION, P.SUCCESS, 1)
        refused = c.recv()
        assert (refused.opcode, refused.status, refused.opaque, refused.value) == (
            packet[1],
            AUTH_ERROR,
            O,
            AUTH_FAILURE,
        )
        rest, _ = read_until_closed(c.sock)
    assert rest == b"", f"replies after the refusal: {rest[:48]!r}"
    with authenticated(auth_server) as c:
        assert c.request(P.get(b"sneaky")).status == P.KEY_NOT_FOUND


def test_flush_before_auth_does_not_flush(auth_server):
    with authenticated(auth_server) as c:
        assert c.request(P.set_(b"survives-flush", b"v")).status == P.SUCCESS
    with Connection(auth_server.host, auth_server.port) as c:
        replies, closed = c.exchange(P.request(P.FLUSH))
    assert [r.status for r in replies] == [AUTH_ERROR] and closed
    with authenticated(auth_server) as c:
        assert c.request(P.get(b"survives-flush")).value == b"v"


def test_authentication_is_per_connection(auth_server):
    with authenticated(auth_server) as first:
        assert first.request(P.set_(b"per-conn", b"v")).status == P.SUCCESS
        with Connection(auth_server.host, auth_server.port) as second:
            replies, closed = second.exchange(P.get(b"per-conn"))
        assert [r.status for r in replies] == [AUTH_ERROR] and closed
        assert first.request(P.get(b"per-conn")).value == b"v"


SECRET_VALUE = b"text-secret-value"


def text_exchange(server, data: bytes) -> bytes:
    """Send text-protocol bytes, half-close, and read until the server closes."""
    with Connection(server.host, server.port) as c:
        c.send(data)
        c.sock.shutdown(socket.SHUT_WR)
        received, _ = read_until_closed(c.sock, limit=1 << 20)
    return received


def text_auth(user: str, password: str) -> bytes:
    """memcached's text-protocol authentication: a set whose value is "user password"."""
    value = f"{user} {password}".encode()
    return b"set auth 0 0 %d\r\n%s\r\n" % (len(value), value)


@pytest.mark.parametrize(
    "text",
    [
        b"get textkey\r\n",
        b"gets textkey\r\n",
        b"set textkey 0 0 5\r\nhello\r\n",
        b"delete textkey\r\n",
        b"flush_all\r\n",
        b"stats\r\n",
        b"mg textkey v\r\n",
        text_auth(USER, WRONG_PASSWORD) + b"get textkey\r\nset textkey 0 0 5\r\nhello\r\n",
    ],
    ids=["get", "gets", "set", "delete", "flush_all", "stats", "meta-get", "wrong-text-auth"],
)
def test_text_protocol_is_no_back_door(auth_server, text):
    # memcached's text authentication (README, Security): the first command
    # must be a set of "user password"; anything else is refused and closed,
    # and nothing is read or changed without the password.
    with authenticated(auth_server) as c:
        assert c.request(P.set_(b"textkey", SECRET_VALUE)).status == P.SUCCESS
    received = text_exchange(auth_server, text)
    assert received in (
        b"CLIENT_ERROR unauthenticated\r\n",
        b"CLIENT_ERROR authentication failure\r\n",
    ), received[:200]
    for leak in (SECRET_VALUE, b"VALUE ", b"STORED", b"DELETED", b"STAT ", b"OK\r\n", b"VA "):
        assert leak not in received, received[:200]
    with authenticated(auth_server) as c:
        assert c.request(P.get(b"textkey")).value == SECRET_VALUE


def test_text_protocol_with_the_right_password_authenticates(auth_server):
    with authenticated(auth_server) as c:
        assert c.request(P.set_(b"textkey", SECRET_VALUE)).status == P.SUCCESS
    received = text_exchange(auth_server, text_auth(USER, PASSWORD) + b"get textkey\r\n")
    assert received == (
        b"STORED\r\nVALUE textkey 0 %d\r\n%s\r\nEND\r\n" % (len(SECRET_VALUE), SECRET_VALUE)
    ), received[:200]


def test_passwords_never_reach_the_log(auth_server):
    with Connection(auth_server.host, auth_server.port) as c:
        assert c.request(sasl_auth(plain(USER, WRONG_PASSWORD))).status == AUTH_ERROR
        assert c.request(sasl_auth(plain(OTHER_USER, PASSWORD))).status == AUTH_ERROR
        assert c.request(sasl_auth(plain(USER, PASSWORD))).status == P.SUCCESS
    mc = client(auth_server, OTHER_USER, OTHER_PASSWORD)
    try:
        assert mc.set("logged", "v")
    finally:
        mc.disconnect_all()
    text_exchange(auth_server, text_auth(USER, PASSWORD) + text_auth(USER, WRONG_PASSWORD))
    with Connection(auth_server.host, auth_server.port) as c:  # let the log catch up
        assert c.request(P.request(P.VERSION)).status == P.SUCCESS
    log = auth_server.output()
    assert "authentication failed" in log and "authenticated as" in log, log[-2000:]
    for secret in (PASSWORD, OTHER_PASSWORD, WRONG_PASSWORD):
        assert secret not in log
        assert secret.encode().hex() not in log
    assert "Traceback" not in log


# -- a bad --auth-file ------------------------------------------------------------------


def run_server(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        server_command("127.0.0.1:0", *args),
        check=False,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=15,
        env=env,
    )


@pytest.mark.parametrize(
    "content",
    [
        None,
        "",
        "# only a comment\n\n",
        "no-colon-Pw-secretish\n",
        ":Pw-nouser\n",
        "ok:pw\nbroken\n",
    ],
    ids=["missing", "empty", "comments-only", "no-colon", "empty-user", "second-line-bad"],
)
def test_bad_auth_file_exits_2_with_a_message(tmp_path, content):
    path = tmp_path / "users"
    if content is not None:
        path.write_text(content)
    result = run_server("--auth-file", str(path))
    assert result.returncode == 2, result
    assert "--auth-file" in result.stderr and "usage:" in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
    for secret in ("Pw-secretish", "Pw-nouser"):
        assert secret not in result.stderr + result.stdout


def test_auth_file_that_is_a_directory_exits_2(tmp_path):
    result = run_server("--auth-file", str(tmp_path))
    assert result.returncode == 2, result
    assert "--auth-file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("which", ["MBSERVER_USERNAME", "MBSERVER_PASSWORD"])
def test_half_of_the_environment_credentials_exits_2(which):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBSERVER_")}
    env[which] = "Pw-halfset-secret"
    result = run_server(env=env)
    assert result.returncode == 2, result
    assert "MBSERVER_USERNAME" in result.stderr and "Traceback" not in result.stderr
    assert "Pw-halfset-secret" not in result.stderr

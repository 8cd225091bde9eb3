"""TLS: --tls-cert/--tls-key with python-binary-memcached, plaintext and stalled clients.

What lives here: a throwaway self-signed certificate for 127.0.0.1
(tests/certs.py); python-binary-memcached with a `tls_context` doing set/get, a 500 KiB value,
a 500-key get_multi, and SASL over TLS; a plaintext client on the TLS port
is closed at once while TLS clients carry on; clients that never finish the
handshake are closed after the 10 s handshake timeout without holding up
anyone else (the one test here that waits, ~10 s); bad TLS options are usage
errors (exit 2).

What does not: SASL itself (test_auth.py).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import bmemcached
import pytest

from mbserver.testing import server_command

from .. import packets as P
from ..certs import make_cert, make_cert_with_openssl
from .support import REPO_ROOT, TARGET, Launcher
from .test_hostile_input import assert_clean_log, poll, read_until_closed

pytestmark = pytest.mark.usefixtures("mbserver_only")

HANDSHAKE_TIMEOUT = 10.0  # mbserver.connection.TLS_HANDSHAKE_TIMEOUT
MIB = 1 << 20


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(cert):
    if TARGET != "mbserver":  # module scope: set up before `mbserver_only` can skip
        pytest.skip("tests mbserver's own options")
    launcher = Launcher()
    yield launcher.start("--tls-cert", str(cert[0]), "--tls-key", str(cert[1]))
    launcher.stop_all()


def tls_context(cert) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert[0]))


def tls_client(server, cert, *credentials: str) -> bmemcached.Client:
    return bmemcached.Client(
        [server.address], *credentials, socket_timeout=10, tls_context=tls_context(cert)
    )


def tls_round_trip(server, cert, key: str) -> None:
    mc = tls_client(server, cert)
    try:
        assert mc.set(key, key.encode() * 3)
        assert mc.get(key) == key.encode() * 3
    finally:
        mc.disconnect_all()


def test_bmemcached_over_tls(tls_server, cert):
    mc = tls_client(tls_server, cert)
    try:
        assert mc.set("tls-small", "hello")
        assert mc.get("tls-small") == "hello"
        big = os.urandom(500 * 1024)
        assert mc.set("tls-big", big)
        assert mc.get("tls-big") == big
        many = {f"tls-multi-{i}": f"value-{i}" * (i % 7) for i in range(500)}
        assert mc.set_multi(many) == []
        assert mc.get_multi(list(many)) == {k: v for k, v in many.items()}
        assert mc.delete("tls-small") and mc.get("tls-small") is None
    finally:
        mc.disconnect_all()


def test_sasl_over_tls(cert, tmp_path, start_server):
    users = tmp_path / "users"
    users.write_text("tlsuser:Pw-over-tls\n")
    server = start_server(
        "--tls-cert", str(cert[0]), "--tls-key", str(cert[1]), "--auth-file", str(users)
    )
    mc = tls_client(server, cert, "tlsuser", "Pw-over-tls")
    try:
        assert mc.set("tls-auth", 1) and mc.get("tls-auth") == 1
    finally:
        mc.disconnect_all()
    mc = tls_client(server, cert)
    try:
        with pytest.raises(bmemcached.exceptions.MemcachedException) as refused:
            mc.set("tls-auth", 2)
        assert refused.value.code == 0x20
    finally:
        mc.disconnect_all()


@pytest.mark.parametrize(
    "plaintext",
    [P.noop(opaque=1), P.set_(b"k", b"v") + P.get(b"k"), b"get foo\r\n", b"\x00" * 100],
    ids=["binary-noop", "binary-set-get", "text", "zeros"],
)
def test_plaintext_client_on_the_tls_port_is_closed_at_once(tls_server, cert, plaintext):
    with socket.create_connection((tls_server.host, tls_server.port), timeout=5) as s:
        s.sendall(plaintext)
        data, _ = read_until_closed(s, limit=64 * 1024)  # a 5 s timeout would raise
    # At most a TLS alert record (0x15), never a memcached reply.
    assert data == b"" or data[0] == 0x15, data[:48]
    tls_round_trip(tls_server, cert, "after-plaintext")


def client_hello(cert) -> bytes:
    """The first flight of a real TLS handshake, to send and then go silent."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context(cert).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def curr_connections_over_tls(server, cert) -> int:
    mc = tls_client(server, cert)
    try:
        (stats,) = mc.stats().values()
        return int(stats["curr_connections"]) - 1
    finally:
        mc.disconnect_all()


def test_stalled_handshakes_time_out_without_holding_anyone_up(tls_server, cert):
    def connections() -> int:  # earlier clients' closes may take the server a moment
        return curr_connections_over_tls(tls_server, cert)

    assert poll(connections, lambda n: n == 0, 10) == 0
    stalled = {
        "silent": b"",
        "half-a-record-header": b"\x16\x03\x01",
        "client-hello-only": client_hello(cert),
    }
    started = time.monotonic()
    sockets = {}
    try:
        for name, first in stalled.items():
            s = socket.create_connection((tls_server.host, tls_server.port), timeout=5)
            s.sendall(first)
            sockets[name] = s
        # Meanwhile, TLS clients are served as usual.
        for i in range(10):
            tls_round_trip(tls_server, cert, f"during-stall-{i}")
        assert poll(connections, lambda n: n == len(stalled), 5) == len(stalled)
        closed_after = {}
        for name, s in sockets.items():
            # Bounded: the handshake timeout plus slack, counted from the connect.
            s.settimeout(max(0.1, HANDSHAKE_TIMEOUT + 3 - (time.monotonic() - started)))
            try:
                data, _ = read_until_closed(s, limit=64 * 1024)
            except TimeoutError:
                pytest.fail(f"{name}: still open {HANDSHAKE_TIMEOUT + 3:.0f} s after connecting")
            closed_after[name] = time.monotonic() - started
            if name != "client-hello-only":  # that one was sent the server's hello
                assert data == b"" or data[0] == 0x15, (name, data[:48])
    finally:
        for s in sockets.values():
            s.close()
    print(
        f"\nstalled TLS handshakes closed after "
        f"{ {k: round(v, 1) for k, v in closed_after.items()} } s"
    )
    assert poll(connections, lambda n: n == 0, 5) == 0
    assert_clean_log(tls_server)


# -- bad TLS options ---------------------------------------------------------------------


def run_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        server_command("127.0.0.1:0", *args),
        check=False,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=15,
    )


@pytest.mark.parametrize("which", ["cert-only", "key-only", "missing-cert", "missing-key"])
def test_incomplete_tls_options_exit_2(cert, tmp_path, which):
    missing = str(tmp_path / "nonesuch.pem")
    args = {
        "cert-only": ["--tls-cert", str(cert[0])],
        "key-only": ["--tls-key", str(cert[1])],
        "missing-cert": ["--tls-cert", missing, "--tls-key", str(cert[1])],
        "missing-key": ["--tls-cert", str(cert[0]), "--tls-key", missing],
    }[which]
    result = run_server(*args)
    assert result.returncode == 2, result
    assert "--tls" in result.stderr or "no such file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("which", ["garbage-cert", "garbage-key", "key-of-another-cert"])
def test_unusable_tls_files_exit_2_with_a_message(cert, tmp_path, which):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    if which == "key-of-another-cert":
        _, other_key = make_cert(tmp_path)
        args = ["--tls-cert", str(cert[0]), "--tls-key", str(other_key)]
    elif which == "garbage-cert":
        args = ["--tls-cert", str(garbage), "--tls-key", str(cert[1])]
    else:
        args = ["--tls-cert", str(cert[0]), "--tls-key", str(garbage)]
    result = run_server(*args)
    # As every other bad option: a usage message and exit 2, not a traceback.
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result


def test_openssl_made_certificate_works(tool, tmp_path, start_server):
    """The fallback path of the `cert` fixture, checked even where cryptography exists."""
    cert = make_cert_with_openssl(tool("openssl"), tmp_path)
    server = start_server("--tls-cert", str(cert[0]), "--tls-key", str(cert[1]))
    tls_round_trip(server, cert, "openssl-cert")

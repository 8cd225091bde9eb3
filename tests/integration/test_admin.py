"""Operator commands with real processes, beside memcached 1.6.18.

What lives here: `shutdown` (refused without -A; with it, a graceful stop
as on SIGTERM: no reply, exit 0, the snapshot written, the socket file
removed), `cache_memlimit` (memcached's replies; the new limit in `stats`
and `stats settings`, evicted down to), `verbosity` (memcached's replies;
the log level changes live), and `refresh_certs` and SIGHUP (a new
certificate for new TLS connections while the old ones carry on; a bad pair
keeps the old one and says why). Each reply is compared with the reference
memcached where it can run the same exchange (its TLS build takes -Z; it
does not reload certificates on SIGHUP).
What does not: the parsing and the command layer alone (tests/unit/test_admin.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import tempfile

import pytest

from ..certs import make_cert
from .support import connect_unix
from .test_hostile_input import assert_clean_log, poll, read_until_closed
from .textwire import connect, exchange, read_reply, silent, stats, until_closed

pytestmark = pytest.mark.usefixtures("mbserver_only")

TIMEOUT = 15


def assert_same_replies(servers, lines: list[bytes]) -> None:
    for line in lines:
        replies = [silent(server, line) for server in servers]
        assert replies[0] == replies[1], line


# -- shutdown ----------------------------------------------------------------------------


@pytest.mark.parametrize("line", [b"shutdown", b"shutdown graceful", b"shutdown bogus"])
def test_shutdown_is_refused_without_enable_shutdown(launcher, reference, line):
    for server in (launcher.start(), reference.start()):
        assert silent(server, line + b"\r\n") == b"ERROR: shutdown not enabled\r\n"
        assert server.proc.poll() is None


@pytest.mark.parametrize("line", [b"shutdown now", b"shutdown noreply", b"shutdown graceful 1"])
def test_an_unknown_shutdown_mode(launcher, reference, line):
    for server in (launcher.start("-A"), reference.start("-A")):
        assert silent(server, line + b"\r\n") == b"CLIENT_ERROR invalid shutdown mode\r\n"


@pytest.mark.parametrize("line", [b"shutdown\r\n", b"shutdown graceful\r\n"])
def test_shutdown_stops_the_server_like_sigterm(launcher, reference, line, tmp_path):
    theirs = reference.start("-A")
    assert until_closed(theirs, line) == (b"", "eof")
    assert theirs.proc.wait(TIMEOUT) == 0

    snapshot = tmp_path / "cache.snap"
    directory = tempfile.mkdtemp(prefix="mbu-")
    try:
        path = os.path.join(directory, "mb.sock")
        server = launcher.start("-A", "--unix-socket", path, "--snapshot", str(snapshot))
        assert exchange(server, b"set kept 0 0 4\r\nwarm\r\n") == b"STORED\r\n"
        idle = connect(server)  # another client, idle: closed by the stop
        assert until_closed(server, line) == (b"", "eof")
        assert server.proc.wait(TIMEOUT) == 0
        assert read_until_closed(idle)[0] == b""
        idle.close()
        output = server.output()
        assert "from a client; stopping" in output and "stopped" in output
        assert not os.path.exists(path)  # removed, as on SIGTERM
        assert snapshot.exists()  # written, as on SIGTERM
        again = launcher.start("--snapshot", str(snapshot))
        assert exchange(again, b"get kept\r\n", until=b"END\r\n") == (
            b"VALUE kept 0 4\r\nwarm\r\nEND\r\n"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_shutdown_over_the_unix_socket(launcher):
    directory = tempfile.mkdtemp(prefix="mbu-")
    try:
        path = os.path.join(directory, "mb.sock")
        server = launcher.start_unix(path, "-A")
        with connect_unix(path) as sock:
            sock.sendall(b"shutdown\r\n")
            assert read_until_closed(sock) == (b"", "eof")
        assert server.proc.wait(TIMEOUT) == 0
        assert not os.path.exists(path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- cache_memlimit -------------------------------------------------------------------------

MEMLIMIT_LINES = [
    b"cache_memlimit 8\r\n",
    b"cache_memlimit 7\r\n",
    b"cache_memlimit 0\r\n",
    b"cache_memlimit x\r\n",
    b"cache_memlimit -1\r\n",
    b"cache_memlimit\r\n",
    b"cache_memlimit 1 2 3\r\n",
    b"cache_memlimit 1000000001\r\n",
    b"cache_memlimit 4294967296\r\n",
    b"cache_memlimit 100 noreply\r\n",
    b"cache_memlimit x noreply\r\n",
    b"cache_memlimit 7 noreply\r\n",
    b"cache_memlimit 64\r\n",
]


def test_cache_memlimit_replies_as_memcached(launcher, reference):
    assert_same_replies((launcher.start(), reference.start()), MEMLIMIT_LINES)


def test_cache_memlimit_evicts_down_to_the_new_limit(launcher, reference):
    server = launcher.start("-m", "64")
    value = b"v" * 1000
    with connect(server) as sock:
        batch = b"".join(
            b"set key:%d 0 0 %d noreply\r\n%b\r\n" % (i, len(value), value) for i in range(30_000)
        )
        sock.sendall(batch + b"mn\r\n")
        read_reply(sock, b"MN\r\n")
    before = stats(server)
    assert int(before["bytes"]) > 30 << 20 and before["evictions"] == "0"
    assert exchange(server, b"cache_memlimit 8\r\n") == b"OK\r\n"
    after = stats(server)
    assert int(after["bytes"]) <= 8 << 20
    assert after["limit_maxbytes"] == str(8 << 20)
    assert int(after["evictions"]) == 30_000 - int(after["curr_items"])
    assert stats(server, b"settings")["maxbytes"] == str(8 << 20)
    # The newest items stayed.
    assert exchange(server, b"get key:29999\r\n", until=b"END\r\n").startswith(b"VALUE")
    assert exchange(server, b"get key:0\r\n", until=b"END\r\n") == b"END\r\n"
    assert "memory limit set to 8 MiB" in server.output()
    # memcached reports the new limit the same way.
    theirs = reference.start("-m", "64")
    assert exchange(theirs, b"cache_memlimit 8\r\n") == b"OK\r\n"
    assert stats(theirs)["limit_maxbytes"] == str(8 << 20)
    assert stats(theirs, b"settings")["maxbytes"] == str(8 << 20)


# -- verbosity --------------------------------------------------------------------------------

VERBOSITY_LINES = [
    b"verbosity 1\r\n",
    b"verbosity 5\r\n",
    b"verbosity x\r\n",
    b"verbosity\r\n",
    b"verbosity 1 2 3\r\n",
    b"verbosity 0 noreply\r\n",
    b"verbosity x noreply\r\n",
]


def test_verbosity_replies_as_memcached(launcher, reference):
    servers = launcher.start(), reference.start()
    assert_same_replies(servers, VERBOSITY_LINES)
    for level, expected in ((b"5", "2"), (b"1", "1"), (b"0", "0")):
        for server in servers:
            assert silent(server, b"verbosity " + level + b"\r\n") == b"OK\r\n"
            assert stats(server, b"settings")["verbosity"] == expected, server.kind


def test_verbosity_changes_the_log_level_live(launcher):
    server = launcher.start()
    exchange(server, b"version\r\n")
    assert "connected (#" not in server.output()  # per-connection lines need -v
    assert exchange(server, b"verbosity 1\r\n") == b"OK\r\n"
    exchange(server, b"version\r\n")
    assert poll(server.output, lambda out: "connected (#" in out, 5).count("connected (#") >= 1
    assert exchange(server, b"verbosity 0\r\n") == b"OK\r\n"
    seen = server.output().count("connected (#")
    exchange(server, b"version\r\n")
    assert server.output().count("connected (#") == seen


# -- refresh_certs and SIGHUP ------------------------------------------------------------------


@pytest.fixture
def pairs(tmp_path):
    """Two certificate/key pairs, and the two files a server is started with (holding the first)."""
    made = []
    for name in ("first", "second"):
        directory = tmp_path / name
        directory.mkdir()
        made.append(make_cert(directory))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(made[0][0], cert)
    shutil.copy(made[0][1], key)
    return made, cert, key


def served_der(server) -> bytes:
    with connect(server, tls=True) as sock:
        return sock.getpeercert(binary_form=True)


def der(path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(open(path).read())


def tls_servers(launcher, reference, cert, key):
    return (
        launcher.start("--tls-cert", str(cert), "--tls-key", str(key)),
        reference.start("-Z", "-o", f"ssl_chain_cert={cert},ssl_key={key}"),
    )


def test_refresh_certs_as_memcached(launcher, reference, pairs):
    (first, second), cert, key = pairs
    servers = tls_servers(launcher, reference, cert, key)
    held = [connect(server, tls=True) for server in servers]
    try:
        for server in servers:
            assert served_der(server) == der(first[0])
            assert exchange(server, b"refresh_certs\r\n", tls=True) == b"OK\r\n"
            assert silent(server, b"refresh_certs noreply\r\n", tls=True) == b""

        shutil.copy(second[0], cert)
        shutil.copy(second[1], key)
        for server, sock in zip(servers, held):
            assert exchange(server, b"refresh_certs\r\n", tls=True) == b"OK\r\n"
            assert served_der(server) == der(second[0]), server.kind  # new connections
            sock.sendall(b"version\r\n")  # an old one carries on
            assert read_reply(sock, b"\r\n").startswith(b"VERSION "), server.kind

        # A certificate that does not load: both keep what they have.
        cert.write_text("not a certificate\n")
        for server in servers:
            reply = exchange(server, b"refresh_certs\r\n", tls=True)
            assert reply.startswith(b"Error loading the certificate chain: %b : " % str(cert).encode())
            assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1
            assert served_der(server) == der(second[0]), server.kind
            # The error line is sent even after noreply.
            assert silent(server, b"refresh_certs noreply\r\n", tls=True) == reply
    finally:
        for sock in held:
            sock.close()


def test_a_key_that_does_not_match_keeps_the_old_pair(launcher, reference, pairs):
    (first, second), cert, key = pairs
    servers = tls_servers(launcher, reference, cert, key)
    shutil.copy(second[0], cert)  # the new certificate, the old key
    for server in servers:
        reply = exchange(server, b"refresh_certs\r\n", tls=True)
        assert reply.startswith(b"Error loading the key: %b : " % str(key).encode()), reply
    assert b"key values mismatch" in exchange(servers[0], b"refresh_certs\r\n", tls=True)
    # mbserver still serves the first pair whole. (memcached 1.6.18 has put
    # the new certificate in beside the old key: its new handshakes fail.)
    assert served_der(servers[0]) == der(first[0])
    assert_clean_log(servers[0])


def test_refresh_certs_without_tls(launcher, reference):
    for server in (launcher.start(), reference.start()):
        assert exchange(server, b"refresh_certs\r\n") == b"Error TLS not enabled\r\n"


def test_sighup_reloads_the_certificate(launcher, pairs):
    (first, second), cert, key = pairs
    server = launcher.start("--tls-cert", str(cert), "--tls-key", str(key))
    held = connect(server, tls=True)
    try:
        shutil.copy(second[0], cert)
        shutil.copy(second[1], key)
        server.proc.send_signal(signal.SIGHUP)
        poll(server.output, lambda out: "reloaded the TLS certificate" in out, 5)
        assert served_der(server) == der(second[0])
        held.sendall(b"version\r\n")
        assert read_reply(held, b"\r\n").startswith(b"VERSION ")

        key.write_text("not a key\n")
        server.proc.send_signal(signal.SIGHUP)
        output = poll(server.output, lambda out: "kept the running TLS" in out, 5)
        assert (
            f"kept the running TLS certificate and key: Error loading the key: {key} : "
            in output
        )
        assert served_der(server) == der(second[0])
        assert server.proc.poll() is None
    finally:
        held.close()
    assert_clean_log(server)


def test_sighup_without_tls_is_harmless(launcher):
    server = launcher.start()
    server.proc.send_signal(signal.SIGHUP)
    poll(server.output, lambda out: "SIGHUP" in out, 5)
    assert "received SIGHUP; no TLS certificate to reload" in server.output()
    assert exchange(server, b"version\r\n").startswith(b"VERSION ")

"""Text-protocol exchanges on fresh connections, for tests that compare servers.

What lives here: connecting to a test server over TCP (optionally TLS, not
verifying: the tests' certificates are throwaway) or its unix socket, and
reading a reply up to a terminator, up to `mn`'s `MN` (so noreply commands
can be checked for silence without waiting on the clock), or until the
server closes. Every read is bounded by the socket timeout.
"""

from __future__ import annotations

import socket
import ssl

from .support import connect_unix
from .test_hostile_input import read_until_closed

TIMEOUT = 5.0


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(server, tls: bool = False) -> socket.socket:
    """A connection to `server`: its unix socket if it listens only there, else its port."""
    if server.unix_socket is not None and not server.port:
        return connect_unix(server.unix_socket, TIMEOUT)
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    return client_tls().wrap_socket(sock) if tls else sock


def read_reply(sock: socket.socket, until: bytes = b"\r\n") -> bytes:
    out = b""
    while not out.endswith(until):
        chunk = sock.recv(1 << 16)
        assert chunk, f"closed after {out!r}"
        out += chunk
    return out


def exchange(server, data: bytes, until: bytes = b"\r\n", tls: bool = False) -> bytes:
    """Send data on a fresh connection; the reply up to `until`."""
    with connect(server, tls) as sock:
        sock.sendall(data)
        return read_reply(sock, until)


def silent(server, data: bytes, tls: bool = False) -> bytes:
    """Send data then `mn`: what came before MN (noreply commands answer nothing)."""
    reply = exchange(server, data + b"mn\r\n", until=b"MN\r\n", tls=tls)
    return reply[: -len(b"MN\r\n")]


def parse_stats(reply: bytes, errors: str = "strict") -> dict[str, str]:
    """``STAT name value`` lines (ending in END) → {name: value}, values as text.

    `errors` is bytes.decode's: memcached 1.6.18 can end a long unix socket
    path in `stats conns` with bytes from past the path's buffer.
    """
    pairs = [line.split(b" ", 2)[1:] for line in reply.split(b"\r\n")[:-2]]
    return {name.decode(): value.decode(errors=errors) for name, value in pairs}


def stats(server, group: bytes = b"", tls: bool = False) -> dict[str, str]:
    return parse_stats(exchange(server, b"stats " + group + b"\r\n", until=b"END\r\n", tls=tls))


def until_closed(server, data: bytes) -> tuple[bytes, str]:
    """Send data; everything the server sends until it closes, and how ("eof" or "reset")."""
    with connect(server) as sock:
        sock.sendall(data)
        return read_until_closed(sock)

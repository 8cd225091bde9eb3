"""A minimal memcached binary-protocol client for the benchmark's own chores.

What lives here: just enough of the wire format to read STAT, FLUSH a
server, bulk-load items with pipelined SETQ, and hold many idle connections
open -- the parts of the benchmark memcaslap cannot do. Raw sockets on
purpose: no client library's own overhead or batching decisions end up in
the numbers. What does not live here: anything to do with timing workloads
(memcaslap does that) or with starting servers (servers.py).
"""

from __future__ import annotations

import socket
import struct
import threading

HEADER = struct.Struct(">BBHBBHIIQ")  # magic opcode keylen extlen datatype status/vbucket bodylen opaque cas
REQUEST, RESPONSE = 0x80, 0x81
OP_SETQ, OP_NOOP, OP_FLUSH, OP_STAT = 0x11, 0x0A, 0x08, 0x10
SET_EXTRAS = struct.Struct(">II")  # flags, expiry


class ProtocolError(Exception):
    """The server answered something this client did not ask for."""


def request(
    opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"", opaque: int = 0, cas: int = 0
) -> bytes:
    body_len = len(extras) + len(key) + len(value)
    return HEADER.pack(REQUEST, opcode, len(key), len(extras), 0, 0, body_len, opaque, cas) + extras + key + value


class Connection:
    """One blocking socket with a reply reader; every call is bounded by `timeout`."""

    def __init__(self, port: int, timeout: float = 30.0, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_reply(self) -> tuple[int, int, bytes, bytes]:
        """(opcode, status, key, value) of the next reply."""
        while len(self.buf) < HEADER.size:
            self._fill()
        magic, opcode, keylen, extlen, _, status, bodylen, _, _ = HEADER.unpack_from(self.buf)
        if magic != RESPONSE:
            raise ProtocolError(f"bad magic 0x{magic:02x}")
        while len(self.buf) < HEADER.size + bodylen:
            self._fill()
        body = bytes(self.buf[HEADER.size : HEADER.size + bodylen])
        del self.buf[: HEADER.size + bodylen]
        return opcode, status, body[extlen : extlen + keylen], body[extlen + keylen :]

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def stats(self, group: bytes = b"") -> dict[str, str]:
        self.sock.sendall(request(OP_STAT, key=group))
        out: dict[str, str] = {}
        while True:
            opcode, status, key, value = self.read_reply()
            if opcode != OP_STAT or status != 0:
                raise ProtocolError(f"STAT answered opcode 0x{opcode:02x} status 0x{status:04x}")
            if not key:
                return out
            out[key.decode()] = value.decode()

    def flush(self) -> None:
        self.sock.sendall(request(OP_FLUSH))
        opcode, status, _, _ = self.read_reply()
        if opcode != OP_FLUSH or status != 0:
            raise ProtocolError(f"FLUSH answered opcode 0x{opcode:02x} status 0x{status:04x}")

    def noop(self) -> None:
        self.sock.sendall(request(OP_NOOP))
        opcode, status, _, _ = self.read_reply()
        if opcode != OP_NOOP or status != 0:
            raise ProtocolError(f"NOOP answered opcode 0x{opcode:02x} status 0x{status:04x}")


def text_stats(port: int, group: bytes = b"") -> dict[str, str]:
    """A stats group over the text protocol (memcached answers `stats conns` only there)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"stats %b\r\n" % group if group else b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
    out: dict[str, str] = {}
    for line in data.decode().splitlines()[:-1]:
        parts = line.split(" ", 2)
        if len(parts) != 3 or parts[0] != "STAT":
            raise ProtocolError(f"not a STAT line: {line!r}")
        out[parts[1]] = parts[2]
    return out


def stats(port: int) -> dict[str, str]:
    with Connection(port, timeout=10) as conn:
        return conn.stats()


def flush(port: int) -> None:
    with Connection(port, timeout=10) as conn:
        conn.flush()


def bulk_load(port: int, count: int, value_size: int, batch: int = 10_000, timeout: float = 120.0) -> int:
    """Store `count` items with pipelined SETQ, then NOOP; return how many the server refused.

    Keys are 16 bytes, like memcaslap's. SETQ answers only on failure, so a
    reader thread drains the socket while the writer streams batches: a
    server that refuses many items can then never fill both socket buffers
    and deadlock the two of us. The NOOP reply proves every SETQ before it
    was processed.
    """
    value = b"v" * value_size
    extras = SET_EXTRAS.pack(0, 0)
    head = struct.Struct(">BBHBBHIIQ8s")
    conn = Connection(port, timeout=timeout)
    refused: list[int] = []
    failure: list[BaseException] = []

    def drain() -> None:
        try:
            while True:
                opcode, _, _, _ = conn.read_reply()
                if opcode == OP_NOOP:
                    return
                refused.append(opcode)
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        body_len = len(extras) + 16 + value_size
        for start in range(0, count, batch):
            conn.sock.sendall(
                b"".join(
                    head.pack(REQUEST, OP_SETQ, 16, len(extras), 0, 0, body_len, 0, 0, extras)
                    + b"bench:%010d" % i
                    + value
                    for i in range(start, min(start + batch, count))
                )
            )
        conn.sock.sendall(request(OP_NOOP))
        reader.join(timeout)
        if reader.is_alive():
            raise TimeoutError(f"no NOOP reply within {timeout:.0f} s after the load")
        if failure:
            raise failure[0]
        return len(refused)
    finally:
        conn.close()


def open_idle(port: int, count: int, timeout: float = 10.0) -> list[socket.socket]:
    """Open `count` connections, each proven served by one NOOP round trip, and leave them idle.

    A bare connect() can sit in the listen backlog without the server having
    accepted it -- and then it costs the server nothing. The NOOP makes each
    one a connection the server has accepted, read from and answered.
    """
    socks: list[socket.socket] = []
    noop = request(OP_NOOP)
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            socks.append(sock)
            sock.sendall(noop)
            reply = b""
            while len(reply) < HEADER.size:
                chunk = sock.recv(HEADER.size - len(reply))
                if not chunk:
                    raise ConnectionError(f"server closed idle connection #{len(socks)}")
                reply += chunk
            if reply[0] != RESPONSE or reply[1] != OP_NOOP:
                raise ProtocolError(f"idle connection #{len(socks)}: unexpected reply {reply.hex()}")
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks

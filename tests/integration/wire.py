"""A blocking loopback socket that speaks raw binary-protocol packets.

Every read is bounded by a socket timeout, so a server that stays silent
fails the test instead of hanging it.  Packet layout lives in `packets.py`.
"""

from __future__ import annotations

import socket
import threading

from .. import packets
from ..packets import Response, ResponseParser

# Opaque of the NOOP that `exchange` appends to find the end of the replies.
SENTINEL_OPAQUE = 0x5E17E1A1


class ConnectionClosed(Exception):
    """The server closed the connection while replies were still expected."""

    def __init__(self, message: str, received: list[Response]):
        super().__init__(message)
        self.received = received


class Connection:
    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = ResponseParser()
        self.eof = False

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read once into the parser; False on EOF (or a reset, which is the same here)."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.parser.feed(data)
        return True

    def recv(self) -> Response:
        """The next response; ConnectionClosed if the server closes first."""
        while (resp := self.parser.next()) is None:
            if not self._fill():
                raise ConnectionClosed(f"closed with {self.parser.pending!r} pending", [])
        return resp

    def recv_n(self, n: int) -> list[Response]:
        out: list[Response] = []
        try:
            for _ in range(n):
                out.append(self.recv())
        except ConnectionClosed as e:
            raise ConnectionClosed(f"{e} after {len(out)} of {n} replies", out) from None
        return out

    def request(self, data: bytes) -> Response:
        """Send one request and return its single reply."""
        self.send(data)
        return self.recv()

    def exchange(self, data: bytes) -> tuple[list[Response], bool]:
        """Send `data` then a sentinel NOOP; return the replies before the NOOP's, and
        whether the server closed the connection instead of answering the NOOP."""
        sender = self._send_while_reading(data + packets.noop(opaque=SENTINEL_OPAQUE))
        out: list[Response] = []
        while True:
            try:
                resp = self.recv()
            except ConnectionClosed:
                return out, True
            if resp.opcode == packets.NOOP and resp.opaque == SENTINEL_OPAQUE:
                sender.join(self.sock.gettimeout())
                return out, False
            out.append(resp)

    def _send_while_reading(self, data: bytes) -> threading.Thread:
        """Send from a thread, so a server answering a long pipeline while we are still
        sending cannot fill both socket buffers and deadlock us."""

        def send() -> None:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # closed mid-request: the replies sent before that are still readable

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        return thread

    def sync(self, data: bytes) -> list[Response]:
        """`exchange` for requests that must leave the connection open."""
        replies, closed = self.exchange(data)
        if closed:
            raise ConnectionClosed("server closed the connection", replies)
        return replies

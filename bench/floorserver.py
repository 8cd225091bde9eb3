"""The least a Python server can do for memcaslap's binary GETs and SETs: `python bench/floorserver.py PORT`.

What lives here: one thread, one epoll set, a dict of values, and the
binary protocol's GET, SET, SETQ, NOOP and FLUSH, parsed with one struct. No
gevent, nothing per connection but its socket, no expiry, no memory limit, no
statistics, no lock. bench/floor.py runs it beside memcached and mbserver,
under the interpreter that runs mbserver, to show what any server written
in Python pays on this machine before it does anything a cache must do.
What does not: anything to measure with (floor.py), or a server to use:
a full send buffer blocks every client until it drains.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import sys

HEADER = struct.Struct(">BBHBBHIIQ")  # magic opcode keylen extlen datatype status bodylen opaque cas
GET, SET, FLUSH, NOOP, SETQ = 0x00, 0x01, 0x08, 0x0A, 0x11
RESPONSE = 0x81
NOT_FOUND, UNKNOWN_COMMAND = 0x0001, 0x0081


def answer(store: dict[bytes, bytes], data: bytes) -> tuple[bytes, bytes]:
    """The replies to every complete request in ``data``, and what is left unparsed."""
    replies = b""  # one request a read is the rule: b"" + reply is the reply, no copy
    at = 0
    while len(data) - at >= 24:
        _, op, keylen, extlen, _, _, bodylen, opaque, _ = HEADER.unpack_from(data, at)
        end = at + 24 + bodylen
        if end > len(data):
            break
        key_at = at + 24 + extlen
        key = data[key_at : key_at + keylen]
        if op == GET:
            stored = store.get(key)  # the flags, then the value
            if stored is None:
                replies += HEADER.pack(RESPONSE, op, 0, 0, 0, NOT_FOUND, 9, opaque, 0) + b"Not found"
            else:
                replies += HEADER.pack(RESPONSE, op, 0, 4, 0, 0, len(stored), opaque, 1) + stored
        elif op == SET or op == SETQ:  # SETQ: bench/run.py's row (e) loads with it, unanswered
            store[key] = data[at + 24 : at + 28] + data[key_at + keylen : end]
            if op == SET:
                replies += HEADER.pack(RESPONSE, op, 0, 0, 0, 0, 0, opaque, 1)
        elif op in (FLUSH, NOOP):
            if op == FLUSH:
                store.clear()
            replies += HEADER.pack(RESPONSE, op, 0, 0, 0, 0, 0, opaque, 0)
        else:
            replies += HEADER.pack(RESPONSE, op, 0, 0, 0, UNKNOWN_COMMAND, 15, opaque, 0) + b"Unknown command"
        at = end
    return replies, data[at:]


def write_all(fd: int, reply: bytes) -> None:
    try:
        sent = os.write(fd, reply)
    except BlockingIOError:
        sent = 0
    if sent == len(reply):
        return
    view = memoryview(reply)[sent:]
    while view:  # only when the send buffer is full: wait, blocking every client
        select.select([], [fd], [])
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            pass


def serve(port: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as error:
        sys.exit(f"floorserver: port {port} in use" if error.errno == errno.EADDRINUSE else f"floorserver: {error}")
    listener.listen(4096)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    sockets: dict[int, socket.socket] = {}
    partial: dict[int, bytes] = {}  # a request's start, by descriptor, until the rest arrives
    store: dict[bytes, bytes] = {}
    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        client, _ = listener.accept()
                    except BlockingIOError:
                        break
                    client.setblocking(False)
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sockets[client.fileno()] = client
                    poller.register(client.fileno(), select.EPOLLIN)
                continue
            try:
                data = os.read(fd, 1 << 14)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                poller.unregister(fd)
                partial.pop(fd, None)
                sockets.pop(fd).close()
                continue
            if fd in partial:
                data = partial.pop(fd) + data
            reply, rest = answer(store, data)
            if rest:
                partial[fd] = rest
            if reply:
                try:
                    write_all(fd, reply)
                except ConnectionError:
                    pass  # gone: the next read says so


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python bench/floorserver.py PORT")
    serve(int(sys.argv[1]))

"""Key dumps in memcached's text formats, written and sent a slice at a time.

What lives here: the lines of `lru_crawler metadump` and `stats cachedump`
as memcached 1.6.18 writes them, and ``stream``, which writes a dump from
the command layer's slices of items (``Commands.dump``) and sends each
slice before the next is read. What does not: choosing or reading the items
(``commands``, ``store``), parsing the commands (``text``), or sockets (the
``send`` callback the connection gave the protocol).

A dump of a million items therefore never holds the store lock for more
than a slice (other clients are served between slices) and never builds
more than a slice's text; a client that reads slowly holds up only itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable
from urllib.parse import quote_from_bytes

from ..record import HEADER, VALUE_OFFSET, memcached_size
from .ascii import CRLF

if TYPE_CHECKING:
    from ..commands import Commands, DumpRequest

END = b"END" + CRLF

# memcached writes a metadump line with a bare newline, and the END with CRLF.
_METADUMP = b"key=%b exp=%d la=%d cas=%d fetch=%b cls=%d size=%d\n"
_CACHEDUMP = b"ITEM %b [%d b; %d s]\r\n"
# memcached builds a cachedump in a 2 MB buffer and stops where the next line
# (and END with its NUL) would not fit.
CACHEDUMP_MAX = 2 << 20


def metadump_line(key: bytes, rec: bytes, cls: int, fetched: bool) -> bytes:
    """One item of `lru_crawler metadump`: URL-encoded key, absolute expiry
    (-1: never) and last access, CAS, whether it was read, class, size."""
    exptime, atime, cas, flags = HEADER.unpack_from(rec)
    return _METADUMP % (
        quote_from_bytes(key, safe="").encode("ascii"),
        exptime or -1,
        atime,
        cas,
        b"yes" if fetched else b"no",
        cls,
        memcached_size(len(key), len(rec) - VALUE_OFFSET, flags),
    )


def cachedump_line(key: bytes, rec: bytes) -> bytes:
    """One item of `stats cachedump`: the key as it is (memcached prints it as
    a C string, so up to a NUL), value length, absolute expiry (0: never)."""
    nul = key.find(b"\0")
    if nul >= 0:
        key = key[:nul]
    return _CACHEDUMP % (key, len(rec) - VALUE_OFFSET, HEADER.unpack_from(rec)[0])


def stream(commands: Commands, request: DumpRequest, out: list, send: Callable[[list], None]) -> int:
    """Write the dump ``request`` asks for after what ``out`` holds, sending
    ``out`` after each slice; returns the bytes left in ``out`` (the END)."""
    slices = commands.dump(request)
    try:
        if request.kind == "metadump":
            with commands.crawler.dumping():
                for entries in slices:
                    if entries:
                        out.append(b"".join([metadump_line(*entry) for entry in entries]))
                        send(out)
        else:
            _cachedump(slices, request.limit, out, send)
    finally:
        slices.close()
    out.append(END)
    return len(END)


def _cachedump(slices, limit: int, out: list, send: Callable[[list], None]) -> None:
    written = shown = 0
    room = CACHEDUMP_MAX - len(END) - 1
    for entries in slices:
        lines = []
        done = False
        for key, rec, _, _ in entries:
            line = cachedump_line(key, rec)
            if written + len(line) > room:
                done = True
                break
            lines.append(line)
            written += len(line)
            shown += 1
            if shown == limit:
                done = True
                break
        if lines:
            out.append(b"".join(lines))
            send(out)
        if done:
            return

"""Key dumps in memcached's text formats, written and sent a slice at a time.

What lives here: the lines of `lru_crawler metadump` and `stats cachedump`
as memcached 1.6.18 writes them, and ``chunks``, which writes a dump from
the command layer's slices of items (``Commands.dump``) a slice at a time,
for the connection to send each before it asks for the next. What does
not: choosing or reading the items (``commands``, ``store``), parsing the
commands (``text``), or sockets (``connection``).

A dump of a million items therefore never holds the store lock for more
than a slice (other clients are served between slices) and never builds
more than a slice's text; a client that reads slowly holds up only itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator
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


def chunks(commands: Commands, request: DumpRequest) -> Iterator[bytes]:
    """The dump ``request`` asks for, a slice of items at a time, then END.

    The connection sends each chunk before it asks for the next, and the
    command layer takes the store lock for one slice only (``Commands.dump``).
    """
    slices = commands.dump(request)
    try:
        if request.kind == "metadump":
            with commands.crawler.dumping():
                for entries in slices:
                    if entries:
                        yield b"".join([metadump_line(*entry) for entry in entries])
        else:
            yield from _cachedump(slices, request.limit)
    finally:
        slices.close()
    yield END


def _cachedump(slices, limit: int) -> Iterator[bytes]:
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
            yield b"".join(lines)
        if done:
            return

"""The receive buffer every parser reads from: bytes in, consumed from the front.

What lives here: ``ReceiveBuffer``, which holds what a connection has
received and not yet parsed, joins reads, skips bytes that are to be
discarded (as they arrive, without buffering them), collects a large packet
or line that arrives over many reads, and finds line ends. What does not:
what the bytes mean (each protocol's parser).

Parsers read ``data`` from ``pos`` directly (``struct.unpack_from``,
``find``, slices) and move ``pos`` past what they consumed: in the usual
case a read holds whole requests, ``data`` is that read itself, and keys and
values are sliced from it with one copy each.
"""

from __future__ import annotations

# A packet or line still incomplete past this size is collected as a list
# of chunks and joined once whole, so a large value costs one copy however
# many reads it arrives in; smaller leftovers are just concatenated.
COLLECT_AT = 1 << 16


class ReceiveBuffer:
    """Received bytes not yet parsed: ``data[pos:]``, plus what is being collected."""

    __slots__ = ("data", "pos", "skipping", "chunks", "_collected", "_wanted", "_scanned")

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0
        self.skipping = 0  # bytes still to discard as they arrive
        # Collecting one large packet or line: the reads so far, while
        # ``data`` stays empty. _wanted is its size, or 0 for "to a newline".
        self.chunks: list[bytes] | None = None
        self._collected = 0
        self._wanted = 0
        self._scanned = 0  # bytes from pos known to hold no newline

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        if self.chunks is not None:
            return self._collected
        return len(self.data) - self.pos

    @property
    def empty(self) -> bool:
        """Nothing received is left: no bytes, none being collected or skipped."""
        return self.pos >= len(self.data) and self.chunks is None and not self.skipping

    def feed(self, data: bytes) -> None:
        if data.__class__ is not bytes:
            data = bytes(data)
        if self.skipping:
            dropped = min(self.skipping, len(data))
            self.skipping -= dropped
            data = data[dropped:]
        chunks = self.chunks
        if chunks is not None:
            chunks.append(data)
            self._collected += len(data)
            wanted = self._wanted
            if (self._collected >= wanted) if wanted else (b"\n" in data):
                if not wanted:  # a line: only the last read needs searching
                    self._scanned = self._collected - len(data)
                self.data = b"".join(chunks)
                self.pos = 0
                self.chunks = None
            return
        if self.pos >= len(self.data):
            self.data = data
            self._scanned = 0
        else:
            self.data = self.data[self.pos :] + data
        self.pos = 0

    def skip(self, count: int) -> None:
        """Consume ``count`` bytes: those buffered now, the rest as they arrive."""
        available = len(self.data) - self.pos
        if count <= available:
            self.pos += count
        else:
            self.pos = len(self.data)
            self.skipping += count - available

    def collect(self, size: int) -> None:
        """The packet at pos is ``size`` bytes and not all here: if it is large,
        gather it in chunks as it arrives. A no-op while already collecting."""
        if size > COLLECT_AT and self.chunks is None:
            self._start_collecting(size)

    def _start_collecting(self, wanted: int) -> None:
        self.chunks = [self.data[self.pos :]]
        self._collected = len(self.data) - self.pos
        self._wanted = wanted
        self.data = b""
        self.pos = 0

    def take_line(self, window: int | None = None) -> bytes | None:
        """The next line, consumed through its newline; None if no newline is here yet.

        With ``window`` only the first ``window`` bytes from pos are searched.
        What has been searched is remembered, so a line arriving over many
        reads is scanned once; a long line with no newline yet (unbounded
        search) is collected as it arrives. As memcached reads a command
        line, one carriage return before the newline goes too, unless it is
        the whole line.
        """
        data = self.data
        pos = self.pos
        start = pos + self._scanned
        if window is None:
            newline = data.find(b"\n", start)
        else:
            newline = data.find(b"\n", start, pos + window)
        if newline < 0:
            available = len(data) - pos
            self._scanned = available if window is None else min(available, window)
            if window is None and available > COLLECT_AT and self.chunks is None:
                self._start_collecting(0)
            return None
        self.pos = newline + 1
        self._scanned = 0
        if newline - pos > 1 and data[newline - 1] == 13:
            newline -= 1
        return data[pos:newline]

"""Unit tests for mbserver.protocol.buffer and the protocol registry.

ReceiveBuffer is what both parsers read: these tests feed it whole, byte by
byte and in chunks, and check what it holds, skips, collects and finds.
"""

from __future__ import annotations

import pytest

from mbserver.commands import Commands
from mbserver.config import Settings
from mbserver.protocol import Protocol, protocol_for
from mbserver.protocol.binary import BinaryProtocol
from mbserver.protocol.buffer import COLLECT_AT, ReceiveBuffer
from mbserver.protocol.text import TextProtocol
from mbserver.rwlock import RWLock
from mbserver.stats import Stats
from mbserver.store import Store


def fed(*chunks: bytes) -> ReceiveBuffer:
    buffer = ReceiveBuffer()
    for chunk in chunks:
        buffer.feed(chunk)
    return buffer


def test_reads_are_joined_behind_what_is_left():
    buffer = fed(b"abc")
    buffer.pos = 1
    buffer.feed(b"def")
    assert (buffer.data, buffer.pos, buffer.buffered) == (b"bcdef", 0, 5)


def test_a_fully_read_buffer_takes_the_next_read_as_it_is():
    data = b"x" * 100
    buffer = fed(b"abc")
    buffer.pos = 3
    buffer.feed(data)
    assert buffer.data is data and buffer.pos == 0


def test_memoryviews_and_bytearrays_become_bytes():
    buffer = fed(bytearray(b"ab"), memoryview(b"cd"))
    assert buffer.data == b"abcd" and type(buffer.data) is bytes


@pytest.mark.parametrize("split", [0, 1, 3, 5])
def test_skip_drops_what_is_buffered_then_what_arrives(split):
    stream = b"12345" + b"keep"
    buffer = fed(stream[:split])
    buffer.skip(5)
    buffer.feed(stream[split:])
    assert buffer.data[buffer.pos :] == b"keep"
    assert buffer.skipping == 0


def test_skipped_bytes_are_never_buffered():
    buffer = ReceiveBuffer()
    buffer.skip(1 << 30)
    for _ in range(100):
        buffer.feed(b"x" * 65536)
        assert buffer.buffered == 0
    assert buffer.skipping == (1 << 30) - 100 * 65536


def test_a_large_packet_is_collected_and_joined_once():
    size = COLLECT_AT * 3
    buffer = fed(b"h" * 10)
    buffer.collect(size)
    assert buffer.chunks is not None and buffer.data == b""
    body = size - 10
    for _ in range(body // 1000):
        buffer.feed(b"v" * 1000)
        assert buffer.chunks is not None  # still collecting: nothing joined yet
    buffer.feed(b"v" * (body % 1000) + b"tail")
    assert buffer.chunks is None
    assert buffer.data == b"h" * 10 + b"v" * (size - 10) + b"tail"
    assert buffer.buffered == size + 4


def test_collect_is_for_large_packets_and_only_starts_once():
    buffer = fed(b"abc")
    buffer.collect(COLLECT_AT)  # small: concatenating is cheaper
    assert buffer.chunks is None
    buffer.collect(COLLECT_AT + 1)
    chunks = buffer.chunks
    buffer.collect(COLLECT_AT + 1)
    assert buffer.chunks is chunks


@pytest.mark.parametrize("size", [None, 1, 2, 7])
def test_take_line_fed_every_way(size):
    stream = b"first line\r\nsecond\n\r\nthird"
    buffer = ReceiveBuffer()
    lines = []
    pieces = [stream] if size is None else [stream[i : i + size] for i in range(0, len(stream), size)]
    for piece in pieces:
        buffer.feed(piece)
        while (line := buffer.take_line()) is not None:
            lines.append(line)
    # memcached's rule: one CR before the LF goes, unless it is the whole line
    assert lines == [b"first line", b"second", b"\r"]
    assert buffer.data[buffer.pos :] == b"third"


def test_take_line_searches_only_the_window():
    buffer = fed(b"x" * 10 + b"\n")
    assert buffer.take_line(5) is None
    assert buffer.take_line(20) == b"x" * 10


def test_a_long_line_is_collected_until_its_newline():
    buffer = fed(b"g" * (COLLECT_AT + 1))
    assert buffer.take_line() is None
    assert buffer.chunks is not None
    buffer.feed(b"g" * 10)
    assert buffer.chunks is not None
    buffer.feed(b"end\r\nnext")
    assert buffer.take_line() == b"g" * (COLLECT_AT + 11) + b"end"
    assert buffer.data[buffer.pos :] == b"next"


# -- the registry ---------------------------------------------------------------


def test_the_first_byte_picks_the_protocol():
    assert protocol_for(0x80) is BinaryProtocol
    assert all(protocol_for(byte) is TextProtocol for byte in range(256) if byte != 0x80)


@pytest.mark.parametrize("protocol", [BinaryProtocol, TextProtocol])
def test_every_protocol_has_the_interface(protocol):
    settings = Settings()
    commands = Commands(Store(), RWLock(), Stats(), settings)
    made = protocol(commands, settings, None, "peer")
    for name in Protocol.__annotations__:
        assert hasattr(made, name), name
    for name in ("answer", "answer_gets", "resume"):
        assert callable(getattr(made, name))
    for name in ("feed", "next", "lone", "buffer"):
        assert hasattr(made.parser, name), name
    assert made.name in ("binary", "text") and not made.closing

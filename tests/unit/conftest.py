"""Shared helpers for the unit tests: a movable clock and wire-format builders.

What lives here: ``FakeClock`` (tests move time instead of sleeping), and
``Wire``, which builds binary-protocol request packets and parses response
bytes with no sockets, exposed to tests as the ``clock`` and ``wire``
fixtures. Every test collected from this folder is marked ``unit``.
What does not: anything that starts a server (see tests/integration).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

import pytest

HERE = Path(__file__).resolve().parent

# 2023-11-14T22:13:20Z: far enough from 0 that "absolute time in the past"
# and "relative seconds" cannot be confused.
T0 = 1_700_000_000.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.unit)


class FakeClock:
    """A clock for ``Store(clock=...)`` and ``Stats(clock=...)`` that only moves when told."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Response(NamedTuple):
    """One parsed binary-protocol response packet."""

    magic: int
    opcode: int
    status: int
    opaque: int
    cas: int
    extras: bytes
    key: bytes
    value: bytes
    datatype: int = 0


class Wire:
    """Packet builders and a response parser, independent of mbserver's codec."""

    HEADER = struct.Struct(">BBHBBHIIQ")

    @classmethod
    def request(
        cls,
        opcode: int,
        key: bytes = b"",
        extras: bytes = b"",
        value: bytes = b"",
        *,
        opaque: int = 0,
        cas: int = 0,
        magic: int = 0x80,
        keylen: int | None = None,
        extlen: int | None = None,
        bodylen: int | None = None,
    ) -> bytes:
        """One request packet; the length overrides forge malformed headers."""
        kl = len(key) if keylen is None else keylen
        el = len(extras) if extlen is None else extlen
        bl = len(extras) + len(key) + len(value) if bodylen is None else bodylen
        return cls.HEADER.pack(magic, opcode, kl, el, 0, 0, bl, opaque, cas) + extras + key + value

    @staticmethod
    def storage_extras(flags: int = 0, exptime: int = 0) -> bytes:
        return struct.pack(">II", flags, exptime)

    @staticmethod
    def arith_extras(delta: int, initial: int = 0, exptime: int = 0) -> bytes:
        return struct.pack(">QQI", delta, initial, exptime)

    @staticmethod
    def u32(number: int) -> bytes:
        return struct.pack(">I", number)

    @classmethod
    def responses(cls, data: bytes) -> list[Response]:
        """Every response in data; fails the test on a partial or malformed one."""
        out = []
        pos = 0
        while pos < len(data):
            assert len(data) - pos >= 24, f"partial header at {pos}: {data[pos:]!r}"
            magic, opcode, keylen, extlen, dtype, status, bodylen, opaque, cas = (
                cls.HEADER.unpack_from(data, pos)
            )
            assert magic == 0x81, f"response magic 0x{magic:02x} at {pos}"
            assert keylen + extlen <= bodylen, f"key {keylen} + extras {extlen} > body {bodylen}"
            body = data[pos + 24 : pos + 24 + bodylen]
            assert len(body) == bodylen, f"partial body at {pos}"
            out.append(
                Response(
                    magic,
                    opcode,
                    status,
                    opaque,
                    cas,
                    body[:extlen],
                    body[extlen : extlen + keylen],
                    body[extlen + keylen :],
                    dtype,
                )
            )
            pos += 24 + bodylen
        return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def wire() -> type[Wire]:
    return Wire

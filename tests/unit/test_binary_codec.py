"""Unit tests for mbserver.protocol.binary: packets in → Requests; Results → bytes.

No sockets: every input is fed whole, byte by byte, and with the next packet
trailing behind it, as h11's tests do. The opcode table below is written from
PROTOCOL.md, independently of the codec's RULES, so a change to either shows
up as a failure here.
"""

from __future__ import annotations

import random
import struct
import tracemalloc
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mbserver import PROTOCOL_VERSION
from mbserver.commands import FlushRequest, GetMany, Request, Result, StatsRequest
from mbserver.protocol.binary import (
    HEADER,
    RULES,
    BinaryParser,
    Opcode,
    ProtocolError,
    get_reply,
    lone_reader,
    store_reply,
    write_gets,
    write_response,
)
from mbserver.record import MEMCACHED_ITEM_HEADER, Item, pack
from mbserver.store import (
    EXISTS,
    NO_MEMORY,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    OK,
    TOO_LARGE,
    Mode,
    Store,
)
from ..items import get_item
from ..lone import assert_lone_reads_as_next

KEY, NO_KEY, ANY_KEY = "key", "no key", "any key"


class Spec(NamedTuple):
    command: str
    extras: tuple[int, ...]
    key: str
    value: bool
    quiet: bool = False
    echo_key: bool = False


SPECS: dict[int, Spec] = {
    0x00: Spec("get", (0,), KEY, False),
    0x01: Spec("set", (8,), KEY, True),
    0x02: Spec("add", (8,), KEY, True),
    0x03: Spec("replace", (8,), KEY, True),
    0x04: Spec("delete", (0,), KEY, False),
    0x05: Spec("incr", (20,), KEY, False),
    0x06: Spec("decr", (20,), KEY, False),
    0x07: Spec("quit", (0,), NO_KEY, False),
    0x08: Spec("flush", (0, 4), NO_KEY, False),
    0x09: Spec("get", (0,), KEY, False, quiet=True),
    0x0A: Spec("noop", (0,), NO_KEY, False),
    0x0B: Spec("version", (0,), NO_KEY, False),
    0x0C: Spec("get", (0,), KEY, False, echo_key=True),
    0x0D: Spec("get", (0,), KEY, False, quiet=True, echo_key=True),
    0x0E: Spec("append", (0,), KEY, True),
    0x0F: Spec("prepend", (0,), KEY, True),
    0x10: Spec("stats", (0,), ANY_KEY, False),
    0x11: Spec("set", (8,), KEY, True, quiet=True),
    0x12: Spec("add", (8,), KEY, True, quiet=True),
    0x13: Spec("replace", (8,), KEY, True, quiet=True),
    0x14: Spec("delete", (0,), KEY, False, quiet=True),
    0x15: Spec("incr", (20,), KEY, False, quiet=True),
    0x16: Spec("decr", (20,), KEY, False, quiet=True),
    0x17: Spec("quit", (0,), NO_KEY, False, quiet=True),
    0x18: Spec("flush", (0, 4), NO_KEY, False, quiet=True),
    0x19: Spec("append", (0,), KEY, True, quiet=True),
    0x1A: Spec("prepend", (0,), KEY, True, quiet=True),
    # 0x1B VERBOSITY is not here: memcached 1.6.18 answers it 0x81.
    0x1C: Spec("touch", (4,), KEY, False),
    0x1D: Spec("gat", (4,), KEY, False),
    0x1E: Spec("gat", (4,), KEY, False, quiet=True),
    0x23: Spec("gat", (4,), KEY, False, echo_key=True),
    0x24: Spec("gat", (4,), KEY, False, quiet=True, echo_key=True),
}
OPCODES = sorted(SPECS)
UNKNOWN_OPCODES = [op for op in range(256) if op not in SPECS]
# memcached built without SASL answers these 0x81 too, but only after checking
# their shape: LIST_MECHS carries nothing; AUTH and STEP a key, no extras.
SASL_LIST_MECHS, SASL_AUTH, SASL_STEP = 0x20, 0x21, 0x22
STORAGE_OPCODES = [op for op in OPCODES if SPECS[op].value]
GET_FAMILY = [op for op in OPCODES if SPECS[op].command in ("get", "gat")]
NO_CREATE = 0xFFFFFFFF
OPAQUE = 0xDEADBEEF

FLAGS, EXPTIME, DELTA, INITIAL = 0xCAFEF00D, 3600, 5, 100


def op_id(opcode: int) -> str:
    try:
        return f"0x{opcode:02x}-{Opcode(opcode).name}"
    except ValueError:
        return f"0x{opcode:02x}"


def sample(wire, opcode: int, *, opaque: int = OPAQUE, cas: int = 0):
    """A well-formed packet for opcode (longest extras it allows) and its Request."""
    spec = SPECS[opcode]
    extlen = spec.extras[-1]
    key = b"" if spec.key is NO_KEY else b"key-%02x" % opcode
    value = b"value of 0x%02x" % opcode if spec.value else b""
    flags = exptime = delta = 0
    initial = None
    if extlen == 8:
        extras, flags, exptime = wire.storage_extras(FLAGS, EXPTIME), FLAGS, EXPTIME
    elif extlen == 20:
        extras, delta, initial, exptime = (
            wire.counter_extras(DELTA, INITIAL, EXPTIME),
            DELTA,
            INITIAL,
            EXPTIME,
        )
    elif extlen == 4:
        extras, exptime = wire.expiry_extras(EXPTIME), EXPTIME
    else:
        extras = b""
    packet = wire.request(opcode, key, extras, value, opaque=opaque, cas=cas)
    if spec.command == "flush":
        return packet, FlushRequest(exptime, spec.quiet, opcode, opaque)
    if spec.command == "stats":
        return packet, StatsRequest(key, (), opcode, opaque)
    expected = Request(
        spec.command,
        key,
        value,
        flags,
        exptime,
        0 if spec.command == "get" else cas,
        delta,
        initial,
        False,
        opcode,
        opaque,
        spec.quiet,
        spec.echo_key,
    )
    return packet, expected


class RequestParser(BinaryParser):
    """The codec's parser with every run of GETs (one ``GetMany``) expanded
    back into one Request per GET, so the per-opcode tests treat every
    opcode alike. GETs carry no CAS: memcached ignores a GET's CAS field.
    ``TestGetRuns`` checks the runs themselves."""

    def __init__(self, max_item_size: int = 1 << 20):
        super().__init__(max_item_size)
        self._expanded: list[Request] = []

    def next(self):
        if self._expanded:
            return self._expanded.pop(0)
        parsed = super().next()
        if parsed.__class__ is not GetMany:
            return parsed
        opcodes, opaques = parsed.context
        self._expanded = [
            Request(
                "get",
                key,
                opcode=opcode,
                opaque=opaque,
                quiet=SPECS[opcode].quiet,
                echo_key=SPECS[opcode].echo_key,
            )
            for key, opcode, opaque in zip(parsed.keys, opcodes, opaques)
        ]
        return self._expanded.pop(0)


def drain(parser: BinaryParser) -> list[Request]:
    out = []
    while (request := parser.next()) is not None:
        out.append(request)
    return out


def feed_in_chunks(parser: BinaryParser, data: bytes, sizes) -> list[Request]:
    """Feed data in chunks of the given sizes (cycled), draining after each."""
    out = []
    pos = 0
    sizes = list(sizes)
    i = 0
    while pos < len(data):
        size = max(1, sizes[i % len(sizes)])
        parser.feed(data[pos : pos + size])
        pos += size
        i += 1
        out += drain(parser)
    return out


def parse_one(packet: bytes, max_item_size: int = 1 << 20) -> Request:
    parser = RequestParser(max_item_size)
    parser.feed(packet)
    request = parser.next()
    assert request is not None
    assert parser.next() is None
    return request


def test_the_spec_table_covers_every_rule():
    assert set(SPECS) == set(RULES)


# -- well-formed packets ----------------------------------------------------


@pytest.mark.parametrize("opcode", OPCODES, ids=op_id)
class TestEveryOpcode:
    def test_fed_whole(self, wire, opcode):
        packet, expected = sample(wire, opcode, cas=0x1122334455667788)
        parser = RequestParser()
        parser.feed(packet)
        assert parser.next() == expected
        assert parser.next() is None
        assert parser.buffered == 0

    def test_fed_byte_by_byte(self, wire, opcode):
        packet, expected = sample(wire, opcode)
        parser = RequestParser()
        for i, byte in enumerate(packet):
            parser.feed(bytes([byte]))
            request = parser.next()
            if i < len(packet) - 1:
                assert request is None, f"a request after {i + 1} of {len(packet)} bytes"
        assert request == expected
        assert parser.next() is None

    def test_with_trailing_data(self, wire, opcode):
        packet, expected = sample(wire, opcode, opaque=1)
        following, expected_next = sample(wire, 0x01, opaque=2)
        split = len(following) // 2
        parser = RequestParser()
        parser.feed(packet + following[:split])
        assert parser.next() == expected
        assert parser.next() is None
        assert parser.buffered == split
        parser.feed(following[split:])
        assert parser.next() == expected_next
        assert parser.next() is None

    def test_header_cas_and_opaque_are_carried(self, wire, opcode):
        packet, expected = sample(wire, opcode, opaque=0xFFFFFFFF, cas=(1 << 64) - 1)
        request = parse_one(packet)
        assert (request.opaque, request.opcode) == (0xFFFFFFFF, opcode)
        if SPECS[opcode].command not in ("stats", "flush"):  # their own types carry no CAS
            cas = 0 if SPECS[opcode].command == "get" else (1 << 64) - 1  # a GET's CAS means nothing
            assert request.cas == cas
        assert request == expected


def test_storage_extras(wire):
    packet = wire.request(0x01, b"k", wire.storage_extras(0xFFFFFFFF, 0xFFFFFFFF), b"v")
    request = parse_one(packet)
    assert (request.flags, request.exptime) == (0xFFFFFFFF, 0xFFFFFFFF)


def test_a_storage_packet_may_carry_an_empty_value(wire):
    request = parse_one(wire.request(0x01, b"k", wire.storage_extras()))
    assert (request.command, request.key, request.value) == ("set", b"k", b"")


@pytest.mark.parametrize("opcode", [0x05, 0x06, 0x15, 0x16], ids=op_id)
class TestArithExtras:
    def test_delta_initial_and_expiry(self, wire, opcode):
        extras = wire.counter_extras((1 << 64) - 1, (1 << 64) - 2, 0xFFFFFFFE)
        request = parse_one(wire.request(opcode, b"n", extras))
        assert (request.delta, request.initial, request.exptime) == (
            (1 << 64) - 1,
            (1 << 64) - 2,
            0xFFFFFFFE,
        )

    def test_expiry_all_ones_means_do_not_create(self, wire, opcode):
        request = parse_one(wire.request(opcode, b"n", wire.counter_extras(1, 42, NO_CREATE)))
        assert request.initial is None
        assert request.exptime == 0
        assert request.delta == 1

    def test_initial_zero_still_creates(self, wire, opcode):
        request = parse_one(wire.request(opcode, b"n", wire.counter_extras(1, 0, 0)))
        assert request.initial == 0


@pytest.mark.parametrize("opcode", [0x08, 0x18], ids=op_id)
def test_flush_with_and_without_a_delay(wire, opcode):
    assert parse_one(wire.request(opcode)).delay == 0
    assert parse_one(wire.request(opcode, extras=wire.expiry_extras(600))).delay == 600


def test_stat_with_and_without_a_group(wire):
    assert parse_one(wire.request(0x10)).group == b""
    assert parse_one(wire.request(0x10, b"settings")).group == b"settings"
    assert parse_one(wire.request(0x10, b"detail on")) == StatsRequest(b"detail", (b"on",), 0x10)


@pytest.mark.parametrize("opcode", [op for op in OPCODES if SPECS[op].key is not NO_KEY], ids=op_id)
def test_a_key_of_250_bytes_is_accepted(wire, opcode):
    spec = SPECS[opcode]
    extras = b"\0" * spec.extras[-1]
    request = parse_one(wire.request(opcode, b"k" * 250, extras))
    assert (request.group if spec.command == "stats" else request.key) == b"k" * 250


def test_key_bytes_are_arbitrary(wire):
    key = bytes(range(256))[:250]
    assert parse_one(wire.request(0x00, key)).key == key


class TestPipelines:
    def pipeline(self, wire, count: int, seed: int):
        rng = random.Random(seed)
        packets, expected = [], []
        for i in range(count):
            packet, request = sample(
                wire, rng.choice(OPCODES), opaque=i, cas=rng.randrange(1 << 64)
            )
            packets.append(packet)
            expected.append(request)
        return b"".join(packets), expected

    def test_many_packets_fed_at_once(self, wire):
        data, expected = self.pipeline(wire, 500, seed=1)
        parser = RequestParser()
        parser.feed(data)
        assert drain(parser) == expected
        assert parser.buffered == 0

    @pytest.mark.parametrize("chunk", [1, 7, 24, 25, 100, 4096])
    def test_many_packets_in_chunks(self, wire, chunk):
        data, expected = self.pipeline(wire, 200, seed=chunk)
        assert feed_in_chunks(RequestParser(), data, [chunk]) == expected

    def test_many_packets_in_random_chunks(self, wire):
        data, expected = self.pipeline(wire, 300, seed=3)
        rng = random.Random(4)
        sizes = [rng.randint(1, 200) for _ in range(1000)]
        assert feed_in_chunks(RequestParser(), data, sizes) == expected

    def test_pipelined_large_values_do_not_pile_up_in_memory(self, wire):
        """A client streaming big SETs must not make the parser keep the whole stream.

        The parser may keep one packet and one chunk, not every consumed byte:
        here 200 SETs of 100 KB arrive in 64 KiB reads, as a connection feeds them.
        """
        value = b"v" * 100_000
        packet = wire.request(0x11, b"k", wire.storage_extras(), value)
        stream = packet * 200
        chunk = 1 << 16
        parser = RequestParser()
        tracemalloc.start()
        try:
            parsed = 0
            for pos in range(0, len(stream), chunk):
                parser.feed(stream[pos : pos + chunk])
                while (request := parser.next()) is not None:
                    assert len(request.value) == len(value)
                    parsed += 1
                    del request
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert parsed == 200
        assert peak < 2 << 20, (
            f"parsing a {len(stream)}-byte stream of {len(packet)}-byte packets "
            f"peaked at {peak} bytes"
        )


# -- malformed packets ------------------------------------------------------


@pytest.mark.parametrize("magic", [0x00, 0x81, 0x7F, 0xFF, ord("g")])
def test_bad_magic_is_a_protocol_error_without_a_reply(wire, magic):
    parser = RequestParser()
    parser.feed(wire.request(0x00, b"k", magic=magic))
    with pytest.raises(ProtocolError) as caught:
        parser.next()
    assert caught.value.reply == b""


def test_bad_magic_after_a_good_packet(wire):
    parser = RequestParser()
    parser.feed(wire.request(0x0A, opaque=1) + wire.request(0x0A, magic=0x81))
    assert parser.next().command == "noop"
    with pytest.raises(ProtocolError) as caught:
        parser.next()
    assert caught.value.reply == b""


def invalid_cases():
    """(id, opcode, key, extras, value, overrides, status) for every length rule an opcode has.

    A header whose key and extras overrun its body is 0x81 "Unknown command",
    as memcached 1.6.18 answers it (checked before any per-opcode rule);
    every other violation is 0x04 "Invalid arguments". Both close.
    """
    cases = []
    for opcode in OPCODES:
        spec = SPECS[opcode]
        name = op_id(opcode)
        good_extras = b"\0" * spec.extras[-1]
        good_key = b"" if spec.key is NO_KEY else b"k"
        good_value = b"v" if spec.value else b""
        for extlen in (0, 1, 4, 8, 20, 255):
            if extlen not in spec.extras:
                cases.append(
                    (
                        f"{name}-extras{extlen}",
                        opcode,
                        good_key,
                        b"\0" * extlen,
                        good_value,
                        {},
                        0x04,
                    )
                )
        if spec.key is KEY:
            cases.append((f"{name}-no-key", opcode, b"", good_extras, good_value, {}, 0x04))
        if spec.key is NO_KEY:
            cases.append((f"{name}-forbidden-key", opcode, b"k", good_extras, good_value, {}, 0x04))
        else:
            cases.append((f"{name}-key251", opcode, b"k" * 251, good_extras, good_value, {}, 0x04))
            cases.append(
                (
                    f"{name}-key65535",
                    opcode,
                    b"",
                    good_extras,
                    b"",
                    {"keylen": 65535, "bodylen": 65535 + len(good_extras)},
                    0x04,
                )
            )
        if len(good_key) + len(good_extras):
            short = len(good_key) + len(good_extras) - 1
            cases.append(
                (f"{name}-short-body", opcode, good_key, good_extras, b"", {"bodylen": short}, 0x81)
            )
        if not spec.value:
            cases.append((f"{name}-value", opcode, good_key, good_extras, b"v", {}, 0x04))
    # Opcodes without a rule are still framed: memcached checks these first.
    for opcode in (0x1B, 0x50, 0xFF, SASL_AUTH):
        name = op_id(opcode)
        cases.append((f"{name}-short-body", opcode, b"key", b"", b"", {"bodylen": 2}, 0x81))
        cases.append(
            (f"{name}-extras-over-body", opcode, b"", b"\0" * 4, b"", {"bodylen": 0}, 0x81)
        )
    # SASL shapes, checked even though SASL is not served.
    cases += [
        ("sasl-list-key", SASL_LIST_MECHS, b"PLAIN", b"", b"", {}, 0x04),
        ("sasl-list-extras", SASL_LIST_MECHS, b"", b"\0" * 4, b"", {}, 0x04),
        ("sasl-list-value", SASL_LIST_MECHS, b"", b"", b"v", {}, 0x04),
    ]
    for opcode in (SASL_AUTH, SASL_STEP):
        name = op_id(opcode)
        cases.append((f"{name}-no-key", opcode, b"", b"", b"\0u\0p", {}, 0x04))
        cases.append((f"{name}-extras", opcode, b"PLAIN", b"\0" * 4, b"\0u\0p", {}, 0x04))
    # The 250-byte key limit applies to every opcode, known or not.
    for opcode in (SASL_AUTH, SASL_STEP, 0x1B, 0x50, 0xFF):
        cases.append((f"{op_id(opcode)}-key251", opcode, b"k" * 251, b"", b"", {}, 0x04))
    return cases


INVALID = invalid_cases()


ERROR_TEXT = {0x04: b"Invalid arguments", 0x81: b"Unknown command"}


@pytest.mark.parametrize(
    "opcode, key, extras, value, overrides, status",
    [c[1:] for c in INVALID],
    ids=[c[0] for c in INVALID],
)
@pytest.mark.parametrize("fed", ["whole", "header-only"])
def test_invalid_lengths_are_a_protocol_error(
    wire, opcode, key, extras, value, overrides, status, fed
):
    packet = wire.request(opcode, key, extras, value, opaque=0x0BADCAFE, cas=77, **overrides)
    parser = RequestParser()
    # Lengths are checked from the header: no body needs to arrive first.
    parser.feed(packet if fed == "whole" else packet[:24])
    with pytest.raises(ProtocolError) as caught:
        parser.next()
    (reply,) = wire.responses(caught.value.reply)
    assert reply.opcode == opcode
    assert reply.opaque == 0x0BADCAFE
    assert reply.status == status
    assert (reply.extras, reply.key, reply.value, reply.cas) == (b"", b"", ERROR_TEXT[status], 0)


def test_an_invalid_packet_after_good_ones(wire):
    parser = RequestParser()
    parser.feed(wire.request(0x0A, opaque=1) + wire.request(0x0A, b"k", opaque=2))
    assert parser.next().opaque == 1
    with pytest.raises(ProtocolError) as caught:
        parser.next()
    assert wire.responses(caught.value.reply)[0].opaque == 2


# -- unknown opcodes --------------------------------------------------------


def unknown_packet(wire, opcode: int, opaque: int) -> bytes:
    """A packet for an opcode without a rule, with as much body as its shape allows."""
    if opcode == SASL_LIST_MECHS:
        return wire.request(opcode, opaque=opaque, cas=9)
    if opcode in (SASL_AUTH, SASL_STEP):
        return wire.request(opcode, b"PLAIN", b"", b"\0user\0password", opaque=opaque, cas=9)
    return wire.request(opcode, b"key", b"\1\2\3\4", b"value", opaque=opaque, cas=9)


@pytest.mark.parametrize("opcode", UNKNOWN_OPCODES, ids=op_id)
def test_unknown_opcodes_are_answered_and_skipped(wire, opcode):
    unknown = unknown_packet(wire, opcode, 0x55)
    parser = RequestParser()
    parser.feed(unknown + wire.request(0x0A, opaque=0x66))
    assert drain(parser) == [
        Request("unknown", opcode=opcode, opaque=0x55),
        Request("noop", opcode=0x0A, opaque=0x66),
    ]
    assert parser.buffered == 0


@pytest.mark.parametrize("opcode", [0x1B, SASL_AUTH, SASL_STEP, 0x25, 0x3F, 0xFF], ids=op_id)
def test_unknown_opcode_body_arriving_later_is_skipped(wire, opcode):
    body = b"PLAIN" + b"\0user\0password" * 100
    unknown = wire.request(opcode, b"PLAIN", b"", body[5:], opaque=0x55)
    noop = wire.request(0x0A, opaque=0x66)
    parser = RequestParser()
    parser.feed(unknown[:24])
    assert parser.next() == Request("unknown", opcode=opcode, opaque=0x55)
    rest = unknown[24:]
    for pos in range(0, len(rest), 100):
        parser.feed(rest[pos : pos + 100])
        assert parser.next() is None
        assert parser.buffered == 0
    parser.feed(noop[:10])
    assert parser.next() is None
    parser.feed(noop[10:])
    assert parser.next() == Request("noop", opcode=0x0A, opaque=0x66)


def test_unknown_opcode_with_a_250_byte_key(wire):
    parser = RequestParser()
    parser.feed(wire.request(0x50, b"k" * 250, opaque=1) + wire.request(0x0A, opaque=2))
    assert [r.command for r in drain(parser)] == ["unknown", "noop"]


def test_unknown_opcode_with_a_body_split_byte_by_byte(wire):
    data = wire.request(0x21, b"PLAIN", b"", b"\0u\0p", opaque=1) + wire.request(0x0A, opaque=2)
    assert feed_in_chunks(RequestParser(), data, [1]) == [
        Request("unknown", opcode=0x21, opaque=1),
        Request("noop", opcode=0x0A, opaque=2),
    ]


# -- values over the item size limit ----------------------------------------

SMALL_LIMIT = 1024


@pytest.mark.parametrize("opcode", STORAGE_OPCODES, ids=op_id)
def test_a_value_at_the_limit_is_accepted_and_one_byte_more_refused(wire, opcode):
    spec = SPECS[opcode]
    extras = wire.storage_extras(7, 8) if spec.extras == (8,) else b""
    largest = SMALL_LIMIT - MEMCACHED_ITEM_HEADER - len(b"key")
    fits = parse_one(wire.request(opcode, b"key", extras, b"x" * largest), SMALL_LIMIT)
    assert not fits.refused and len(fits.value) == largest
    parser = RequestParser(SMALL_LIMIT)
    parser.feed(
        wire.request(opcode, b"key", extras, b"x" * (largest + 1), opaque=3, cas=4)
        + wire.request(0x0A, opaque=5)
    )
    refused, noop = drain(parser)
    assert refused == Request(
        spec.command,
        b"key",
        b"",
        7 if extras else 0,
        8 if extras else 0,
        4,
        refused=True,
        opcode=opcode,
        opaque=3,
        quiet=spec.quiet,
    )
    assert noop == Request("noop", opcode=0x0A, opaque=5)


def test_a_4_gib_claim_is_skipped_without_buffering(wire):
    header = wire.request(0x01, b"key", wire.storage_extras(), bodylen=0xFFFFFFFF)
    parser = RequestParser()
    chunk = b"\xab" * (1 << 16)
    parser.feed(header + chunk)
    request = parser.next()
    assert request.refused and request.key == b"key" and request.value == b""
    assert parser.next() is None
    assert parser.buffered == 0
    for _ in range(64):  # 4 MiB of the claimed 4 GiB
        parser.feed(chunk)
        assert parser.next() is None
        assert parser.buffered == 0


def test_a_refused_value_is_skipped_then_parsing_resumes(wire):
    value = b"\xcd" * (3 << 20)
    packet = wire.request(0x11, b"big", wire.storage_extras(1, 2), value, opaque=1)
    noop = wire.request(0x0A, opaque=2)
    data = packet + noop
    parser = RequestParser(1 << 20)
    seen = []
    chunk = 1 << 16
    for pos in range(0, len(data), chunk):
        parser.feed(data[pos : pos + chunk])
        seen += drain(parser)
        assert parser.buffered <= chunk
    assert [r.command for r in seen] == ["set", "noop"]
    assert seen[0].refused and seen[0].quiet and seen[0].opaque == 1
    assert seen[1].opaque == 2


def test_a_refused_value_fed_in_one_piece(wire):
    packet = wire.request(0x01, b"big", wire.storage_extras(), b"z" * 5000, opaque=1)
    parser = RequestParser(SMALL_LIMIT)
    parser.feed(packet + wire.request(0x0A, opaque=2) + wire.request(0x00, b"k", opaque=3))
    requests = drain(parser)
    assert [(r.command, r.refused, r.opaque) for r in requests] == [
        ("set", True, 1),
        ("noop", False, 2),
        ("get", False, 3),
    ]


def test_no_value_opcodes_are_never_refused(wire):
    # Only storage commands carry a value the limit applies to.
    request = parse_one(wire.request(0x00, b"k" * 250), max_item_size=MEMCACHED_ITEM_HEADER)
    assert not request.refused


# -- writing responses ------------------------------------------------------


def respond(wire, request_packet: bytes, result: Result, max_item_size: int = 1 << 20):
    request = parse_one(request_packet, max_item_size)
    out: list = []
    if request.command == "get":
        # A GET is always answered as (part of) a run: write_gets, from the record.
        item = result.item
        rec = None if item is None else pack(item.value, item.flags, 0, item.cas, 0)
        run = GetMany([request.key], ([request.opcode], [request.opaque]))
        write_gets(run, [rec], out)
    else:
        write_response(request, result, out)
    assert all(isinstance(part, (bytes, bytearray, memoryview)) for part in out)
    replies = wire.responses(b"".join(out))
    for reply in replies:
        assert (reply.opcode, reply.opaque) == (request.opcode, request.opaque)
    return replies


def assert_error(reply, status: int, text: bytes) -> None:
    assert reply.status == status
    assert (reply.extras, reply.key, reply.value, reply.cas) == (b"", b"", text, 0)


def item(value=b"hello", flags=0, cas=4242) -> Item:
    return Item(value, flags, 0, cas, 0.0)


class TestGetFamilyResponses:
    @pytest.mark.parametrize("opcode", GET_FAMILY, ids=op_id)
    @pytest.mark.parametrize("flags", [0, 1, 0xFFFFFFFF])
    def test_hit_always_carries_flags(self, wire, opcode, flags):
        packet, _ = sample(wire, opcode)
        hit = item(b"the value", flags, cas=99)
        (reply,) = respond(wire, packet, Result(OK, 99, hit))
        assert reply.status == 0
        assert reply.extras == struct.pack(">I", flags)
        assert reply.value == b"the value"
        assert reply.cas == 99
        assert reply.key == (b"key-%02x" % opcode if SPECS[opcode].echo_key else b"")

    @pytest.mark.parametrize("opcode", GET_FAMILY, ids=op_id)
    def test_hit_with_an_empty_value(self, wire, opcode):
        packet, _ = sample(wire, opcode)
        (reply,) = respond(wire, packet, Result(OK, 1, item(b"", 5, cas=1)))
        assert (reply.status, reply.extras, reply.value) == (0, struct.pack(">I", 5), b"")

    @pytest.mark.parametrize("opcode", [op for op in GET_FAMILY if not SPECS[op].quiet], ids=op_id)
    def test_loud_miss(self, wire, opcode):
        packet, _ = sample(wire, opcode)
        (reply,) = respond(wire, packet, Result(NOT_FOUND))
        if SPECS[opcode].echo_key:
            # GETK/GATK: the key comes back, with no "Not found" text.
            assert reply.status == 0x01
            assert (reply.extras, reply.key, reply.value) == (b"", b"key-%02x" % opcode, b"")
        else:
            assert_error(reply, 0x01, b"Not found")

    @pytest.mark.parametrize("opcode", [op for op in GET_FAMILY if SPECS[op].quiet], ids=op_id)
    def test_quiet_miss_sends_nothing(self, wire, opcode):
        packet, _ = sample(wire, opcode)
        assert respond(wire, packet, Result(NOT_FOUND)) == []


class TestStorageResponses:
    @pytest.mark.parametrize("opcode", STORAGE_OPCODES, ids=op_id)
    def test_success(self, wire, opcode):
        packet, _ = sample(wire, opcode)
        replies = respond(wire, packet, Result(OK, 0x1234))
        if SPECS[opcode].quiet:
            assert replies == []
        else:
            (reply,) = replies
            assert (reply.status, reply.cas, reply.extras, reply.key, reply.value) == (
                0,
                0x1234,
                b"",
                b"",
                b"",
            )

    @pytest.mark.parametrize(
        "command, status",
        [
            ("add", 0x02),  # add on a live key: "exists"
            ("replace", 0x01),  # replace on a missing key: "not found"
            ("append", 0x05),
            ("prepend", 0x05),
            ("set", 0x05),
        ],
    )
    @pytest.mark.parametrize("quiet", [False, True])
    def test_not_stored_reads_as_memcached_says(self, wire, command, status, quiet):
        opcode = next(
            op
            for op in STORAGE_OPCODES
            if SPECS[op].command == command and SPECS[op].quiet is quiet
        )
        packet, _ = sample(wire, opcode)
        (reply,) = respond(wire, packet, Result(NOT_STORED))
        texts = {0x01: b"Not found", 0x02: b"Data exists for key.", 0x05: b"Not stored."}
        assert_error(reply, status, texts[status])

    @pytest.mark.parametrize("opcode", STORAGE_OPCODES, ids=op_id)
    @pytest.mark.parametrize(
        "status, wire_status, text",
        [
            (EXISTS, 0x02, b"Data exists for key."),
            (NOT_FOUND, 0x01, b"Not found"),
            (TOO_LARGE, 0x03, b"Too large."),
            (NO_MEMORY, 0x82, b"Out of memory"),
        ],
    )
    def test_errors_are_sent_even_for_quiet_commands(self, wire, opcode, status, wire_status, text):
        packet, _ = sample(wire, opcode)
        (reply,) = respond(wire, packet, Result(status))
        assert_error(reply, wire_status, text)

    def test_refused_too_large(self, wire):
        packet = wire.request(0x11, b"k", wire.storage_extras(), b"x" * 2000, opaque=8)
        (reply,) = respond(wire, packet, Result(TOO_LARGE), max_item_size=SMALL_LIMIT)
        assert_error(reply, 0x03, b"Too large.")


class TestOtherResponses:
    @pytest.mark.parametrize("opcode", [0x04, 0x14], ids=op_id)
    def test_delete(self, wire, opcode):
        packet, _ = sample(wire, opcode)
        replies = respond(wire, packet, Result(OK))
        if opcode == 0x14:
            assert replies == []
        else:
            (reply,) = replies
            assert (reply.status, reply.extras, reply.key, reply.value, reply.cas) == (
                0,
                b"",
                b"",
                b"",
                0,
            )
        assert_error(respond(wire, packet, Result(NOT_FOUND))[0], 0x01, b"Not found")
        assert_error(respond(wire, packet, Result(EXISTS))[0], 0x02, b"Data exists for key.")

    @pytest.mark.parametrize("opcode", [0x05, 0x06, 0x15, 0x16], ids=op_id)
    @pytest.mark.parametrize("number", [0, 1, 99, (1 << 64) - 1])
    def test_arith_success(self, wire, opcode, number):
        packet, _ = sample(wire, opcode)
        replies = respond(wire, packet, Result(OK, 77, number=number))
        if SPECS[opcode].quiet:
            assert replies == []
            return
        (reply,) = replies
        assert (reply.status, reply.cas, reply.extras, reply.key) == (0, 77, b"", b"")
        assert reply.value == number.to_bytes(8, "big")

    @pytest.mark.parametrize("opcode", [0x05, 0x06, 0x15, 0x16], ids=op_id)
    @pytest.mark.parametrize(
        "status, wire_status, text",
        [
            (NOT_FOUND, 0x01, b"Not found"),
            (EXISTS, 0x02, b"Data exists for key."),
            (NON_NUMERIC, 0x06, b"Non-numeric server-side value for incr or decr"),
            (NO_MEMORY, 0x82, b"Out of memory"),
        ],
    )
    def test_arith_errors(self, wire, opcode, status, wire_status, text):
        packet, _ = sample(wire, opcode)
        (reply,) = respond(wire, packet, Result(status))
        assert_error(reply, wire_status, text)

    @pytest.mark.parametrize("flags", [0, 0xABCD])
    def test_touch_hit_carries_flags_and_cas(self, wire, flags):
        packet, _ = sample(wire, 0x1C)
        (reply,) = respond(wire, packet, Result(OK, 31, item(b"not sent", flags, cas=31)))
        assert (reply.status, reply.extras, reply.key, reply.value, reply.cas) == (
            0,
            struct.pack(">I", flags),
            b"",
            b"",
            31,
        )

    def test_touch_miss(self, wire):
        packet, _ = sample(wire, 0x1C)
        assert_error(respond(wire, packet, Result(NOT_FOUND))[0], 0x01, b"Not found")

    def test_stats_pairs_then_an_empty_terminator(self, wire):
        packet = wire.request(0x10, opaque=12)
        pairs = [("pid", "123"), ("version", "1.6.18"), ("empty", "")]
        replies = respond(wire, packet, Result(OK, stats=pairs))
        assert [(r.key, r.value) for r in replies] == [
            (b"pid", b"123"),
            (b"version", b"1.6.18"),
            (b"empty", b""),
            (b"", b""),
        ]
        assert all(r.status == 0 and r.extras == b"" and r.cas == 0 for r in replies)

    def test_stats_with_no_pairs_is_just_the_terminator(self, wire):
        (reply,) = respond(wire, wire.request(0x10, b"reset"), Result(OK, stats=[]))
        assert (reply.status, reply.key, reply.value) == (0, b"", b"")

    def test_stats_unknown_group(self, wire):
        (reply,) = respond(wire, wire.request(0x10, b"bogus"), Result(NOT_FOUND))
        assert_error(reply, 0x01, b"Not found")

    def test_version(self, wire):
        (reply,) = respond(wire, wire.request(0x0B, opaque=3), Result(OK))
        assert (reply.status, reply.value) == (0, PROTOCOL_VERSION.encode())
        assert reply.value.startswith(b"1.6.18")

    @pytest.mark.parametrize("opcode", [0x0A, 0x07, 0x08], ids=op_id)
    def test_empty_successes(self, wire, opcode):
        (reply,) = respond(wire, wire.request(opcode, opaque=4), Result(OK))
        assert (reply.status, reply.extras, reply.key, reply.value, reply.cas) == (
            0,
            b"",
            b"",
            b"",
            0,
        )

    @pytest.mark.parametrize("opcode", [0x17, 0x18], ids=op_id)
    def test_quiet_quit_and_flush_send_nothing(self, wire, opcode):
        assert respond(wire, wire.request(opcode), Result(OK)) == []

    @pytest.mark.parametrize("opcode", [0x1B, 0x1F, 0x20, 0x21, 0x22, 0x80, 0xFF], ids=op_id)
    def test_unknown_command(self, wire, opcode):
        request = Request("unknown", opcode=opcode, opaque=0x77)
        out: list = []
        write_response(request, Result(OK), out)
        (reply,) = wire.responses(b"".join(out))
        assert (reply.opcode, reply.opaque) == (opcode, 0x77)
        assert_error(reply, 0x81, b"Unknown command")


# -- properties -------------------------------------------------------------

# Derandomized, with no deadline and no example database: the same examples
# on every run and every machine, so a failure is a bug, never luck or load.
PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def valid_packet(draw):
    """A random well-formed request packet (raw fields) and its Request."""
    opcode = draw(st.sampled_from(OPCODES))
    spec = SPECS[opcode]
    if spec.key is KEY:
        key = draw(st.binary(min_size=1, max_size=250))
    elif spec.key is ANY_KEY:
        key = draw(st.binary(max_size=250))
    else:
        key = b""
    extlen = draw(st.sampled_from(spec.extras))
    value = draw(st.binary(max_size=300)) if spec.value else b""
    opaque = draw(st.integers(0, 0xFFFFFFFF))
    cas = draw(st.integers(0, (1 << 64) - 1))
    flags = exptime = delta = 0
    initial = None
    extras = b""
    if extlen == 8:
        flags, exptime = draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(0, 0xFFFFFFFF))
        extras = struct.pack(">II", flags, exptime)
    elif extlen == 4:
        exptime = draw(st.integers(0, 0xFFFFFFFF))
        extras = struct.pack(">I", exptime)
    elif extlen == 20:
        delta = draw(st.integers(0, (1 << 64) - 1))
        initial = draw(st.integers(0, (1 << 64) - 1))
        exptime = draw(st.one_of(st.just(NO_CREATE), st.integers(0, 0xFFFFFFFF)))
        extras = struct.pack(">QQI", delta, initial, exptime)
        if exptime == NO_CREATE:
            initial, exptime = None, 0
    request = Request(
        spec.command,
        key,
        value,
        flags,
        exptime,
        0 if spec.command == "get" else cas,
        delta,
        initial,
        False,
        opcode,
        opaque,
        spec.quiet,
        spec.echo_key,
    )
    header = struct.pack(
        ">BBHBBHIIQ",
        0x80,
        opcode,
        len(key),
        extlen,
        0,
        0,
        extlen + len(key) + len(value),
        opaque,
        cas,
    )
    packet = header + extras + key + value
    if spec.command == "flush":
        return packet, FlushRequest(exptime, spec.quiet, opcode, opaque)
    if spec.command == "stats":
        # A random key is read whole, as memcached reads every group but
        # reset, settings and detail (tested on their own above).
        assume(not key.startswith((b"reset", b"settings", b"detail")))
        return packet, StatsRequest(key, (), opcode, opaque)
    return packet, request


@st.composite
def header_like(draw):
    """Something shaped like a request header, often valid-looking, with a random body."""
    magic = draw(st.sampled_from([0x80] * 8 + [0x81, 0x00]))
    opcode = draw(st.one_of(st.sampled_from(OPCODES), st.integers(0, 255)))
    keylen = draw(st.one_of(st.integers(0, 12), st.integers(0, 0xFFFF)))
    allowed = SPECS[opcode].extras if opcode in SPECS else (0,)
    extlen = draw(st.one_of(st.sampled_from(allowed), st.integers(0, 255)))
    body = draw(st.binary(max_size=64))
    bodylen = draw(
        st.one_of(
            st.just(keylen + extlen + len(body)),
            st.integers(0, 300),
            st.integers(0, 0xFFFFFFFF),
        )
    )
    cas = draw(st.integers(0, (1 << 64) - 1))
    opaque = draw(st.integers(0, 0xFFFFFFFF))
    header = struct.pack(
        ">BBHBBHIIQ", magic, opcode, keylen, extlen, 0, 0, bodylen & 0xFFFFFFFF, opaque, cas
    )
    return header + draw(st.binary(max_size=keylen + extlen + 8)) + body


@PROPERTY_SETTINGS
@given(
    parts=st.lists(
        st.one_of(
            st.binary(max_size=48),
            header_like(),
            valid_packet().map(lambda pair: pair[0]),
        ),
        max_size=12,
    ),
    cuts=st.lists(st.integers(1, 97), min_size=1, max_size=12),
    max_item_size=st.sampled_from([MEMCACHED_ITEM_HEADER + 20, 1024, 1 << 20]),
)
def test_any_bytes_yield_requests_or_a_protocol_error(parts, cuts, max_item_size):
    data = b"".join(parts)
    parser = RequestParser(max_item_size)
    pos = i = 0
    while pos < len(data):
        size = cuts[i % len(cuts)]
        parser.feed(data[pos : pos + size])
        pos += size
        i += 1
        try:
            while (request := parser.next()) is not None:
                assert isinstance(request, (Request, StatsRequest, FlushRequest))
                assert request.command in {s.command for s in SPECS.values()} | {"unknown"}
        except ProtocolError as error:
            assert isinstance(error.reply, bytes)
            return  # the connection closes here
        assert parser.buffered >= 0


@PROPERTY_SETTINGS
@given(
    packets=st.lists(valid_packet(), min_size=1, max_size=20),
    cuts=st.lists(st.integers(1, 400), min_size=1, max_size=20),
)
def test_valid_packets_round_trip(packets, cuts):
    data = b"".join(packet for packet, _ in packets)
    expected = [request for _, request in packets]
    parser = RequestParser()
    assert feed_in_chunks(parser, data, cuts) == expected
    assert parser.buffered == 0


class TestGetRuns:
    """Consecutive GET-family packets parse as one GetMany, answered by write_gets."""

    GETS = (0x00, 0x09, 0x0C, 0x0D)

    def test_consecutive_gets_form_one_run(self, wire):
        data = b"".join(wire.request(op, b"k%d" % op, opaque=op) for op in self.GETS)
        parser = BinaryParser()
        parser.feed(data)
        run = parser.next()
        assert run == GetMany([b"k0", b"k9", b"k12", b"k13"], ([0, 9, 12, 13], [0, 9, 12, 13]))
        assert parser.next() is None

    def test_a_run_stops_at_any_other_packet(self, wire):
        data = (
            wire.request(0x00, b"a", opaque=1)
            + wire.request(0x0A, opaque=2)
            + wire.request(0x0D, b"b", opaque=3)
        )
        parser = BinaryParser()
        parser.feed(data)
        assert parser.next().keys == [b"a"]
        assert parser.next().command == "noop"
        assert parser.next().keys == [b"b"]
        assert parser.next() is None

    def test_a_run_ends_before_an_incomplete_get(self, wire):
        second = wire.request(0x00, b"second", opaque=2)
        parser = BinaryParser()
        parser.feed(wire.request(0x00, b"first", opaque=1) + second[:-1])
        assert parser.next().keys == [b"first"]
        assert parser.next() is None
        parser.feed(second[-1:])
        assert parser.next().keys == [b"second"]

    def test_a_malformed_get_after_a_run_is_rejected_on_its_own(self, wire):
        bad = wire.request(0x00, b"k", b"\0\0\0\0", opaque=7)  # a GET with extras
        parser = BinaryParser()
        parser.feed(wire.request(0x00, b"ok", opaque=1) + bad)
        assert parser.next().keys == [b"ok"]
        with pytest.raises(ProtocolError) as caught:
            parser.next()
        (reply,) = wire.responses(caught.value.reply)
        assert (reply.opcode, reply.status, reply.opaque) == (0x00, 0x04, 7)

    @pytest.mark.parametrize("size", [0, 5, 1 << 15])  # small values are sliced, large ones viewed
    def test_write_gets_writes_memcached_replies(self, wire, size):
        """Byte for byte what memcached sends, built here independently of the codec."""
        store = Store()
        store.store(Mode.SET, b"hit", b"v" * size, flags=0xABCD)
        keys = [b"hit", b"miss"] * 4
        opcodes = [op for op in self.GETS for _ in range(2)]
        opaques = list(range(len(keys)))
        out: list = []
        write_gets(GetMany(keys, (opcodes, opaques)), store.get_many(keys), out)
        expected = b"".join(
            memcached_get_reply(opcode, opaque, key, get_item(store, key))
            for key, opcode, opaque in zip(keys, opcodes, opaques)
        )
        assert b"".join(out) == expected
        replies = wire.responses(b"".join(out))
        assert [r.opaque for r in replies] == [0, 1, 2, 4, 5, 6]  # quiet misses are silent
        assert all(r.flags == 0xABCD for r in replies if r.status == 0)


def memcached_get_reply(opcode: int, opaque: int, key: bytes, item: Item | None) -> bytes:
    """memcached 1.6's reply to one GET-family request, from PROTOCOL.md."""
    spec = SPECS[opcode]
    echo = key if spec.echo_key else b""
    if item is None:
        if spec.quiet:
            return b""
        body = echo or b"Not found"
        return struct.pack(">BBHBBHIIQ", 0x81, opcode, len(echo), 0, 0, 1, len(body), opaque, 0) + body
    body = 4 + len(echo) + len(item.value)
    header = struct.pack(">BBHBBHIIQ", 0x81, opcode, len(echo), 4, 0, 0, body, opaque, item.cas)
    return header + struct.pack(">I", item.flags) + echo + item.value


class TestLone:
    """lone takes a read that is exactly one plain GET or SET, or one run of
    GET-family packets; get_reply and store_reply answer the first two,
    answer_gets the run."""

    def test_one_get_gives_its_key_and_opaque(self, wire):
        assert BinaryParser().lone(wire.request(0x00, b"k" * 250, opaque=OPAQUE)) == (
            b"k" * 250, OPAQUE
        )

    @pytest.mark.parametrize(
        "packet",
        [
            pytest.param(lambda w: w.request(0x01, b"k", w.storage_extras(), b"v"), id="small"),
            pytest.param(lambda w: w.request(0x01, b"k" * 250, w.storage_extras(), b""), id="empty"),
            pytest.param(
                lambda w: w.request(
                    0x01, b"key", w.storage_extras(0xFFFFFFFF, 0xFFFFFFFF), b"v" * 5000,
                    opaque=OPAQUE, cas=0xFFFFFFFFFFFFFFFF, datatype=1, vbucket=7,
                ),
                id="every field",
            ),
        ],
    )
    def test_one_set_is_the_request_next_makes(self, wire, packet):
        data = packet(wire)
        parsed = BinaryParser()
        parsed.feed(data)
        lone = BinaryParser().lone(data)
        assert isinstance(lone, Request) and lone == parsed.next()

    @pytest.mark.parametrize(
        "packet",
        [
            pytest.param(lambda w: w.request(0x09, b"k"), id="getq"),
            pytest.param(lambda w: w.request(0x0C, b"k"), id="getk"),
            pytest.param(lambda w: w.request(0x11, b"k", b"\0" * 8, b"v"), id="setq"),
            pytest.param(lambda w: w.request(0x02, b"k", b"\0" * 8, b"v"), id="add"),
            pytest.param(lambda w: w.request(0x00, b"k", b"\0\0\0\0"), id="get extras"),
            pytest.param(lambda w: w.request(0x01, b"k", b"\0\0\0\0", b"v"), id="set short extras"),
            pytest.param(lambda w: w.request(0x01, b"k", b""), id="set no extras"),
            pytest.param(lambda w: w.request(0x00, b"k" * 251), id="key too long"),
            pytest.param(lambda w: w.request(0x01, b"k" * 251, b"\0" * 8), id="set key too long"),
            pytest.param(lambda w: w.request(0x01, b"", b"\0" * 8, b"v"), id="set no key"),
            pytest.param(
                lambda w: w.request(0x01, b"k", b"\0" * 8, bodylen=8), id="set key past body"
            ),
            pytest.param(
                lambda w: w.request(0x01, b"k", b"\0" * 8, b"v" * (1 << 20)), id="set too large"
            ),
            pytest.param(lambda w: w.request(0x00, b"k", bodylen=2) + b"x", id="body past key"),
            pytest.param(lambda w: w.request(0x00, b"k", magic=0x81), id="bad magic"),
            pytest.param(lambda w: w.request(0x00, b"k")[:-1], id="incomplete"),
            pytest.param(lambda w: w.request(0x01, b"k", b"\0" * 8, b"v")[:-1], id="set incomplete"),
            pytest.param(lambda w: w.request(0x00, b"k") + w.request(0x0A), id="then more"),
            pytest.param(lambda w: w.request(0x01, b"k", b"\0" * 8) * 2, id="two sets"),
            pytest.param(lambda w: w.request(0x00, b"k") * 2 + w.request(0x01, b"k", b"\0" * 8),
                         id="gets then a set"),
            pytest.param(lambda w: w.request(0x00, b"k") * 2 + w.request(0x00, b"k")[:-1],
                         id="gets then part of one"),
            pytest.param(lambda w: w.request(0x00, b"k") + w.request(0x00, b"k" * 251),
                         id="a get then a key too long"),
            pytest.param(lambda w: w.request(0x00, keylen=0), id="no key"),
        ],
    )
    def test_anything_else_is_left_to_the_parser(self, wire, packet):
        data = packet(wire)
        parser = BinaryParser()
        assert parser.lone(data) is None
        assert parser.buffered == 0  # nothing consumed: the caller feeds it

    @pytest.mark.parametrize(
        "packets",
        [
            pytest.param(lambda w: w.request(0x00, b"k") * 2, id="two gets"),
            pytest.param(
                lambda w: b"".join(
                    w.request(opcode, b"key%d" % opcode, opaque=opcode) for opcode in (0x00, 0x09, 0x0C, 0x0D)
                ),
                id="every get opcode",
            ),
            pytest.param(lambda w: b"".join(w.request(0x00, b"%d" % i) for i in range(100)), id="100 gets"),
            pytest.param(lambda w: w.request(0x09, b"k" * 250) * 2, id="getqs of the longest key"),
        ],
    )
    def test_a_read_that_is_one_run_of_gets_is_the_run_next_makes(self, wire, packets):
        data = packets(wire)
        assert isinstance(BinaryParser().lone(data), GetMany)
        assert_lone_reads_as_next(BinaryParser, data, as_run=None)

    @settings(max_examples=500, deadline=None)
    @given(
        opcode=st.sampled_from([0x00, 0x00, 0x01, 0x01, 0x09, 0x11]),
        key=st.binary(max_size=260),
        extras=st.sampled_from([b"", b"", b"\0" * 4, b"\1" * 8, b"\1" * 8, b"\1" * 8, b"\0" * 20]),
        value=st.one_of(st.just(b""), st.binary(max_size=200)),
        lie=st.sampled_from([None, None, None, "keylen", "extlen", "bodylen", "short", "long"]),
        by=st.sampled_from([-8, -3, -1, 1, 2, 8]),
        opaque=st.integers(0, 0xFFFFFFFF),
        cas=st.integers(0, 0xFFFFFFFFFFFFFFFF),
        copies=st.sampled_from([1, 1, 1, 2, 3]),
    )
    def test_what_lone_takes_next_parses_the_same(
        self, opcode, key, extras, value, lie, by, opaque, cas, copies
    ):
        """Whatever header and body: lone takes a read only as next would parse it.

        Most examples are well formed; the rest get one header length (or
        the read's length) wrong by a little. Some reads hold the packet
        two or three times (a run, if they are GETs).
        """
        lengths = {"keylen": len(key), "extlen": len(extras), "bodylen": len(key + extras + value)}
        if lie in lengths:
            lengths[lie] = max(lengths[lie] + by, 0)
        data = HEADER.pack(
            0x80, opcode, lengths["keylen"], lengths["extlen"], 0, 0, lengths["bodylen"], opaque, cas
        ) + extras + key + value
        if lie == "short":
            data = data[: -abs(by)]
        elif lie == "long":
            data += b"\0" * abs(by)
        data *= copies
        assert_lone_reads_as_next(
            lambda: BinaryParser(max_item_size=200),
            data,
            lambda lone: GetMany([lone[0]], ([0x00], [lone[1]])),
        )

    def test_every_connection_of_one_item_size_shares_one_reader(self, wire):
        """The protocol's ``lone`` is one function, not each parser's bound
        method: with 1,000 busy connections that was one more cold object
        a request. It reads as the parser of that limit does."""
        assert lone_reader(1 << 20) is lone_reader(1 << 20)
        small = lone_reader(100)
        assert small is not lone_reader(1 << 20)
        fits = wire.request(0x01, b"k", b"\0" * 8, b"v" * (100 - MEMCACHED_ITEM_HEADER - 1))
        too_large = wire.request(0x01, b"k", b"\0" * 8, b"v" * (100 - MEMCACHED_ITEM_HEADER))
        assert small(fits) == BinaryParser(100).lone(fits) is not None
        assert small(too_large) is None and BinaryParser(100).lone(too_large) is None

    def test_empty_until_a_packet_is_partly_buffered(self, wire):
        """lone is asked only while the parser is empty (the connection checks)."""
        parser = BinaryParser()
        assert parser.empty
        parser.feed(wire.request(0x00, b"first")[:10])
        assert not parser.empty
        parser.feed(wire.request(0x00, b"first")[10:])
        parser.next()
        assert parser.empty

    def test_not_empty_while_a_large_packet_is_collected(self, wire):
        parser = BinaryParser()
        parser.feed(wire.request(0x01, b"k", b"\0" * 8, b"v" * (1 << 17))[:100])
        assert parser.next() is None and not parser.empty

    def test_not_empty_while_a_refused_value_is_being_skipped(self, wire):
        parser = BinaryParser(max_item_size=1024)
        parser.feed(wire.request(0x01, b"k", b"\0" * 8, b"v" * 4096)[:100])
        assert parser.next().refused
        assert not parser.empty and not parser.partial
        parser.feed(b"v" * (4096 + 33 - 100))
        assert parser.empty

    @pytest.mark.parametrize("status", [OK, NOT_STORED, EXISTS, NOT_FOUND, TOO_LARGE, NO_MEMORY])
    @pytest.mark.parametrize("opcode", [0x01, 0x11, 0x02, 0x03])
    def test_store_reply_is_what_the_writer_writes(self, wire, opcode, status):
        request = BinaryParser().lone(wire.request(0x01, b"k", b"\0" * 8, b"v", opaque=OPAQUE))
        request = request._replace(opcode=opcode, quiet=opcode == 0x11,
                                   command={0x02: "add", 0x03: "replace"}.get(opcode, "set"))
        result = Result(status, 77)
        out: list = []
        write_response(request, result, out)
        assert store_reply(request, result) == b"".join(out)

    @pytest.mark.parametrize("size", [0, 5, 1 << 15])  # small values are sliced, large ones viewed
    def test_get_reply_matches_write_gets(self, size):
        store = Store()
        store.store(Mode.SET, b"hit", b"v" * size, flags=0xABCD)
        for key in (b"hit", b"miss"):
            expected: list = []
            records = [store.get_record(key)]
            write_gets(GetMany([key], ([0x00], [OPAQUE])), records, expected)
            assert get_reply(OPAQUE, records[0]) == b"".join(expected)
            assert get_reply(OPAQUE, records[0]) == memcached_get_reply(
                0x00, OPAQUE, key, get_item(store, key)
            )
"""Fuzzing the binary codec: whatever bytes arrive, BinaryParser answers sanely.

What lives here: property tests (hypothesis, derandomized) and a seeded bulk
fuzz that feed ``BinaryParser`` arbitrary bytes and mutated valid packets —
bytes flipped, packets truncated, lengths, opcodes and magic rewritten,
packets spliced together — in random chunk sizes. The contract checked:

- ``next()`` returns a ``Request``, a ``GetMany`` or None, or raises
  ``ProtocolError`` whose ``reply`` is bytes (empty, or one well-formed 0x04
  / 0x81 error reply echoing the opcode); never any other exception;
- every request it returns is within the protocol's limits (keys of 1–250
  bytes, values within the item size limit unless refused);
- ``parser.buffered`` never exceeds what was fed, and once ``next()`` says
  "need more" it is below one largest acceptable packet, whatever lengths
  the headers claim (up to 4 GiB).

What does not: well-formed round trips and the opcode table (see
test_binary_codec.py), or a live server (tests/integration/test_hostile_input.py).
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbserver.commands import FlushRequest, GetMany, Request, StatsRequest
from mbserver.protocol.binary import RULES, BinaryParser, ProtocolError
from mbserver.record import MAX_KEY_LENGTH, MEMCACHED_ITEM_HEADER

from .. import packets as P

HEADER_SIZE = P.HEADER_SIZE
# Offsets of the request header's fields (magic, opcode, keylen, extlen, ...).
MAGIC_AT, OPCODE_AT, KEYLEN_AT, EXTLEN_AT, BODYLEN_AT = 0, 1, 2, 4, 8
GET_OPCODES = {P.GET, P.GETQ, P.GETK, P.GETKQ}
STORAGE_COMMANDS = {"set", "add", "replace", "append", "prepend"}
SASL_WITH_DATA = {"sasl_auth", "sasl_step"}  # with authentication on
KNOWN_COMMANDS = {rule.command for rule in RULES.values()} | {
    "unknown",
    "sasl_list",
    "sasl_auth",
    "sasl_step",
}
ITEM_SIZES = [MEMCACHED_ITEM_HEADER + 40, 1024, 1 << 20]
# Unknown opcodes included on purpose: their bodies are skipped, not buffered.
OPCODES = sorted(RULES) + [P.SASL_LIST_MECHS, P.SASL_AUTH, P.SASL_STEP, 0x1B, 0x30, 0xFF]

# Same examples on every run and machine, no example database, no deadline:
# a failure is a bug, never luck or a slow CI box.
FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def buffer_bound(max_item_size: int) -> int:
    """The most a parser waiting for more may hold: one largest acceptable packet.

    A header (24) + the longest extras (20, INCR/DECR) + a 250-byte key + a value
    that fits the item size limit; refused values and unknown bodies are skipped.
    """
    return HEADER_SIZE + 20 + MAX_KEY_LENGTH + max_item_size


def check_request(request, max_item_size: int) -> None:
    if request.__class__ is GetMany:
        opcodes, opaques = request.context
        assert request.keys and len(request.keys) == len(opcodes) == len(opaques)
        assert all(isinstance(k, bytes) and 0 < len(k) <= MAX_KEY_LENGTH for k in request.keys)
        assert set(opcodes) <= GET_OPCODES
        return
    if request.__class__ in (StatsRequest, FlushRequest):
        assert request.command in KNOWN_COMMANDS
        assert 0 <= request.opcode <= 0xFF and 0 <= request.opaque <= 0xFFFFFFFF
        if request.__class__ is StatsRequest:
            assert len(request.group) + sum(len(a) + 1 for a in request.args) <= MAX_KEY_LENGTH
        return
    assert request.__class__ is Request, f"unexpected {type(request).__name__}: {request!r}"
    assert request.command in KNOWN_COMMANDS
    assert isinstance(request.key, bytes) and isinstance(request.value, bytes)
    assert len(request.key) <= MAX_KEY_LENGTH
    assert 0 <= request.opcode <= 0xFF and 0 <= request.opaque <= 0xFFFFFFFF
    if request.command in STORAGE_COMMANDS or request.command in SASL_WITH_DATA:
        assert request.key
        if request.refused:  # a value over the limit is skipped, never buffered
            assert request.value == b""
        else:
            assert len(request.key) + len(request.value) + MEMCACHED_ITEM_HEADER <= max_item_size
    else:
        assert not request.refused


def check_error(error: ProtocolError) -> None:
    assert isinstance(error.reply, bytes)
    if not error.reply:  # a bad magic byte: closed without a reply
        return
    (reply,) = P.responses(error.reply)
    assert reply.magic == P.RESPONSE_MAGIC
    assert reply.status in (P.INVALID_ARGUMENTS, P.UNKNOWN_COMMAND)
    assert reply.value == P.ERROR_TEXT[reply.status]


def drive(data: bytes, cuts: list[int], max_item_size: int, sasl: bool = False) -> tuple[int, bool]:
    """Feed data in chunks of the sizes in cuts (cycled), checking the contract after
    each call. Returns (requests parsed, whether it ended in a ProtocolError)."""
    parser = BinaryParser(max_item_size, sasl=sasl)
    bound = buffer_bound(max_item_size)
    fed = pos = i = parsed = 0
    while pos < len(data):
        size = cuts[i % len(cuts)]
        i += 1
        parser.feed(data[pos : pos + size])
        fed += len(data[pos : pos + size])
        pos += size
        assert parser.buffered <= fed
        try:
            while (request := parser.next()) is not None:
                check_request(request, max_item_size)
                parsed += 1
                assert parser.buffered <= fed
        except ProtocolError as error:
            check_error(error)
            return parsed, True
        assert parser.buffered <= min(fed, bound), (parser.buffered, fed, bound)
    return parsed, False


# -- building valid packets and mutating them ---------------------------------------


def build_valid(opcode: int, key: bytes, value: bytes, opaque: int, cas: int) -> bytes:
    """A well-framed request for opcode: the extras, key and value its rule allows."""
    rule = RULES.get(opcode)
    if opcode == P.SASL_LIST_MECHS:
        return P.request(opcode, opaque=opaque, cas=cas)
    if rule is None:  # unknown, SASL_AUTH or SASL_STEP: a mechanism-like key and a body
        return P.request(opcode, key[:5], b"", value, opaque=opaque, cas=cas)
    extlen = rule.extras[-1]
    extras = bytes(range(extlen))
    if rule.key == "no key":
        key = b""
    elif not key:
        key = b"k"
    return P.request(opcode, key, extras, value if rule.value else b"", opaque=opaque, cas=cas)


@st.composite
def valid_packet(draw) -> bytes:
    opcode = draw(st.sampled_from(OPCODES))
    key = draw(st.one_of(st.binary(min_size=1, max_size=12), st.just(b"k" * MAX_KEY_LENGTH)))
    value = draw(st.one_of(st.binary(max_size=40), st.just(b"v" * 1100)))
    return build_valid(
        opcode,
        key,
        value,
        draw(st.integers(0, 0xFFFFFFFF)),
        draw(st.integers(0, (1 << 64) - 1)),
    )


LENGTH_EXTREMES = [0, 1, 249, 250, 251, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]


def _put(packet: bytes, at: int, fmt: str, value: int) -> bytes:
    size = struct.calcsize(fmt)
    if len(packet) < at + size:
        return packet
    return packet[:at] + struct.pack(fmt, value) + packet[at + size :]


@st.composite
def mutated_packet(draw) -> bytes:
    """A valid packet with one to three mutations applied."""
    packet = draw(valid_packet())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                ["flip", "truncate", "magic", "opcode", "keylen", "extlen", "bodylen", "insert"]
            )
        )
        if kind == "flip" and packet:
            at = draw(st.integers(0, len(packet) - 1))
            packet = packet[:at] + bytes([draw(st.integers(0, 255))]) + packet[at + 1 :]
        elif kind == "truncate":
            packet = packet[: draw(st.integers(0, len(packet)))]
        elif kind == "magic":
            packet = _put(packet, MAGIC_AT, ">B", draw(st.sampled_from([0x81, 0x00, 0x7F, 0xFF])))
        elif kind == "opcode":
            packet = _put(packet, OPCODE_AT, ">B", draw(st.integers(0, 255)))
        elif kind == "keylen":
            keylen = draw(
                st.one_of(st.sampled_from([0, 1, 250, 251, 0xFFFF]), st.integers(0, 0xFFFF))
            )
            packet = _put(packet, KEYLEN_AT, ">H", keylen)
        elif kind == "extlen":
            packet = _put(packet, EXTLEN_AT, ">B", draw(st.sampled_from([0, 1, 4, 8, 20, 255])))
        elif kind == "bodylen":
            bodylen = draw(st.one_of(st.sampled_from(LENGTH_EXTREMES), st.integers(0, 0xFFFFFFFF)))
            packet = _put(packet, BODYLEN_AT, ">I", bodylen)
        elif kind == "insert":
            at = draw(st.integers(0, len(packet)))
            packet = packet[:at] + draw(st.binary(min_size=1, max_size=8)) + packet[at:]
    return packet


@st.composite
def spliced(draw) -> bytes:
    """The head of one stream joined to the tail of another."""
    a = draw(st.lists(valid_packet(), min_size=1, max_size=3).map(b"".join))
    b = draw(st.lists(valid_packet(), min_size=1, max_size=3).map(b"".join))
    return a[: draw(st.integers(0, len(a)))] + b[draw(st.integers(0, len(b))) :]


CUTS = st.lists(
    st.sampled_from([1, 2, 3, 7, 23, 24, 25, 64, 333, 4096, 70000]), min_size=1, max_size=8
)


# -- properties ------------------------------------------------------------------


@FUZZ_SETTINGS
@given(
    data=st.binary(max_size=600),
    cuts=CUTS,
    max_item_size=st.sampled_from(ITEM_SIZES),
    sasl=st.booleans(),
)
def test_arbitrary_bytes(data, cuts, max_item_size, sasl):
    drive(data, cuts, max_item_size, sasl)


@FUZZ_SETTINGS
@given(
    parts=st.lists(
        st.one_of(valid_packet(), mutated_packet(), spliced(), st.binary(max_size=30)),
        min_size=1,
        max_size=10,
    ),
    cuts=CUTS,
    max_item_size=st.sampled_from(ITEM_SIZES),
    sasl=st.booleans(),
)
def test_mutated_and_spliced_packets(parts, cuts, max_item_size, sasl):
    drive(b"".join(parts), cuts, max_item_size, sasl)


@settings(FUZZ_SETTINGS, max_examples=100)
@given(
    packets=st.lists(valid_packet(), min_size=1, max_size=10),
    cuts=CUTS,
    sasl=st.booleans(),
)
def test_valid_packets_are_never_rejected(packets, cuts, sasl):
    # The generator's packets must be accepted, or the mutations above would
    # mostly be exercising the first rejection.
    parsed, failed = drive(b"".join(packets), cuts, 1 << 20, sasl)
    assert not failed
    assert parsed >= 1


# -- seeded bulk fuzz --------------------------------------------------------------


def random_packet(rng: random.Random, hostility: float) -> bytes:
    """A valid packet; with probability `hostility` a mutated one, or random bytes."""
    opcode = rng.choice(OPCODES)
    key = rng.randbytes(rng.randint(1, 16))
    packet = build_valid(opcode, key, rng.randbytes(rng.randint(0, 64)), rng.getrandbits(32), 0)
    roll = rng.random()
    if roll < hostility / 4:
        return rng.randbytes(rng.randint(1, 48))
    if roll < hostility:
        field, fmt, choices = rng.choice(
            [
                (OPCODE_AT, ">B", range(256)),
                (KEYLEN_AT, ">H", [0, 250, 251, 0xFFFF, rng.getrandbits(16)]),
                (EXTLEN_AT, ">B", [0, 4, 8, 20, 255, rng.getrandbits(8)]),
                (BODYLEN_AT, ">I", [*LENGTH_EXTREMES, rng.getrandbits(32)]),
                (MAGIC_AT, ">B", [0x81, 0x00]),
            ]
        )
        packet = _put(packet, field, fmt, rng.choice(list(choices)))
        if rng.random() < 0.3:
            packet = packet[: rng.randint(0, len(packet))]
    return packet


BULK_SEEDS = range(40)
BULK_PACKETS = 500


@pytest.mark.parametrize("seed", BULK_SEEDS)
def test_seeded_bulk_fuzz(seed):
    """40 seeds x 500 packets, cut into streams of 1-30 packets as connections
    would send them, each fed in random chunk sizes to a fresh parser. A
    failure names its seed: the run replays exactly."""
    rng = random.Random(seed)
    sent = 0
    while sent < BULK_PACKETS:
        count = min(rng.randint(1, 30), BULK_PACKETS - sent)
        hostility = rng.choice([0.02, 0.1, 0.3, 1.0])
        stream = b"".join(random_packet(rng, hostility) for _ in range(count))
        cuts = [rng.choice([1, 5, 24, 100, 1500, 65536]) for _ in range(8)]
        drive(stream, cuts, rng.choice(ITEM_SIZES), sasl=rng.random() < 0.5)
        sent += count


# -- claimed lengths up to 4 GiB -------------------------------------------------


CLAIMED_LENGTHS = [0x100000, 0x7FFFFFFF, 0xFFFFFFFF]  # just over 1 MiB, 2 GiB, 4 GiB


@pytest.mark.parametrize("opcode", range(256), ids=lambda op: f"op{op:02x}")
def test_claimed_body_length_is_never_buffered(opcode):
    """Every opcode with a huge claimed body: the answer (refused, unknown, or a
    protocol error) comes from the header alone, and the body that follows is
    dropped as it arrives, never accumulated."""
    key = b"key"
    rule = RULES.get(opcode)
    extlen = rule.extras[-1] if rule else 0
    for bodylen in CLAIMED_LENGTHS:
        parser = BinaryParser(1 << 20)
        parser.feed(P.request(opcode, key, bytes(extlen), bodylen=bodylen))
        try:
            request = parser.next()
        except ProtocolError as error:
            check_error(error)
            continue
        assert request is not None, "the header alone must be enough to answer"
        check_request(request, 1 << 20)
        assert request.refused or request.command == "unknown"
        remaining = min(bodylen - extlen - len(key), 4 << 20)
        junk = b"\xab" * 65536
        while remaining > 0:
            parser.feed(junk[:remaining])
            remaining -= len(junk)
            assert parser.next() is None
            assert parser.buffered == 0


def test_a_large_value_is_buffered_only_as_it_arrives():
    value_len = (1 << 20) - MEMCACHED_ITEM_HEADER - 3  # the largest that fits
    packet = P.set_(b"key", b"x" * value_len)
    parser = BinaryParser(1 << 20)
    fed = 0
    for start in range(0, len(packet) - 1, 65536):
        chunk = packet[start : min(start + 65536, len(packet) - 1)]
        parser.feed(chunk)
        fed += len(chunk)
        assert parser.next() is None
        assert parser.buffered == fed
    parser.feed(packet[-1:])
    request = parser.next()
    assert request.command == "set" and len(request.value) == value_len
    assert parser.buffered == 0

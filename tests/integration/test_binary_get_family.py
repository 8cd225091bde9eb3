"""GET, GETK, GETQ, GETKQ, GAT, GATK, GATQ, GATKQ and TOUCH, byte by byte."""

from __future__ import annotations

import pytest

from .. import packets as P

GET_FAMILY = [P.GET, P.GETK, P.GETQ, P.GETKQ]
GAT_FAMILY = [P.GAT, P.GATK, P.GATQ, P.GATKQ]
ECHOES_KEY = {P.GETK, P.GETKQ, P.GATK, P.GATKQ}


def gat(key: bytes, expiry: int = 0, opcode: int = P.GAT, **kw) -> bytes:
    return P.request(opcode, key, P.expiry_extras(expiry), **kw)


@pytest.mark.parametrize("flags", [0, 1, 0xDEADBEEF, 0xFFFFFFFF])
@pytest.mark.parametrize("opcode", GET_FAMILY)
def test_get_hit_always_carries_flags(conn, key, opcode, flags):
    assert conn.request(P.set_(key, b"value", flags=flags)).status == P.SUCCESS
    (reply,) = conn.sync(P.get(key, opcode, opaque=0x77))
    assert (reply.magic, reply.opcode, reply.status, reply.opaque) == (
        P.RESPONSE_MAGIC,
        opcode,
        P.SUCCESS,
        0x77,
    )
    assert reply.extras == flags.to_bytes(4, "big")
    assert reply.value == b"value"
    assert reply.key == (key if opcode in ECHOES_KEY else b"")
    assert reply.cas != 0


@pytest.mark.parametrize("opcode", GAT_FAMILY)
def test_gat_hit_carries_flags(conn, key, opcode):
    conn.request(P.set_(key, b"v", flags=0))
    (reply,) = conn.sync(gat(key, 100, opcode, opaque=5))
    assert (reply.opcode, reply.status, reply.opaque) == (opcode, P.SUCCESS, 5)
    assert reply.extras == b"\x00\x00\x00\x00"
    assert reply.key == (key if opcode in ECHOES_KEY else b"")
    assert reply.value == b"v"


def test_get_miss_says_not_found(conn, key):
    reply = conn.request(P.get(key, opaque=3))
    assert reply == P.Response(P.RESPONSE_MAGIC, P.GET, P.KEY_NOT_FOUND, 3, 0, value=b"Not found")


@pytest.mark.parametrize("opcode", [P.GETK, P.GATK])
def test_keyed_miss_echoes_key_without_body(conn, key, opcode):
    data = P.get(key, opcode, opaque=4) if opcode == P.GETK else gat(key, 0, opcode, opaque=4)
    reply = conn.request(data)
    assert reply == P.Response(P.RESPONSE_MAGIC, opcode, P.KEY_NOT_FOUND, 4, 0, key=key)


def test_gat_miss_says_not_found(conn, key):
    reply = conn.request(gat(key, 0, opaque=6))
    assert reply == P.Response(P.RESPONSE_MAGIC, P.GAT, P.KEY_NOT_FOUND, 6, 0, value=b"Not found")


@pytest.mark.parametrize("opcode", [P.GETQ, P.GETKQ, P.GATQ, P.GATKQ])
def test_quiet_get_miss_is_silent(conn, key, opcode):
    data = P.get(key, opcode) if opcode in (P.GETQ, P.GETKQ) else gat(key, 0, opcode)
    assert conn.sync(data) == []


def test_touch_hit_returns_flags_only(conn, key):
    stored = conn.request(P.set_(key, b"v", flags=0x0A0B0C0D))
    reply = conn.request(P.request(P.TOUCH, key, P.expiry_extras(100), opaque=8))
    assert (reply.opcode, reply.status, reply.opaque) == (P.TOUCH, P.SUCCESS, 8)
    assert reply.extras == b"\x0a\x0b\x0c\x0d"
    assert reply.key == b"" and reply.value == b""
    assert reply.cas == stored.cas


def test_touch_miss(conn, key):
    reply = conn.request(P.request(P.TOUCH, key, P.expiry_extras(100), opaque=9))
    assert reply == P.Response(P.RESPONSE_MAGIC, P.TOUCH, P.KEY_NOT_FOUND, 9, 0, value=b"Not found")


def test_touch_into_the_past_expires(conn, key):
    conn.request(P.set_(key, b"v"))
    # > 30 days means an absolute Unix time; this one is in 1970.
    assert conn.request(P.request(P.TOUCH, key, P.expiry_extras(2_592_001))).status == P.SUCCESS
    assert conn.request(P.get(key)).status == P.KEY_NOT_FOUND


def test_gat_returns_value_then_applies_expiry(conn, key):
    conn.request(P.set_(key, b"v"))
    assert conn.request(gat(key, 2_592_001)).value == b"v"
    assert conn.request(P.get(key)).status == P.KEY_NOT_FOUND


def test_set_with_past_absolute_expiry_is_a_miss(conn, key):
    assert conn.request(P.set_(key, b"v", expiry=2_592_001)).status == P.SUCCESS
    assert conn.request(P.get(key)).status == P.KEY_NOT_FOUND


def test_get_hit_cas_matches_store_cas(conn, key):
    stored = conn.request(P.set_(key, b"v"))
    assert conn.request(P.get(key)).cas == stored.cas

"""bench/soakwire.py: the soak's requests and reply readers, with no sockets.

Replies are fed whole, byte by byte and with trailing data; anything that is
not a well-formed answer to the request it is read for must raise Garbled.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from .. import packets as P

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
try:
    from soakmodel import MISS, NOREPLY, Arith, Delete, Get, Mode, Status, Store, Touch, done, hit, number
    from soakwire import (
        Garbled, ReplyBuffer, binary_call, check_admin, decode_binary, is_reply_to, meta_call, read_text, silent,
        text_call, text_get,
    )
finally:
    sys.path.remove(str(BENCH))

K = b"key1"


def binary(data: bytes):
    buf = ReplyBuffer()
    buf.feed(data)
    resp = buf.read_binary()
    assert resp is not None and buf.pending == 0
    return resp


def reply(opcode: int, status: int = 0, extras: bytes = b"", key: bytes = b"", value: bytes = b"",
          opaque: int = 7, cas: int = 0) -> bytes:
    body = extras + key + value
    return P.HEADER.pack(P.RESPONSE_MAGIC, opcode, len(key), len(extras), 0, status, len(body), opaque, cas) + body


def text(call, data: bytes, chunked: bool = False):
    """Replies read from ``data``, fed whole or one byte at a time."""
    buf = ReplyBuffer()
    pieces = [data[i : i + 1] for i in range(len(data))] if chunked else [data]
    replies = None
    for piece in pieces:
        assert replies is None, "a reply was complete before all of it arrived"
        buf.feed(piece)
        replies = read_text(buf, call)
    assert replies is not None
    return replies, buf


# ---------------------------------------------------------------- binary requests


def test_binary_requests_are_what_the_reference_packets_say():
    assert binary_call("setq", Store(Mode.SET, K, b"v", 5, 9, cas=3), 7).data == P.set_(
        K, b"v", flags=5, expiry=9, opcode=P.SETQ, opaque=7, cas=3)
    assert binary_call("incr", Arith(K, 5), 7).data == P.counter(P.INCREMENT, K, 5, 0, P.NO_EXPIRY_CREATE, opaque=7)
    assert binary_call("decrq", Arith(K, 5, False, 42, 3), 7).data == P.counter(P.DECREMENTQ, K, 5, 42, 3, opaque=7)
    assert binary_call("gatkq", Get(K, 10), 7).data == P.request(P.GATKQ, K, P.expiry_extras(10), opaque=7)
    assert binary_call("append", Store(Mode.APPEND, K, b"x"), 7).data == P.request(P.APPEND, K, b"", b"x", opaque=7)
    assert binary_call("delete", Delete(K, cas=9), 7).data == P.request(P.DELETE, K, cas=9, opaque=7)
    assert binary_call("touch", Touch(K, 4), 7).data == P.request(P.TOUCH, K, P.expiry_extras(4), opaque=7)
    assert binary_call("stat", opaque=7).data == P.request(P.STAT, opaque=7)
    assert binary_call("getkq", Get(K), 1).quiet and not binary_call("getk", Get(K), 1).quiet


# ---------------------------------------------------------------- binary replies


def test_binary_get_hit_and_miss():
    call = binary_call("getk", Get(K), 7)
    got = decode_binary(call, binary(reply(P.GETK, 0, struct.pack(">I", 9), K, b"val", cas=33)))
    assert got == hit(b"val", 9, 33)
    assert decode_binary(call, binary(reply(P.GETK, 1, key=K, value=b"Not found"))) is MISS


@pytest.mark.parametrize(
    "resp, why",
    [
        (reply(P.GET, 0, b"", b"", b"val"), "extras"),  # a hit without its flags
        (reply(P.GET, 0, struct.pack(">I", 1), K, b"val"), "echoed key"),  # GET does not echo the key
        (reply(P.SET, 0, struct.pack(">I", 1), b"", b"val"), "opcode"),
        (reply(P.GET, 1, struct.pack(">I", 1), b"", b"Not found"), "extras"),
    ],
)
def test_binary_malformed_replies_are_garbled(resp, why):
    with pytest.raises(Garbled, match=why):
        decode_binary(binary_call("get", Get(K), 7), binary(resp))


def test_binary_statuses_map_per_command():
    add = binary_call("add", Store(Mode.ADD, K, b"v"), 7)
    assert decode_binary(add, binary(reply(P.ADD, 2))) == done(Status.NOT_STORED)
    cas = binary_call("set", Store(Mode.SET, K, b"v", cas=5), 7)
    assert decode_binary(cas, binary(reply(P.SET, 2))) == done(Status.EXISTS)
    assert decode_binary(cas, binary(reply(P.SET, 1))) == done(Status.NOT_FOUND)
    replace = binary_call("replace", Store(Mode.REPLACE, K, b"v"), 7)
    assert decode_binary(replace, binary(reply(P.REPLACE, 1))) == done(Status.NOT_STORED)
    incr = binary_call("incr", Arith(K, 1), 7)
    assert decode_binary(incr, binary(reply(P.INCREMENT, 0, value=struct.pack(">Q", 12), cas=4))) == number(12, 4)
    assert decode_binary(incr, binary(reply(P.INCREMENT, 6))) == done(Status.NON_NUMERIC)
    assert decode_binary(add, binary(reply(P.ADD, 0x82))) == done(Status.OUT_OF_MEMORY)
    assert decode_binary(add, binary(reply(P.ADD, 4))).status is Status.ERROR


def test_a_short_counter_is_garbled():
    with pytest.raises(Garbled):
        decode_binary(binary_call("incr", Arith(K, 1), 7), binary(reply(P.INCREMENT, 0, value=b"12")))


def test_binary_buffer_waits_for_whole_replies_and_rejects_bad_magic():
    first = reply(P.GET, 0, struct.pack(">I", 0), b"", b"x" * 100)
    data = first + reply(P.NOOP)
    buf = ReplyBuffer()
    for i in range(len(first) - 1):
        buf.feed(data[i : i + 1])
        assert buf.read_binary() is None
    buf.feed(data[len(first) - 1 :])
    assert buf.read_binary().value == b"x" * 100
    assert buf.read_binary().opcode == P.NOOP
    buf.feed(b"\x80" + b"\x00" * 23)
    with pytest.raises(Garbled, match="magic"):
        buf.read_binary()


def test_stat_ends_with_an_empty_key_and_admin_errors_are_garbled():
    call = binary_call("stat", opaque=7)
    assert not check_admin(call, binary(reply(P.STAT, key=b"pid", value=b"1")))
    assert check_admin(call, binary(reply(P.STAT)))
    with pytest.raises(Garbled):
        check_admin(binary_call("noop", opaque=7), binary(reply(P.NOOP, 0x81)))
    with pytest.raises(Garbled, match="VERSION"):
        check_admin(binary_call("version", opaque=7), binary(reply(P.VERSION)))


# ---------------------------------------------------------------- text


@pytest.mark.parametrize("chunked", [False, True])
def test_a_multi_get_reads_hits_in_order_and_misses_between(chunked):
    call = text_get("gets", [Get(b"a"), Get(b"b"), Get(b"c")])
    assert call.data == b"gets a b c\r\n"
    replies, buf = text(call, b"VALUE b 3 2 9\r\nhi\r\nEND\r\n", chunked)
    assert replies == [MISS, hit(b"hi", 3, 9), MISS]
    assert buf.pending == 0


def test_gat_puts_the_ttl_first():
    assert text_get("gat", [Get(b"a", 5), Get(b"b", 5)]).data == b"gat 5 a b\r\n"


@pytest.mark.parametrize(
    "data",
    [
        b"VALUE c 0 1\r\nx\r\nVALUE b 0 1\r\ny\r\nEND\r\n",  # out of order
        b"VALUE z 0 1\r\nx\r\nEND\r\n",  # not asked for
        b"VALUE b 0 1\r\nxy\r\nEND\r\n",  # a data block longer than said
        b"VALUE b 0 1 5\r\nx\r\nEND\r\n",  # a CAS on a plain get
        b"SERVER_ERROR oops\r\n",
    ],
)
def test_malformed_retrievals_are_garbled(data):
    with pytest.raises(Garbled):
        text(text_get("get", [Get(b"a"), Get(b"b"), Get(b"c")]), data)


def test_an_incomplete_reply_consumes_nothing():
    buf = ReplyBuffer()
    call = text_get("get", [Get(b"a")])
    buf.feed(b"VALUE a 0 5\r\nabc")
    assert read_text(buf, call) is None
    buf.feed(b"de\r\nEND\r\nSTORED\r\n")
    assert read_text(buf, call) == [hit(b"abcde", 0)]
    assert read_text(buf, text_call("set", Store(Mode.SET, K, b"v"))) == [done(Status.STORED)]


def test_storage_and_counter_lines():
    set_call = text_call("set", Store(Mode.SET, K, b"v\r\nx", 3, 4))
    assert set_call.data == b"set key1 3 4 4\r\nv\r\nx\r\n"
    assert text(set_call, b"NOT_STORED\r\n")[0] == [done(Status.NOT_STORED)]
    assert text(set_call, b"SERVER_ERROR out of memory storing object\r\n")[0] == [done(Status.OUT_OF_MEMORY)]
    assert text(set_call, b"DELETED\r\n")[0][0].status is Status.ERROR
    cas_call = text_call("cas", Store(Mode.SET, K, b"v", cas=12), noreply=True)
    assert cas_call.data == b"cas key1 0 0 1 12 noreply\r\nv\r\n" and silent(cas_call) is NOREPLY
    incr = text_call("incr", Arith(K, 3))
    assert text(incr, b"17\r\n")[0] == [number(17)]
    assert text(incr, b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")[0] == [
        done(Status.NON_NUMERIC)]
    assert text(text_call("touch", Touch(K, 3)), b"TOUCHED\r\n")[0] == [done(Status.TOUCHED)]


def test_admin_lines():
    assert text(text_call("stats"), b"STAT pid 1\r\nSTAT evictions 0\r\nEND\r\n")[0] == []
    with pytest.raises(Garbled):
        text(text_call("stats"), b"STAT pid 1\r\nEND\r\n")  # no evictions
    assert text(text_call("version"), b"VERSION 1.6.18\r\n")[0] == []
    with pytest.raises(Garbled):
        text(text_call("mn"), b"EN\r\n")


# ---------------------------------------------------------------- meta


def test_meta_get_flags_and_touch_order():
    call = meta_call(Get(K, 7), "vfcstk", 4)
    assert call.data == b"mg key1 T7 v f c s t k O4\r\n"
    data = b"VA 3 f9 c5 s3 t7 kkey1 O4\r\nabc\r\n"
    assert text(call, data, chunked=True)[0] == [hit(b"abc", 9, 5, 7, 3)]
    assert text(call, b"EN O4 kkey1\r\n")[0] == [MISS]


@pytest.mark.parametrize(
    "flags, data",
    [
        ("v", b"VA 3 O5\r\nabc\r\n"),  # another request's opaque
        ("vk", b"VA 3 kother O4\r\nabc\r\n"),  # another key
        ("", b"VA 3 O4\r\nabc\r\n"),  # a value nobody asked for
        ("v", b"HD O4\r\n"),  # no value though asked
        ("vs", b"VA 3 s4 O4\r\nabc\r\n"),  # a size that is not the value's
    ],
)
def test_meta_get_mismatches_are_garbled(flags, data):
    with pytest.raises(Garbled):
        text(meta_call(Get(K), flags, 4), data)


def test_meta_set_delete_arith():
    ms = meta_call(Store(Mode.ADD, K, b"abc", 3, 9), "c", 4)
    assert ms.data == b"ms key1 3 c O4 ME F3 T9\r\nabc\r\n"
    assert text(ms, b"HD c12 O4\r\n")[0] == [done(Status.STORED, 12)]
    assert text(ms, b"NS c0 O4\r\n")[0] == [done(Status.NOT_STORED)]  # a refusal's c0 is no CAS
    md = meta_call(Delete(K, cas=8), "", None)
    assert md.data == b"md key1 C8\r\n" and text(md, b"EX\r\n")[0] == [done(Status.EXISTS)]
    ma = meta_call(Arith(K, 5, False, 10, 2), "v", 4)
    assert ma.data == b"ma key1 v O4 MD D5 N2 J10\r\n"
    assert text(ma, b"VA 2 O4\r\n10\r\n")[0] == [number(10)]
    assert text(ma, b"NF O4\r\n")[0] == [done(Status.NOT_FOUND)]
    with pytest.raises(Garbled):
        text(ma, b"VA 2 O4\r\nab\r\n")


def test_a_quiet_meta_reply_is_recognised_by_its_opaque():
    call = meta_call(Get(K), "vq", 4)
    buf = ReplyBuffer()
    buf.feed(b"VA 1 O4")
    assert is_reply_to(buf, call) is None
    buf.feed(b"\r\nx\r\n")
    assert is_reply_to(buf, call) is True
    other = ReplyBuffer()
    other.feed(b"MN\r\n")
    assert is_reply_to(other, call) is False
    assert silent(call) is MISS
    with pytest.raises(ValueError):
        meta_call(Get(K), "vq", None)


def test_what_silence_means():
    assert silent(binary_call("setq", Store(Mode.SET, K, b"v"), 1)) == done(Status.STORED)
    assert silent(binary_call("deleteq", Delete(K), 1)) == done(Status.DELETED)
    assert silent(binary_call("incrq", Arith(K, 1), 1)) == number(None)
    assert silent(binary_call("getkq", Get(K), 1)) is MISS
    assert silent(text_call("delete", Delete(K), noreply=True)) is NOREPLY

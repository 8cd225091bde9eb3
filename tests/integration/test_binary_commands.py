"""Command semantics over raw packets: counters, concatenation, CAS, FLUSH, storage modes."""

from __future__ import annotations

import pytest

from .. import packets as P
from .wire import Connection

MAX64 = 2**64 - 1


def error(opcode: int, status: int, opaque: int = 0) -> P.Response:
    return P.Response(P.RESPONSE_MAGIC, opcode, status, opaque, 0, value=P.ERROR_TEXT[status])


def stored_digits(conn, key: bytes) -> bytes:
    """The counter as a GET shows it.  memcached rewrites a number that got
    shorter in place, padded with spaces; the digits are what matters."""
    reply = conn.request(P.get(key))
    assert reply.status == P.SUCCESS
    return reply.value.rstrip(b" ")


# --- INCREMENT / DECREMENT ---------------------------------------------------


def test_incr_creates_with_initial_then_counts(conn, key):
    first = conn.request(P.counter(P.INCREMENT, key, 5, initial=10, opaque=1))
    assert (first.opcode, first.status, first.opaque, first.counter) == (
        P.INCREMENT,
        P.SUCCESS,
        1,
        10,
    )
    second = conn.request(P.counter(P.INCREMENT, key, 5, initial=10))
    assert second.counter == 15
    assert first.cas and second.cas and second.cas != first.cas
    assert (second.extras, second.key) == (b"", b"")
    assert stored_digits(conn, key) == b"15"


def test_decr_creates_with_initial(conn, key):
    assert conn.request(P.counter(P.DECREMENT, key, 3, initial=7)).counter == 7
    assert conn.request(P.counter(P.DECREMENT, key, 3)).counter == 4


def test_incr_response_cas_is_the_items_cas(conn, key):
    reply = conn.request(P.counter(P.INCREMENT, key, 1, initial=1))
    assert reply.cas != 0
    assert conn.request(P.get(key)).cas == reply.cas


@pytest.mark.parametrize("opcode", [P.INCREMENT, P.DECREMENT, P.INCREMENTQ, P.DECREMENTQ])
def test_counter_with_no_create_expiry_on_missing_key(conn, key, opcode):
    replies = conn.sync(P.counter(opcode, key, 1, initial=5, expiry=P.NO_EXPIRY_CREATE, opaque=4))
    assert replies == [error(opcode, P.KEY_NOT_FOUND, 4)]
    assert conn.request(P.get(key)).status == P.KEY_NOT_FOUND


def test_no_create_expiry_still_counts_an_existing_key(conn, key):
    conn.request(P.set_(key, b"5"))
    assert conn.request(P.counter(P.INCREMENT, key, 1, expiry=P.NO_EXPIRY_CREATE)).counter == 6


def test_incr_wraps_at_2_64(conn, key):
    conn.request(P.set_(key, str(MAX64 - 1).encode()))
    assert conn.request(P.counter(P.INCREMENT, key, 1)).counter == MAX64
    assert conn.request(P.counter(P.INCREMENT, key, 3)).counter == 2
    assert stored_digits(conn, key) == b"2"


def test_incr_by_max_delta_wraps(conn, key):
    assert conn.request(P.counter(P.INCREMENT, key, MAX64, initial=MAX64 - 1)).counter == MAX64 - 1
    assert conn.request(P.counter(P.INCREMENT, key, MAX64)).counter == MAX64 - 2


def test_decr_floors_at_zero(conn, key):
    conn.request(P.set_(key, b"10"))
    assert conn.request(P.counter(P.DECREMENT, key, 11)).counter == 0
    assert conn.request(P.counter(P.DECREMENT, key, 1)).counter == 0
    assert stored_digits(conn, key) == b"0"


def test_incr_keeps_flags_and_writes_ascii_digits(conn, key):
    conn.request(P.set_(key, b"99", flags=0x1234))
    assert conn.request(P.counter(P.INCREMENT, key, 1)).counter == 100
    reply = conn.request(P.get(key))
    assert (reply.flags, reply.value) == (0x1234, b"100")


@pytest.mark.parametrize(
    "value", [b"abc", b"12a", b"-5", b"", b"123456789012345678901234567890"], ids=repr
)
@pytest.mark.parametrize("opcode", [P.INCREMENT, P.DECREMENT])
def test_counter_on_non_numeric_value(conn, key, opcode, value):
    conn.request(P.set_(key, value))
    assert conn.request(P.counter(opcode, key, 1, opaque=6)) == error(opcode, P.NON_NUMERIC, 6)
    assert conn.request(P.get(key)).value == value


def test_incr_with_cas(conn, key):
    created = conn.request(P.counter(P.INCREMENT, key, 1, initial=1))
    bumped = conn.request(P.counter(P.INCREMENT, key, 1, cas=created.cas))
    assert (bumped.status, bumped.counter) == (P.SUCCESS, 2)
    assert conn.request(P.counter(P.INCREMENT, key, 1, cas=created.cas)) == error(
        P.INCREMENT, P.KEY_EXISTS
    )


# --- APPEND / PREPEND --------------------------------------------------------


def test_append_prepend(conn, key):
    stored = conn.request(P.set_(key, b"mid", flags=0xABCD))
    appended = conn.request(P.request(P.APPEND, key, value=b">>", opaque=1))
    assert (appended.opcode, appended.status, appended.opaque) == (P.APPEND, P.SUCCESS, 1)
    assert appended.cas not in (0, stored.cas)
    prepended = conn.request(P.request(P.PREPEND, key, value=b"<<", opaque=2))
    assert (prepended.opcode, prepended.status, prepended.opaque) == (P.PREPEND, P.SUCCESS, 2)
    assert (
        conn.sync(P.request(P.APPENDQ, key, value=b")") + P.request(P.PREPENDQ, key, value=b"("))
        == []
    )
    reply = conn.request(P.get(key))
    assert (reply.flags, reply.value) == (0xABCD, b"(<<mid>>)")


@pytest.mark.parametrize("opcode", [P.APPEND, P.PREPEND, P.APPENDQ, P.PREPENDQ])
def test_append_prepend_missing_key_not_stored(conn, key, opcode):
    assert conn.sync(P.request(opcode, key, value=b"x", opaque=8)) == [
        error(opcode, P.NOT_STORED, 8)
    ]
    assert conn.request(P.get(key)).status == P.KEY_NOT_FOUND


def test_append_with_cas(conn, key):
    stored = conn.request(P.set_(key, b"a"))
    assert conn.request(P.request(P.APPEND, key, value=b"b", cas=stored.cas + 1000)) == error(
        P.APPEND, P.KEY_EXISTS
    )
    assert conn.request(P.request(P.APPEND, key, value=b"c", cas=stored.cas)).status == P.SUCCESS
    assert conn.request(P.request(P.PREPEND, key, value=b"d", cas=stored.cas)) == error(
        P.PREPEND, P.KEY_EXISTS
    )
    assert conn.request(P.get(key)).value == b"ac"


# --- CAS ---------------------------------------------------------------------


def test_cas_values_are_unique_and_change_on_every_store(conn, key):
    seen = [conn.request(P.set_(key + b"-%d" % (i % 3), b"v")).cas for i in range(30)]
    assert 0 not in seen
    assert len(set(seen)) == len(seen)


def test_set_with_matching_cas_succeeds(conn, key):
    first = conn.request(P.set_(key, b"v1"))
    got = conn.request(P.get(key))
    second = conn.request(P.set_(key, b"v2", cas=got.cas))
    assert second.status == P.SUCCESS and second.cas not in (0, first.cas)
    assert conn.request(P.get(key)).value == b"v2"


@pytest.mark.parametrize("opcode", [P.SET, P.REPLACE])
def test_store_with_stale_cas_is_refused(conn, key, opcode):
    first = conn.request(P.set_(key, b"v1"))
    conn.request(P.set_(key, b"v2"))
    assert conn.request(P.set_(key, b"v3", opcode=opcode, cas=first.cas, opaque=3)) == error(
        opcode, P.KEY_EXISTS, 3
    )
    assert conn.request(P.get(key)).value == b"v2"


@pytest.mark.parametrize("opcode", [P.SET, P.REPLACE, P.DELETE])
def test_cas_on_missing_key_is_not_found(conn, key, opcode):
    data = (
        P.request(P.DELETE, key, cas=12345)
        if opcode == P.DELETE
        else P.set_(key, b"v", opcode=opcode, cas=12345)
    )
    assert conn.request(data) == error(opcode, P.KEY_NOT_FOUND)


def test_delete_with_cas(conn, key):
    stored = conn.request(P.set_(key, b"v"))
    assert conn.request(P.request(P.DELETE, key, cas=stored.cas + 1)) == error(
        P.DELETE, P.KEY_EXISTS
    )
    deleted = conn.request(P.request(P.DELETE, key, cas=stored.cas))
    assert deleted == P.Response(P.RESPONSE_MAGIC, P.DELETE, P.SUCCESS, 0, 0)


# --- DELETE / ADD / REPLACE ----------------------------------------------------


def test_delete(conn, key):
    assert conn.request(P.request(P.DELETE, key, opaque=1)) == error(P.DELETE, P.KEY_NOT_FOUND, 1)
    conn.request(P.set_(key, b"v"))
    assert conn.request(P.request(P.DELETE, key, opaque=2)) == P.Response(
        P.RESPONSE_MAGIC, P.DELETE, P.SUCCESS, 2, 0
    )
    assert conn.request(P.get(key)).status == P.KEY_NOT_FOUND


def test_add_only_when_absent(conn, key):
    added = conn.request(P.set_(key, b"first", opcode=P.ADD))
    assert added.status == P.SUCCESS and added.cas
    assert conn.request(P.set_(key, b"second", opcode=P.ADD, opaque=5)) == error(
        P.ADD, P.KEY_EXISTS, 5
    )
    assert conn.request(P.get(key)).value == b"first"


def test_add_over_expired_item(conn, key):
    conn.request(P.set_(key, b"gone", expiry=2_592_001))
    assert conn.request(P.set_(key, b"fresh", opcode=P.ADD)).status == P.SUCCESS
    assert conn.request(P.get(key)).value == b"fresh"


def test_replace_only_when_present(conn, key):
    assert conn.request(P.set_(key, b"x", opcode=P.REPLACE, opaque=6)) == error(
        P.REPLACE, P.KEY_NOT_FOUND, 6
    )
    conn.request(P.set_(key, b"old"))
    assert conn.request(P.set_(key, b"new", flags=4, opcode=P.REPLACE)).status == P.SUCCESS
    reply = conn.request(P.get(key))
    assert (reply.flags, reply.value) == (4, b"new")


def test_set_success_reply_shape(conn, key):
    reply = conn.request(P.set_(key, b"v", opaque=0x99))
    assert (reply.magic, reply.opcode, reply.status, reply.opaque) == (
        P.RESPONSE_MAGIC,
        P.SET,
        P.SUCCESS,
        0x99,
    )
    assert (reply.extras, reply.key, reply.value) == (b"", b"", b"")
    assert reply.cas != 0


# --- FLUSH ---------------------------------------------------------------------


def test_flush_invalidates_everything(start_server):
    server = start_server()
    with Connection(server.host, server.port) as conn:
        conn.sync(b"".join(P.set_(b"f%d" % i, b"v", opcode=P.SETQ) for i in range(20)))
        assert conn.request(P.request(P.FLUSH, opaque=7)) == P.Response(
            P.RESPONSE_MAGIC, P.FLUSH, P.SUCCESS, 7, 0
        )
        assert conn.sync(b"".join(P.get(b"f%d" % i, P.GETQ) for i in range(20))) == []
        assert conn.request(P.set_(b"f0", b"after")).status == P.SUCCESS
        assert conn.request(P.get(b"f0")).value == b"after"


def test_flush_with_delay_keeps_items_for_now(start_server):
    server = start_server()
    with Connection(server.host, server.port) as conn:
        conn.request(P.set_(b"k", b"v"))
        reply = conn.request(P.request(P.FLUSH, extras=P.expiry_extras(3600)))
        assert reply.status == P.SUCCESS
        assert conn.request(P.get(b"k")).value == b"v"

"""Quiet commands and pipelines: silence on success, errors in order, big batches."""

from __future__ import annotations

from .. import packets as P


def test_setq_is_silent_on_success(conn, key):
    assert conn.sync(P.set_(key, b"v", opcode=P.SETQ, opaque=1)) == []
    assert conn.request(P.get(key)).value == b"v"


def test_every_quiet_success_is_silent(conn, key):
    other = key + b"-2"
    batch = (
        P.set_(key, b"1", opcode=P.SETQ)
        + P.set_(other, b"x", opcode=P.ADDQ)
        + P.set_(other, b"y", opcode=P.REPLACEQ)
        + P.counter(P.INCREMENTQ, key, 5)
        + P.counter(P.DECREMENTQ, key, 2)
        + P.request(P.APPENDQ, other, value=b">")
        + P.request(P.PREPENDQ, other, value=b"<")
        + P.request(P.DELETEQ, key)
    )
    assert conn.sync(batch) == []
    assert conn.request(P.get(other)).value == b"<y>"
    assert conn.request(P.get(key)).status == P.KEY_NOT_FOUND


def test_flushq_is_silent(conn, key):
    conn.request(P.set_(key, b"v"))
    assert conn.sync(P.request(P.FLUSHQ, opaque=3)) == []
    assert conn.request(P.get(key)).status == P.KEY_NOT_FOUND


def test_quiet_errors_are_still_sent_in_order(conn, key):
    missing = key + b"-missing"
    batch = (
        P.set_(key, b"abc", opcode=P.SETQ, opaque=1)
        + P.set_(key, b"x", opcode=P.ADDQ, opaque=2)  # exists
        + P.set_(missing, b"x", opcode=P.REPLACEQ, opaque=3)  # not found
        + P.request(P.DELETEQ, missing, opaque=4)  # not found
        + P.counter(P.INCREMENTQ, key, 1, opaque=5)  # non-numeric
        + P.counter(P.DECREMENTQ, missing, 1, expiry=P.NO_EXPIRY_CREATE, opaque=6)  # not found
        + P.request(P.APPENDQ, missing, value=b"x", opaque=7)  # not stored
        + P.request(P.PREPENDQ, missing, value=b"x", opaque=8)  # not stored
        + P.set_(key, b"x", opcode=P.SETQ, cas=1, opaque=9)  # CAS mismatch (1 is long gone)
        + P.get(missing, P.GETQ, opaque=10)  # silent miss
        + P.get(key, P.GETKQ, opaque=11)  # hit
    )
    replies = conn.sync(batch)
    assert [(r.opcode, r.status, r.opaque) for r in replies] == [
        (P.ADDQ, P.KEY_EXISTS, 2),
        (P.REPLACEQ, P.KEY_NOT_FOUND, 3),
        (P.DELETEQ, P.KEY_NOT_FOUND, 4),
        (P.INCREMENTQ, P.NON_NUMERIC, 5),
        (P.DECREMENTQ, P.KEY_NOT_FOUND, 6),
        (P.APPENDQ, P.NOT_STORED, 7),
        (P.PREPENDQ, P.NOT_STORED, 8),
        (P.SETQ, P.KEY_EXISTS, 9),
        (P.GETKQ, P.SUCCESS, 11),
    ]
    for reply in replies[:-1]:
        assert reply.value == P.ERROR_TEXT[reply.status]
        assert (reply.cas, reply.extras, reply.key) == (0, b"", b"")
    assert (replies[-1].key, replies[-1].value) == (key, b"abc")


def test_pipeline_of_quiet_gets_ends_with_noop(conn, key):
    keys = [key + b"-%d" % i for i in range(6)]
    conn.sync(
        b"".join(
            P.set_(k, b"v%d" % i, flags=i, opcode=P.SETQ) for i, k in enumerate(keys) if i % 2 == 0
        )
    )
    conn.send(
        b"".join(P.get(k, P.GETKQ, opaque=100 + i) for i, k in enumerate(keys)) + P.noop(opaque=999)
    )
    replies = []
    while not replies or replies[-1].opcode != P.NOOP:
        replies.append(conn.recv())
    assert [(r.opcode, r.opaque, r.key, r.value, r.extras) for r in replies] == [
        (P.GETKQ, 100, keys[0], b"v0", b"\x00\x00\x00\x00"),
        (P.GETKQ, 102, keys[2], b"v2", b"\x00\x00\x00\x02"),
        (P.GETKQ, 104, keys[4], b"v4", b"\x00\x00\x00\x04"),
        (P.NOOP, 999, b"", b"", b""),
    ]


def test_pipeline_ending_with_loud_get(conn, key):
    conn.send(
        P.set_(key, b"a", opcode=P.SETQ)
        + P.request(P.APPENDQ, key, value=b"b")
        + P.get(key + b"-no", P.GETQ)
        + P.get(key, opaque=77)
    )
    reply = conn.recv()
    assert (reply.opcode, reply.opaque, reply.value) == (P.GET, 77, b"ab")


def test_ten_thousand_pipelined_in_one_write(conn, key):
    n = 10_000
    keys = [key + b"-%05d" % i for i in range(n)]
    sets = b"".join(
        P.set_(k, b"value-%d" % i, flags=i, opcode=P.SETQ, opaque=i) for i, k in enumerate(keys)
    )
    # Every other GETQ misses (a key never stored) and must stay silent.
    gets = b"".join(
        P.get(k if i % 2 == 0 else k + b"-absent", P.GETQ, opaque=n + i) for i, k in enumerate(keys)
    )
    replies = conn.sync(sets + gets)
    expected = [(P.GETQ, P.SUCCESS, n + i, i, b"value-%d" % i) for i in range(0, n, 2)]
    got = [(r.opcode, r.status, r.opaque, r.flags, r.value) for r in replies]
    assert len(got) == len(expected)
    assert got == expected


def test_ten_thousand_mixed_requests_answer_in_order(conn, key):
    n = 10_000
    batch = bytearray()
    expected = []
    for i in range(n):
        k = key + b"-%d" % ((i // 4) % 100)  # each run of four shares a key
        if i % 4 == 0:
            batch += P.set_(k, b"%d" % i, opcode=P.SETQ, opaque=i)
        elif i % 4 == 1:
            batch += P.get(k, P.GETK, opaque=i)
            expected.append((P.GETK, i))
        elif i % 4 == 2:
            batch += P.counter(P.INCREMENT, k, 1, opaque=i)
            expected.append((P.INCREMENT, i))
        else:
            batch += P.noop(opaque=i)
            expected.append((P.NOOP, i))
    replies = conn.sync(bytes(batch))
    assert [(r.opcode, r.opaque) for r in replies] == expected
    assert all(r.status == P.SUCCESS for r in replies)
    # SETQ stores "4j", GETK (opaque 4j+1) reads it, INCR (opaque 4j+2) makes it 4j+1.
    for r in replies:
        if r.opcode == P.GETK:
            assert r.value == b"%d" % (r.opaque - 1)
        elif r.opcode == P.INCREMENT:
            assert r.counter == r.opaque - 1

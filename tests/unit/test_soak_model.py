"""bench/soakmodel.py, the soak's judge of replies: fed operations and replies, no sockets, no clock.

Each rule has a case where a reply must be flagged as wrong next to the
cases it must accept, so a model that accepted everything would fail here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
try:
    from soakmodel import (
        EXPIRY_SLACK, MISS, NOREPLY, UNKNOWN, Arith, Delete, Get, Mode, Model, SharedKeys, Status, Store, Touch,
        Values, done, hit, number,
    )
finally:
    sys.path.remove(str(BENCH))

K = b"k1"
STORED = done(Status.STORED)


@pytest.fixture
def model() -> Model:
    return Model()


def ok(model: Model, op, reply, sent: float = 1.0, at: float | None = None) -> None:
    reason = model.check(op, reply, sent, sent if at is None else at)
    assert reason is None, reason


def wrong(model: Model, op, reply, sent: float = 1.0, at: float | None = None) -> str:
    reason = model.check(op, reply, sent, sent if at is None else at)
    assert reason is not None, f"{reply} to {op} was accepted"
    return reason


def stored(model: Model, value: bytes = b"v1", flags: int = 7, ttl: int = 0, cas: int | None = 100,
           at: float = 1.0) -> None:
    ok(model, Store(Mode.SET, K, value, flags, ttl), done(Status.STORED, cas), at)


# ---------------------------------------------------------------- reads


def test_a_key_never_stored_may_only_miss(model):
    assert "never stored" in wrong(model, Get(K), hit(b"v1", 0))
    ok(Model(), Get(K), MISS)


def test_a_hit_must_be_the_last_value_written_with_its_flags(model):
    stored(model, b"v1", flags=7)
    ok(model, Get(K), hit(b"v1", 7))
    stored(model, b"v2", flags=8)
    assert "expected b'v2'" in wrong(model, Get(K), hit(b"v1", 7))
    model = Model()
    stored(model, b"v1", flags=7)
    assert "flags 8, expected 7" in wrong(model, Get(K), hit(b"v1", 8))


def test_a_miss_is_always_legal_and_then_the_key_is_absent(model):
    stored(model)
    ok(model, Get(K), MISS)  # evicted
    assert "absent: missed" in wrong(model, Get(K), hit(b"v1", 7))


def test_a_hit_after_a_delete_is_wrong(model):
    stored(model)
    ok(model, Delete(K), done(Status.DELETED))
    assert "deleted" in wrong(model, Get(K), hit(b"v1", 7))


def test_a_hit_after_certain_expiry_is_wrong_but_not_a_moment_before(model):
    stored(model, ttl=2, at=10.0)
    ok(model, Get(K), hit(b"v1", 7), sent=10.0 + 2 + EXPIRY_SLACK - 0.01)
    assert "expired" in wrong(model, Get(K), hit(b"v1", 7), sent=10.0 + 2 + EXPIRY_SLACK)


def test_expiry_counts_from_the_reply_that_set_it(model):
    ok(model, Store(Mode.SET, K, b"v1", 0, 2), STORED, 10.0, at=15.0)  # a slow reply: the TTL may start late
    ok(model, Get(K), hit(b"v1", 0), sent=16.0)


def test_gat_and_touch_move_the_expiry(model):
    stored(model, ttl=0, at=10.0)
    ok(model, Get(K, touch=2), hit(b"v1", 7), sent=11.0)
    assert "expired" in wrong(model, Get(K), hit(b"v1", 7), sent=11.0 + 2 + EXPIRY_SLACK)
    model = Model()
    stored(model, ttl=2, at=10.0)
    ok(model, Touch(K, 0), done(Status.TOUCHED), 11.0)
    ok(model, Get(K), hit(b"v1", 7), sent=1000.0)  # no expiry any more


def test_a_touch_or_gat_of_an_absent_key_must_miss(model):
    assert "touched" in wrong(model, Touch(K, 5), done(Status.TOUCHED))
    ok(Model(), Touch(K, 5), done(Status.NOT_FOUND))
    wrong(Model(), Get(K, touch=5), hit(b"v1", 0))


def test_the_cas_of_a_hit_must_be_the_one_last_seen(model):
    stored(model, cas=100)
    ok(model, Get(K), hit(b"v1", 7, cas=100))
    ok(model, Touch(K, 50), done(Status.TOUCHED))  # a touch keeps the CAS
    assert "CAS 101, expected 100" in wrong(model, Get(K), hit(b"v1", 7, cas=101))


def test_a_cas_learned_from_a_hit_is_checked_afterwards(model):
    ok(model, Store(Mode.SET, K, b"v1", 7), STORED)  # text set: no CAS in the reply
    ok(model, Get(K), hit(b"v1", 7, cas=5))
    wrong(model, Get(K), hit(b"v1", 7, cas=6))


def test_meta_ttl_and_size_are_checked(model):
    stored(model, b"abc", ttl=0)
    ok(model, Get(K), hit(None, 7, ttl=-1, size=3))
    assert "TTL 4 on an item without expiry" in wrong(model, Get(K), hit(None, 7, ttl=-1 + 5, size=3))
    model = Model()
    stored(model, b"abc", ttl=5)
    ok(model, Get(K), hit(None, 7, ttl=5))
    assert "TTL 6, expected 0..5" in wrong(model, Get(K), hit(None, 7, ttl=6))
    model = Model()
    stored(model, b"abc")
    assert "size 4" in wrong(model, Get(K), hit(None, 7, size=4))


def test_a_reply_that_is_no_answer_to_a_get_is_wrong(model):
    stored(model)
    assert "no answer to a get" in wrong(model, Get(K), done(Status.STORED))


# ---------------------------------------------------------------- writes


def test_a_plain_set_must_be_stored(model):
    wrong(model, Store(Mode.SET, K, b"v1"), done(Status.NOT_STORED))
    ok(model, Store(Mode.SET, K, b"v1"), done(Status.OUT_OF_MEMORY))  # memcached may refuse memory


def test_add_stores_only_where_nothing_is(model):
    assert "expected stored" in wrong(Model(), Store(Mode.ADD, K, b"v1"), done(Status.NOT_STORED))
    ok(model, Store(Mode.ADD, K, b"v1"), STORED)
    ok(model, Store(Mode.ADD, K, b"v2"), done(Status.NOT_STORED))
    ok(model, Get(K), hit(b"v1", 0))
    ok(model, Store(Mode.ADD, K, b"v3"), STORED)  # the item was evicted meanwhile
    wrong(model, Get(K), hit(b"v1", 0))


def test_replace_and_append_need_an_item(model):
    wrong(Model(), Store(Mode.REPLACE, K, b"v1"), STORED)
    wrong(Model(), Store(Mode.APPEND, K, b"v1"), STORED)
    wrong(Model(), Store(Mode.PREPEND, K, b"v1"), STORED)
    ok(model, Store(Mode.APPEND, K, b"v1"), done(Status.NOT_STORED))
    ok(model, Store(Mode.REPLACE, K, b"v1"), done(Status.NOT_STORED))


def test_append_and_prepend_keep_flags_and_expiry(model):
    stored(model, b"mid", flags=9, ttl=3, at=10.0)
    ok(model, Store(Mode.APPEND, K, b"-end"), STORED, 11.0)
    ok(model, Store(Mode.PREPEND, K, b"start-"), STORED, 11.0)
    ok(model, Get(K), hit(b"start-mid-end", 9), sent=12.0)
    assert "expired" in wrong(model, Get(K), hit(b"start-mid-end", 9), sent=10.0 + 3 + EXPIRY_SLACK)
    for reply in (hit(b"start-mid-end", 0), hit(b"mid", 9), hit(b"mid-end", 9)):
        model = Model()
        stored(model, b"mid", flags=9, ttl=3, at=10.0)
        ok(model, Store(Mode.APPEND, K, b"-end"), STORED, 11.0)
        ok(model, Store(Mode.PREPEND, K, b"start-"), STORED, 11.0)
        wrong(model, Get(K), reply, sent=12.0)


def test_a_replace_that_finds_nothing_leaves_nothing(model):
    stored(model)
    ok(model, Store(Mode.REPLACE, K, b"v2"), done(Status.NOT_STORED))
    wrong(model, Get(K), hit(b"v1", 7))


def test_a_cas_that_should_match_may_only_fail_by_eviction(model):
    stored(model, cas=100)
    op = Store(Mode.SET, K, b"v2", 1, 0, cas=100)
    assert "expected stored or not found" in wrong(model, op, done(Status.EXISTS))
    model = Model()
    stored(model, cas=100)
    ok(model, op, done(Status.NOT_FOUND))
    model = Model()
    stored(model, cas=100)
    ok(model, op, done(Status.STORED, 101))
    ok(model, Get(K), hit(b"v2", 1, cas=101))


def test_a_stale_cas_must_not_store(model):
    stored(model, cas=100)
    assert "expected exists or not found" in wrong(model, Store(Mode.SET, K, b"v2", cas=99), done(Status.STORED))
    model = Model()
    stored(model, cas=100)
    ok(model, Store(Mode.SET, K, b"v2", cas=99), done(Status.EXISTS))
    ok(model, Get(K), hit(b"v1", 7))


def test_a_cas_on_an_absent_key_is_not_found(model):
    wrong(model, Store(Mode.SET, K, b"v2", cas=5), done(Status.EXISTS))
    ok(model, Store(Mode.SET, K, b"v2", cas=5), done(Status.NOT_FOUND))


def test_delete_with_cas(model):
    stored(model, cas=100)
    wrong(model, Delete(K, cas=99), done(Status.DELETED))
    model = Model()
    stored(model, cas=100)
    ok(model, Delete(K, cas=99), done(Status.EXISTS))
    ok(model, Delete(K, cas=100), done(Status.DELETED))
    assert "deleted" in wrong(model, Delete(K), done(Status.DELETED))


# ---------------------------------------------------------------- counters


def test_incr_and_decr_give_the_exact_number(model):
    stored(model, b"10", flags=3)
    assert "expected number 15" in wrong(model, Arith(K, 5), number(16))
    model = Model()
    stored(model, b"10", flags=3)
    ok(model, Arith(K, 5), number(15, cas=101))
    ok(model, Arith(K, 20, incr=False), number(0))  # decr stops at 0
    ok(model, Arith(K, (1 << 64) - 3), number((1 << 64) - 3))
    ok(model, Arith(K, 5), number(2))  # incr wraps at 2**64
    ok(model, Get(K), hit(b"2", 3))


def test_a_counter_shrunk_in_place_may_show_trailing_spaces(model):
    stored(model, b"100")
    ok(model, Arith(K, 1, incr=False), number(99))
    ok(model, Get(K), hit(b"99 ", 7))
    ok(model, Get(K), hit(b"99 ", 7))
    wrong(model, Get(K), hit(b"99  ", 7))  # longer than it ever was
    model = Model()
    stored(model, b"100")
    ok(model, Arith(K, 1, incr=False), number(99))
    wrong(model, Get(K), hit(b"98 ", 7))


def test_incr_of_a_missing_counter_creates_only_when_asked(model):
    wrong(Model(), Arith(K, 5), number(5))
    assert "expected number 42" in wrong(Model(), Arith(K, 5, initial=42), done(Status.NOT_FOUND))
    assert "expected number 42" in wrong(Model(), Arith(K, 5, initial=42), number(47))
    ok(model, Arith(K, 5), done(Status.NOT_FOUND))
    ok(model, Arith(K, 5, initial=42), number(42))
    ok(model, Get(K), hit(b"42", 0))


def test_incr_of_a_value_that_is_not_a_number(model):
    stored(model, b"k1#3:abc")
    ok(model, Arith(K, 1), done(Status.NON_NUMERIC))
    ok(model, Get(K), hit(b"k1#3:abc", 7))
    model = Model()
    stored(model, b"k1#3:abc")
    wrong(model, Arith(K, 1), number(1))
    wrong(Model(), Arith(K, 1), done(Status.NON_NUMERIC))  # nothing stored: not found, not non-numeric


def test_a_quiet_incr_is_a_success_of_either_number(model):
    stored(model, b"10")
    ok(model, Arith(K, 5, initial=3), number(None))  # 15 if the counter was there, 3 if evicted
    ok(model, Get(K), hit(b"3", 0))
    wrong(model, Get(K), hit(b"15", 7))


# ---------------------------------------------------------------- open outcomes, flush, unknown


def test_noreply_keeps_every_possible_outcome_until_a_reply_settles_it(model):
    stored(model, b"old")
    ok(model, Store(Mode.SET, K, b"new", 7), NOREPLY)
    assert len(model.state(K)) == 2
    ok(model, Get(K), hit(b"old", 7))  # the set may have been refused for memory
    wrong(model, Get(K), hit(b"new", 7))
    model = Model()
    stored(model, b"old")
    ok(model, Store(Mode.SET, K, b"new", 7), NOREPLY)
    ok(model, Get(K), hit(b"new", 7))
    wrong(model, Get(K), hit(b"old", 7))


def test_a_noreply_delete_leaves_nothing_either_way(model):
    stored(model)
    ok(model, Delete(K), NOREPLY)
    wrong(model, Get(K), hit(b"v1", 7))


def test_a_flush_kills_what_was_stored_before_it_was_sent(model):
    stored(model, at=1.0)
    model.flush(sent=2.0, done_at=2.5)
    ok(model, Get(K), hit(b"v1", 7), sent=2.4)  # sent before the flush was answered: may come first
    model = Model()
    stored(model, at=1.0)
    model.flush(sent=2.0, done_at=2.5)
    assert "expired or flushed" in wrong(model, Get(K), hit(b"v1", 7), sent=2.6)
    model = Model()
    stored(model, at=2.2)  # answered after the flush was sent: may have come after it
    model.flush(sent=2.0, done_at=2.5)
    ok(model, Get(K), hit(b"v1", 7), sent=3.0)


def test_one_wrong_reply_is_reported_once(model):
    stored(model)
    wrong(model, Get(K), hit(b"garbage", 7))
    assert model.state(K) == (UNKNOWN,)
    ok(model, Get(K), hit(b"other", 1))
    ok(model, Store(Mode.SET, K, b"v3", 1), STORED)
    wrong(model, Get(K), hit(b"other", 1))  # a set brings it back under the model


def test_a_forgotten_key_accepts_anything(model):
    stored(model)
    model.forget(K)
    ok(model, Get(K), hit(b"late write", 3))


def test_an_error_reply_is_wrong(model):
    stored(model)
    assert "error" in wrong(model, Store(Mode.SET, K, b"v2"), done(Status.ERROR))


def test_item_reports_only_a_single_known_item(model):
    assert model.item(K) is None
    stored(model, cas=5)
    assert model.item(K).cas == 5
    ok(model, Store(Mode.SET, K, b"v2"), NOREPLY)
    assert model.item(K) is None


# ---------------------------------------------------------------- shared keys and values


def test_shared_versions_must_have_been_written_and_not_refused():
    shared = SharedKeys()
    v1 = shared.new_version(K)
    v2 = shared.new_version(K)
    floor = shared.read_sent(K)
    assert shared.read_done(K, floor, v1) is None  # in flight: may be visible
    shared.write_done(K, v2, stored=False)
    assert "never written, or its write was refused" in shared.read_done(K, floor, v2)
    assert "never written" in shared.read_done(K, floor, 99)
    assert shared.read_done(K, floor, None) is None  # a miss is always legal


def test_shared_versions_never_go_back():
    shared = SharedKeys()
    v1, v2 = shared.new_version(K), shared.new_version(K)
    shared.write_done(K, v1, stored=True)
    shared.write_done(K, v2, stored=True)
    floor = shared.read_sent(K)
    assert "after version" in shared.read_done(K, floor, v1)
    assert shared.read_done(K, floor, v2) is None


def test_a_read_sent_before_a_newer_version_was_seen_may_still_see_the_older():
    shared = SharedKeys()
    v1, v2 = shared.new_version(K), shared.new_version(K)
    early = shared.read_sent(K)
    assert shared.read_done(K, shared.read_sent(K), v2) is None
    assert shared.read_done(K, early, v1) is None
    assert shared.read_done(K, shared.read_sent(K), v1) is not None


def test_a_shared_delete_retires_the_version_it_deleted():
    shared = SharedKeys()
    v1 = shared.new_version(K)
    shared.write_done(K, v1, stored=True)
    shared.delete_done(K, v1, deleted=True)
    assert shared.read_done(K, shared.read_sent(K), v1) is not None


def test_shared_values_rebuild_from_their_header():
    values = Values(seed=3)
    value, flags = values.shared(K, 42)
    assert values.shared_version(K, value, flags) == 42
    assert "foreign" in values.shared_version(b"k2", value, flags)
    assert "corrupted" in values.shared_version(K, value[:-1] + bytes([value[-1] ^ 1]), flags)
    assert "corrupted" in values.shared_version(K, value[:-1], flags)
    assert "flags" in values.shared_version(K, value, flags + 1)
    assert "foreign or torn" in values.shared_version(K, b"junk", flags)


def test_owned_values_are_never_numbers_and_never_equal_across_keys_or_writes():
    values = Values(seed=3)
    a, b, c = values.owned(b"k1", 1, 500), values.owned(b"k2", 1, 500), values.owned(b"k1", 2, 500)
    assert len({a, b, c}) == 3
    assert len(a) == 500 and not a[:1].isdigit()
    assert len(values.owned(b"k1", 3, 500 * 1024)) == 500 * 1024
    assert values.owned(b"k1", 4, 10).startswith(b"k1#4:")

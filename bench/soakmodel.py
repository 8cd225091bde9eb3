"""What a memcached may legally answer: the soak benchmark's reference model.

What lives here, with no sockets and no clock of its own (every call is
given the times it needs, so the unit tests can drive it):

- ``Model``: the cache as seen by clients that each own their keys. A key's
  state is a short tuple of *candidates* -- ``Item``s (an exact value, flags,
  TTL, CAS when known), ``Absent`` (certainly not in the cache) or
  ``UNKNOWN`` (a reply was already wrong, or a write's fate was lost with its
  connection). ``check(op, reply, sent, done)`` says whether ``reply`` is a
  legal answer to ``op`` for at least one candidate, and keeps only the
  successors of those that allow it. Three rules make it exact without being
  clever about memory:
    * any item may vanish at any time (eviction), so a miss is always legal,
      and so is "not found"/"not stored" wherever a missing item explains it;
    * a TTL'd item is certainly gone ``EXPIRY_SLACK`` seconds after its TTL,
      counted from the reply that set it (memcached's clock ticks in whole
      seconds and lags), and a hit on a request sent after that is wrong;
    * a flush kills every item whose write was confirmed before the flush
      was sent, from the moment its reply arrived.
  Several candidates arise only where the wire leaves the outcome open:
  text ``noreply`` (an error is silent), or a quiet incr (the new number is
  not sent); the next reply that tells them apart prunes them.
- ``SharedKeys``: keys every client reads and writes. Writes are
  compare-and-swap chains (``add`` on a miss, CAS on a hit) with versions
  from one counter, so the versions a key holds only ever grow; a read must
  return a version that was written and not refused, no older than any the
  key was known to hold when the read was sent.
- ``Values``: deterministic, self-describing values (key and serial in the
  first bytes, then a slice of a seeded random pool), so a value that belongs
  to another key or another write can never compare equal, and a shared
  value can be rebuilt from its header and compared whole.

What does not live here: the wire formats (soakwire.py) and anything that
opens a socket, picks a workload or keeps time (soak.py).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from typing import Union

INF = float("inf")
# memcached keeps time in whole seconds on a clock that ticks once a second:
# an item with TTL T set at t can live until t + T + 1 and a bit more on a
# loaded machine. Hits are accepted up to T + EXPIRY_SLACK after the reply.
EXPIRY_SLACK = 2.5
MAX_U64 = (1 << 64) - 1


class Status(enum.Enum):
    HIT = "hit"
    MISS = "miss"
    STORED = "stored"
    NOT_STORED = "not stored"
    EXISTS = "exists"
    NOT_FOUND = "not found"
    DELETED = "deleted"
    TOUCHED = "touched"
    NUMBER = "number"
    NON_NUMERIC = "non-numeric"
    OUT_OF_MEMORY = "out of memory"
    NOREPLY = "no reply (noreply)"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Reply:
    """A protocol-neutral reply. ``number`` None on NUMBER: a success whose value was not sent."""

    status: Status
    value: bytes | None = None
    flags: int | None = None
    cas: int | None = None
    ttl: int | None = None
    size: int | None = None
    number: int | None = None
    text: str = ""

    def __str__(self) -> str:
        parts = [self.status.value]
        if self.value is not None:
            parts.append(f"value {preview(self.value)}")
        for name in ("flags", "cas", "ttl", "size", "number"):
            if getattr(self, name) is not None:
                parts.append(f"{name} {getattr(self, name)}")
        if self.text:
            parts.append(repr(self.text))
        return ", ".join(parts)


MISS = Reply(Status.MISS)
NOREPLY = Reply(Status.NOREPLY)


def hit(value: bytes | None, flags: int | None = None, cas: int | None = None, ttl: int | None = None,
        size: int | None = None) -> Reply:
    return Reply(Status.HIT, value, flags, cas, ttl, size)


def done(status: Status, cas: int | None = None) -> Reply:
    return Reply(status, cas=cas)


def number(value: int | None, cas: int | None = None) -> Reply:
    return Reply(Status.NUMBER, number=value, cas=cas)


def preview(value: bytes, width: int = 32) -> str:
    if len(value) <= width:
        return repr(value)
    return f"{value[:width]!r}...({len(value)} B)"


# ---------------------------------------------------------------- operations


class Mode(enum.Enum):
    SET = "set"
    ADD = "add"
    REPLACE = "replace"
    APPEND = "append"
    PREPEND = "prepend"


@dataclass(frozen=True, slots=True)
class Get:
    """get/gets/getk/getq..., and with ``touch`` (a new TTL) gat/gats/mg T."""

    key: bytes
    touch: int | None = None


@dataclass(frozen=True, slots=True)
class Store:
    """A storage command; a non-zero ``cas`` makes a set or replace a compare-and-swap."""

    mode: Mode
    key: bytes
    value: bytes
    flags: int = 0
    ttl: int = 0
    cas: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    cas: int = 0


@dataclass(frozen=True, slots=True)
class Arith:
    """incr/decr by ``delta``; ``initial`` not None: create the counter (with ``ttl``) on a miss."""

    key: bytes
    delta: int
    incr: bool = True
    initial: int | None = None
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class Touch:
    key: bytes
    ttl: int


Op = Union[Get, Store, Delete, Arith, Touch]


def describe(op: Op) -> str:
    key = op.key.decode(errors="replace")
    if isinstance(op, Get):
        return f"get {key}" if op.touch is None else f"gat {key} ttl {op.touch}"
    if isinstance(op, Store):
        cas = f" cas {op.cas}" if op.cas else ""
        return f"{op.mode.value} {key} {preview(op.value)} flags {op.flags} ttl {op.ttl}{cas}"
    if isinstance(op, Delete):
        return f"delete {key}" + (f" cas {op.cas}" if op.cas else "")
    if isinstance(op, Arith):
        create = "" if op.initial is None else f" initial {op.initial} ttl {op.ttl}"
        return f"{'incr' if op.incr else 'decr'} {key} {op.delta}{create}"
    return f"touch {key} ttl {op.ttl}"


# ---------------------------------------------------------------- key states


@dataclass(frozen=True, slots=True)
class Absent:
    """Certainly not in the cache; ``why`` makes a wrong hit's report readable."""

    why: str


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
NEVER_STORED = Absent("never stored")


@dataclass(frozen=True, slots=True)
class Item:
    """An item that may be in the cache (or may have been evicted).

    ``death``: from this time on it is certainly gone (expiry or flush).
    ``stored``: by this time the write that made it was certainly applied.
    ``width``: memcached's incr/decr rewrite a counter in place, padding a
    shorter number with spaces to the old length; a hit may show the digits
    followed by spaces up to this many bytes in all.
    ``ttl``: 0 for no expiry, None when not known.
    """

    value: bytes
    flags: int
    ttl: int | None
    death: float
    stored: float
    cas: int | None = None
    width: int = 0

    def shows(self, value: bytes) -> bool:
        if value == self.value:
            return True
        return len(self.value) < len(value) <= self.width and value.rstrip(b" ") == self.value


State = Union[Item, Absent, _Unknown]


def death_after(ttl: int | None, now: float) -> float:
    return now + ttl + EXPIRY_SLACK if ttl else INF


def counter_value(value: bytes) -> int | None | bool:
    """The number a counter holds; None if memcached calls it non-numeric; True if unsure."""
    digits = value.rstrip(b" ")
    if digits.isdigit() and len(digits) <= 20:
        number = int(digits)
        return number if number <= MAX_U64 else None
    if not value or value[:1].isdigit() or value[:1].isspace():
        return True  # empty, or a leading number with junk: not worth modelling
    return None


Outcome = tuple[Status, Union[int, None], State]  # a legal reply status, its number (NUMBER), what follows


class Model:
    """The owned keys of every client; see the module docstring."""

    def __init__(self) -> None:
        self.keys: dict[bytes, tuple[State, ...]] = {}

    def state(self, key: bytes) -> tuple[State, ...]:
        return self.keys.get(key, (NEVER_STORED,))

    def item(self, key: bytes) -> Item | None:
        """The key's item when the model knows exactly one, else None."""
        state = self.state(key)
        return state[0] if len(state) == 1 and isinstance(state[0], Item) else None

    def forget(self, key: bytes) -> None:
        """A write to ``key`` was lost with its connection: it may still land at any time."""
        self.keys[key] = (UNKNOWN,)

    def check(self, op: Op, reply: Reply, sent: float, done_at: float) -> str | None:
        """None if ``reply`` is a legal answer to ``op`` sent at ``sent`` and answered by ``done_at``.

        Otherwise a description of what is wrong; the key's state then
        becomes UNKNOWN, so one wrong reply is reported once.
        """
        after: list[State] = []
        reasons: list[str] = []
        for state in self.state(op.key):
            if isinstance(state, Item) and state.death <= sent:
                state = Absent("expired or flushed")
            if state is UNKNOWN:
                after.append(self._unknown_after(op, reply, done_at))
            elif isinstance(op, Get):
                found = self._get(op, state, reply, done_at)
                (after.append if not isinstance(found, str) else reasons.append)(found)
            else:
                found_all = self._match(self._outcomes(op, state, reply.cas, done_at), reply)
                if found_all:
                    after.extend(found_all)
                else:
                    reasons.append(self._unexpected(op, state, reply, done_at))
        if after:
            self.keys[op.key] = tuple(dict.fromkeys(after))
            return None
        self.keys[op.key] = (UNKNOWN,)
        return f"{describe(op)}: {'; or '.join(dict.fromkeys(reasons))}"

    def flush(self, sent: float, done_at: float) -> None:
        """A flush sent at ``sent`` was acknowledged at ``done_at``."""
        for key, states in self.keys.items():
            if any(isinstance(s, Item) and s.stored < sent and s.death > done_at for s in states):
                self.keys[key] = tuple(
                    replace(s, death=done_at) if isinstance(s, Item) and s.stored < sent and s.death > done_at
                    else s
                    for s in states
                )

    # -- reads

    @staticmethod
    def _get(op: Get, state: State, reply: Reply, done_at: float) -> State | str:
        if reply.status is Status.MISS:
            return Absent("missed")
        if reply.status is not Status.HIT:
            return f"{reply} is no answer to a get"
        if isinstance(state, Absent):
            return f"hit ({reply}) on a key that is absent: {state.why}"
        item = state
        if op.touch is not None:
            item = replace(item, ttl=op.touch, death=death_after(op.touch, done_at))
        if reply.value is not None and not item.shows(reply.value):
            return f"value {preview(reply.value)}, expected {preview(item.value)}"
        if reply.size is not None and not len(item.value) <= reply.size <= max(item.width, len(item.value)):
            return f"size {reply.size}, expected {len(item.value)}"
        if reply.flags is not None and reply.flags != item.flags:
            return f"flags {reply.flags}, expected {item.flags}"
        if reply.cas is not None and item.cas is not None and reply.cas != item.cas:
            return f"CAS {reply.cas}, expected {item.cas} (unchanged since it was last seen)"
        if reply.ttl is not None and item.ttl is not None:
            if item.ttl == 0 and reply.ttl != -1:
                return f"TTL {reply.ttl} on an item without expiry (expected -1)"
            if item.ttl and not 0 <= reply.ttl <= item.ttl:
                return f"TTL {reply.ttl}, expected 0..{item.ttl}"
        if reply.cas is not None and item.cas is None:
            item = replace(item, cas=reply.cas)
        if reply.value is not None and len(reply.value) != len(item.value):
            item = replace(item, width=len(reply.value))
        return item

    # -- everything else: the outcomes each state allows

    def _outcomes(self, op: Op, state: Item | Absent, cas: int | None, now: float) -> list[Outcome]:
        gone = Absent("missed")
        oom: Outcome = (Status.OUT_OF_MEMORY, None, state)  # memcached may refuse any allocation
        present = isinstance(state, Item)
        if isinstance(op, Store):
            new = Item(op.value, op.flags, op.ttl, death_after(op.ttl, now), now, cas, len(op.value))
            if op.cas:
                if not present:
                    return [(Status.NOT_FOUND, None, state), oom]
                if state.cas is None:
                    return [(Status.STORED, None, new), (Status.EXISTS, None, state),
                            (Status.NOT_FOUND, None, gone), oom]
                if op.cas == state.cas:
                    return [(Status.STORED, None, new), (Status.NOT_FOUND, None, gone), oom]
                return [(Status.EXISTS, None, state), (Status.NOT_FOUND, None, gone), oom]
            if op.mode is Mode.SET:
                return [(Status.STORED, None, new), oom]
            if op.mode is Mode.ADD:
                if not present:
                    return [(Status.STORED, None, new), oom]
                return [(Status.STORED, None, new), (Status.NOT_STORED, None, state), oom]
            if not present:
                return [(Status.NOT_STORED, None, state), oom]
            if op.mode is Mode.REPLACE:
                return [(Status.STORED, None, new), (Status.NOT_STORED, None, gone), oom]
            if state.width > len(state.value):  # padded counter: the stored bytes are not known exactly
                joined: State = UNKNOWN
            else:
                data = state.value + op.value if op.mode is Mode.APPEND else op.value + state.value
                joined = Item(data, state.flags, state.ttl, state.death, now, cas, len(data))
            return [(Status.STORED, None, joined), (Status.NOT_STORED, None, gone), oom]
        if isinstance(op, Delete):
            if not present:
                return [(Status.NOT_FOUND, None, state)]
            deleted = Absent("deleted")
            if op.cas and state.cas is not None and op.cas != state.cas:
                return [(Status.EXISTS, None, state), (Status.NOT_FOUND, None, gone)]
            if op.cas and state.cas is None:
                return [(Status.DELETED, None, deleted), (Status.EXISTS, None, state), (Status.NOT_FOUND, None, gone)]
            return [(Status.DELETED, None, deleted), (Status.NOT_FOUND, None, gone)]
        if isinstance(op, Arith):
            if op.initial is None:
                missing: Outcome = (Status.NOT_FOUND, None, gone if present else state)
            else:
                created = Item(b"%d" % op.initial, 0, op.ttl, death_after(op.ttl, now), now, cas,
                               len(b"%d" % op.initial))
                missing = (Status.NUMBER, op.initial, created)
            if not present:
                return [missing, oom]
            current = counter_value(state.value)
            if current is None:
                return [(Status.NON_NUMERIC, None, state), missing, oom]
            if current is True:
                return [(Status.NON_NUMERIC, None, state), (Status.NUMBER, None, UNKNOWN), missing, oom]
            result = (current + op.delta) & MAX_U64 if op.incr else max(current - op.delta, 0)
            digits = b"%d" % result
            counted = Item(digits, state.flags, state.ttl, state.death, now, cas, max(state.width, len(digits)))
            return [(Status.NUMBER, result, counted), missing, oom]
        if not present:
            return [(Status.NOT_FOUND, None, state)]
        touched = replace(state, ttl=op.ttl, death=death_after(op.ttl, now))
        return [(Status.TOUCHED, None, touched), (Status.NOT_FOUND, None, gone)]

    @staticmethod
    def _match(outcomes: list[Outcome], reply: Reply) -> list[State]:
        if reply.status is Status.NOREPLY:
            return [state for _, _, state in outcomes]
        return [
            state
            for status, value, state in outcomes
            if status is reply.status and (reply.number is None or value is None or value == reply.number)
        ]

    def _unexpected(self, op: Op, state: Item | Absent, reply: Reply, now: float) -> str:
        legal = []
        for status, value, _ in self._outcomes(op, state, reply.cas, now):
            if status is not Status.OUT_OF_MEMORY:
                legal.append(status.value if value is None else f"{status.value} {value}")
        where = state.why if isinstance(state, Absent) else f"item {preview(state.value)}"
        return f"got {reply}, expected {' or '.join(legal)} ({where})"

    @staticmethod
    def _unknown_after(op: Op, reply: Reply, now: float) -> State:
        if reply.status in (Status.MISS, Status.DELETED) or isinstance(op, Delete):
            return Absent("missed")
        if isinstance(op, Store) and op.mode is Mode.SET and reply.status is Status.STORED:
            return Item(op.value, op.flags, op.ttl, death_after(op.ttl, now), now, reply.cas, len(op.value))
        return UNKNOWN


# ---------------------------------------------------------------- shared keys


class SharedKeys:
    """Keys every client may write; see the module docstring for why versions only grow."""

    def __init__(self) -> None:
        self.version = 0
        self.floor: dict[bytes, int] = {}
        self.written: dict[bytes, set[int]] = {}

    def new_version(self, key: bytes) -> int:
        """A fresh version for a write about to be sent (it may be seen from now on)."""
        self.version += 1
        self.written.setdefault(key, set()).add(self.version)
        return self.version

    def write_done(self, key: bytes, version: int, stored: bool) -> None:
        if stored:
            self.floor[key] = max(self.floor.get(key, 0), version)
        else:
            self.written[key].discard(version)

    def delete_done(self, key: bytes, version: int, deleted: bool) -> None:
        """A delete that carried the CAS of ``version`` succeeded: nothing up to it may show again."""
        if deleted:
            self.floor[key] = max(self.floor.get(key, 0), version + 1)

    def read_sent(self, key: bytes) -> int:
        """What any hit on a read sent now must at least hold; give it back to ``read_done``."""
        return self.floor.get(key, 0)

    def read_done(self, key: bytes, floor: int, version: int | None) -> str | None:
        """Check a read's hit of ``version`` (None: a miss); None when legal."""
        if version is None:
            return None
        if version not in self.written.get(key, ()):
            return f"shared {key.decode()}: version {version} was never written, or its write was refused"
        if version < floor:
            return f"shared {key.decode()}: version {version} after version {floor} was seen or stored"
        self.floor[key] = max(self.floor.get(key, 0), version)
        return None


# ---------------------------------------------------------------- values


class Values:
    """Deterministic values that say whose they are."""

    POOL = 1 << 20

    def __init__(self, seed: int) -> None:
        self.pool = random.Random(seed).randbytes(self.POOL)

    def _fill(self, head: bytes, serial: int, size: int) -> bytes:
        body = max(size - len(head), 0)
        start = (serial * 40503) % (self.POOL - body + 1)
        return head + self.pool[start : start + body]

    def owned(self, key: bytes, serial: int, size: int) -> bytes:
        """Write number ``serial`` of ``key``: starts with the key, so never numeric."""
        return self._fill(b"%s#%d:" % (key, serial), serial, size)

    @staticmethod
    def shared_size(version: int) -> int:
        return 10 + (version * 2654435761) % 4000

    def shared(self, key: bytes, version: int) -> tuple[bytes, int]:
        """The value and flags of ``version`` of a shared key."""
        return self._fill(b"%s|%d|" % (key, version), version, self.shared_size(version)), version & 0xFFFF

    def shared_version(self, key: bytes, value: bytes, flags: int | None) -> int | str:
        """The version a shared key's value holds, or why it cannot be one."""
        fields = value.split(b"|", 2)
        if len(fields) != 3 or fields[0] != key or not fields[1].isdigit():
            return f"shared {key.decode()}: foreign or torn value {preview(value)}"
        version = int(fields[1])
        expected, expected_flags = self.shared(key, version)
        if value != expected:
            return f"shared {key.decode()}: version {version} corrupted: {preview(value)}"
        if flags is not None and flags != expected_flags:
            return f"shared {key.decode()}: version {version} with flags {flags}, expected {expected_flags}"
        return version

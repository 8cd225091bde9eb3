"""Hot keys: the keys clients ask for most, tracked in bounded memory (``--hot-keys N``).

What lives here: ``HotKeys``, a Space-Saving sketch (Metwally, Agrawal and
El Abbadi, 2005) over a sample of the gets and sets, and its renderings:
the ``stats hotkeys`` group (``stat_pairs``) and the label text of a key
(``escape``). What does not: where the requests come from (the command
layer calls ``saw_get``, ``saw_gets`` and ``saw_set``) or the Prometheus
metrics built from ``top`` (``metrics``).

The sketch keeps at most ``counters`` keys, each with a count, whatever
the number of distinct keys: a key not tracked takes the place of the one
with the lowest count and inherits that count (its ``error``), so a count
never undercounts and overcounts by at most ``error``, and every key seen
in more than 1/``counters`` of the samples is tracked. The lowest count is
found with a min-heap whose entries may be stale (a hit does not touch the
heap; a stale entry is refreshed when it comes to the top), so a sample
costs a dict lookup, and a new key O(log counters).

Sampling keeps the cost per request small: one request in ``rate`` on
average is counted, with a weight of ``rate``, at random intervals (odd
numbers from 1 to 2 x ``rate`` - 1, so a client cycling through a few keys
is not seen as hitting one of them). A request not sampled costs a method
call, a decrement and a comparison.
"""

from __future__ import annotations

import heapq
import random
import string
from urllib.parse import quote

SAMPLE_RATE = 16  # one request in this many is counted, on average
COUNTERS_PER_KEY = 8  # keys tracked for each key reported
MIN_COUNTERS = 64
MAX_HOT_KEYS = 1000  # the most --hot-keys may ask for

# A key as `stats` and the metrics show it: the printable ASCII bytes but
# "%" as they are, every other byte (space, control, non-ASCII) as %XX, so
# a value never holds a space or a line break.
_SAFE = "".join(c for c in string.punctuation if c != "%")
# Prometheus label values past this length are cut (with "...").
MAX_LABEL = 256

_GETS, _SETS = 2, 3  # positions in an entry: [count, error, gets, sets]


def escape(key: bytes) -> str:
    """The key as text without spaces or control characters (%XX for those bytes, and %)."""
    return quote(key, safe=_SAFE)


class HotKeys:
    """The most requested keys, estimated from a sample of the gets and sets."""

    __slots__ = (
        "capacity",
        "counters",
        "rate",
        "sampled",
        "_bits",
        "_countdown",
        "_entries",
        "_heap",
        "_rng",
    )

    def __init__(
        self,
        capacity: int,
        rate: int = SAMPLE_RATE,
        counters: int | None = None,
        rng: random.Random | None = None,
    ):
        if rate < 1 or rate & (rate - 1):
            raise ValueError(f"the sample rate must be a power of 2, not {rate}")
        self.capacity = capacity  # keys reported
        self.counters = counters or max(COUNTERS_PER_KEY * capacity, MIN_COUNTERS)
        self.rate = rate
        self._bits = rate.bit_length() - 1
        self.sampled = 0  # requests counted
        self._rng = rng or random.Random()
        # key -> [count, error, gets, sets]; counts are in requests (samples x rate).
        self._entries: dict[bytes, list[int]] = {}
        # (count, key) for every tracked key; a count may be lower than the
        # key's current one (stale), never higher.
        self._heap: list[tuple[int, bytes]] = []
        self._countdown = self._gap()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def requests(self) -> int:
        """The gets and sets seen, as estimated from the sample."""
        return self.sampled * self.rate

    def saw_get(self, key: bytes) -> None:
        self._countdown -= 1
        if not self._countdown:
            self._sample(key, _GETS)

    def saw_set(self, key: bytes) -> None:
        self._countdown -= 1
        if not self._countdown:
            self._sample(key, _SETS)

    def saw_gets(self, keys: list[bytes]) -> None:
        """A multi-get: each key is a request, at the cost of one call."""
        index = self._countdown - 1
        count = len(keys)
        if index >= count:
            self._countdown -= count
            return
        while index < count:
            self._sample(keys[index], _GETS)  # draws the next gap, into _countdown
            index += self._countdown
        self._countdown = index - count + 1

    def _gap(self) -> int:
        """Requests until the next sample: an odd number from 1 to 2 x rate - 1, each
        as likely (their mean is rate). getrandbits, not randrange: a tenth of the cost."""
        return self._rng.getrandbits(self._bits) << 1 | 1

    def _sample(self, key: bytes, kind: int) -> None:
        self._countdown = self._gap()
        self.sampled += 1
        weight = self.rate
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            entry[0] += weight
            entry[kind] += weight
            return
        entry = [weight, 0, 0, 0]
        entry[kind] = weight
        heap = self._heap
        if len(entries) < self.counters:
            entries[key] = entry
            heapq.heappush(heap, (weight, key))
            return
        # Space-Saving: the new key takes the place of the lowest count.
        while True:
            count, victim = heap[0]
            current = entries[victim][0]
            if current == count:
                break
            heapq.heapreplace(heap, (current, victim))  # stale: refreshed, look again
        del entries[victim]
        entry[0] += count
        entry[1] = count
        entries[key] = entry
        heapq.heapreplace(heap, (entry[0], key))

    def top(self, n: int | None = None) -> list[tuple[bytes, int, int, int, int]]:
        """The ``n`` (default ``capacity``) hottest keys, hottest first:
        (key, estimated requests, overcount at most, gets, sets), counts in requests."""
        n = self.capacity if n is None else n
        ranked = heapq.nlargest(n, self._entries.items(), key=lambda item: item[1][0])
        return [(key, count, error, gets, sets) for key, (count, error, gets, sets) in ranked]

    def share(self, count: int) -> float:
        """A count's share of all the gets and sets seen, in percent."""
        return 100.0 * count / self.requests if self.sampled else 0.0


def stat_pairs(hot: HotKeys | None) -> list[tuple[str, str]]:
    """The ``stats hotkeys`` group: for each rank from 1, hottest first,

        hotkey:<rank>:key       the key (escaped: see ``escape``)
        hotkey:<rank>:estimate  requests (gets + sets) for it, estimated
        hotkey:<rank>:gets      of which gets, as sampled
        hotkey:<rank>:sets      of which sets, as sampled
        hotkey:<rank>:percent   its share of all gets and sets, in percent

    then ``hotkeys:capacity`` (--hot-keys; 0 when off, and nothing else
    follows), ``hotkeys:sample_rate`` and ``hotkeys:requests`` (the gets and
    sets seen, estimated).
    """
    if hot is None:
        return [("hotkeys:capacity", "0")]
    pairs = []
    for rank, (key, count, _, gets, sets) in enumerate(hot.top(), 1):
        prefix = f"hotkey:{rank}:"
        pairs += [
            (prefix + "key", escape(key)),
            (prefix + "estimate", str(count)),
            (prefix + "gets", str(gets)),
            (prefix + "sets", str(sets)),
            (prefix + "percent", f"{hot.share(count):.2f}"),
        ]
    pairs += [
        ("hotkeys:capacity", str(hot.capacity)),
        ("hotkeys:sample_rate", str(hot.rate)),
        ("hotkeys:requests", str(hot.requests)),
    ]
    return pairs


def label(key: bytes) -> str:
    """A key as a Prometheus label value: escaped, and cut past MAX_LABEL characters
    (never inside a %XX)."""
    text = escape(key)
    if len(text) <= MAX_LABEL:
        return text
    cut = MAX_LABEL - 3
    while "%" in text[cut - 2 : cut]:
        cut -= 1
    return text[:cut] + "..."

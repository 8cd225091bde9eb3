"""What `cache_memlimit` costs other clients while it evicts, in-process.

`python bench/memlimit.py [--items N] [--value-size B] [--keep F]`

What lives here: a `Server` (never started: no sockets) whose store holds N
items, lowered with `Server.set_memory_limit` to keep a fraction F of them,
as the `cache_memlimit` command does, while a greenlet standing in for the
other clients wakes as often as the hub lets it and records the gaps. It
reports the worst gap and the p99 gap during the shrink, the number of
slices, and for comparison the one pause the same eviction costs done in a
single hold of the lock (how it would stall every client without slices).

What does not: sockets, the network, a real client's request; this is the
lock-hold time other clients would wait behind, which is what the slice size
(`mbserver.server.EVICT_SLICE`) bounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent  # noqa: E402

from mbserver.config import Settings  # noqa: E402
from mbserver.server import EVICT_SLICE, Server  # noqa: E402
from mbserver.storage import Mode  # noqa: E402


def filled_server(items: int, value_size: int) -> Server:
    server = Server(Settings(memory_limit=1 << 40))
    value = b"v" * value_size
    store = server.store
    for i in range(items):
        store.store(Mode.SET, b"key:%09d" % i, value)
    return server


def sliced(items: int, value_size: int, keep: float) -> dict:
    server = filled_server(items, value_size)
    store = server.store
    target = int(store.bytes * keep)
    gaps: list[float] = []

    def other_client() -> None:
        last = time.perf_counter()
        while True:
            gevent.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = gevent.spawn(other_client)
    gevent.sleep(0)
    started = time.perf_counter()
    server.set_memory_limit(target)
    elapsed = time.perf_counter() - started
    ticker.kill()
    gaps.sort()
    return {
        "evicted": store.evictions,
        "seconds": elapsed,
        "slices": len(gaps),
        "worst_ms": gaps[-1] * 1000,
        "p99_ms": gaps[int(len(gaps) * 0.99)] * 1000,
    }


def whole(items: int, value_size: int, keep: float) -> float:
    server = filled_server(items, value_size)
    store = server.store
    started = time.perf_counter()
    store.shrink(int(store.bytes * keep), len(store))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--keep", type=float, default=0.1, help="fraction of the bytes kept")
    args = parser.parse_args()
    result = sliced(args.items, args.value_size, args.keep)
    print(
        f"{args.items:,} items of {args.value_size} B, keeping {args.keep:.0%}: "
        f"{result['evicted']:,} evicted in {result['seconds']:.2f} s, "
        f"{result['slices']} slices of {EVICT_SLICE} items; other clients' worst wait "
        f"{result['worst_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
    )
    print(f"the same eviction in one hold of the lock: {whole(args.items, args.value_size, args.keep) * 1000:.0f} ms")


if __name__ == "__main__":
    main()

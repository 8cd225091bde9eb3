"""CPU per request on each request path, in-process, with no network.

`python bench/paths.py [--requests N] [--repeats R] [--keys K] [--hot-keys N]`

What lives here: a `Connection` wired to a real `Commands`, `Store` and
`RWLock`, reading from a scripted socket that hands it the same read over
and over and swallows every reply. It reports the process CPU time per
request (the minimum over the repeats, which is the figure least disturbed
by a busy machine) for:

- binary: a lone GET (hit), a lone SET, a pipelined run of 10 GETs;
- text: a lone `get`, a lone `set`, `get` of 10 and of 100 keys (per key).

With `--keys K` the GETs cycle through K stored keys instead of one, which
adds the cache misses a large store costs. With `--hot-keys N` the command
layer tracks hot keys, as the server's `--hot-keys N` does.

What does not: system calls, the gevent hub, other clients. This is the
Python part of a request only; `bench/run.py` measures the whole server
against memcached. Use this to see what a change to the request path buys
(commit messages on the path quote it), not to compare with memcached.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mbserver.commands import Commands  # noqa: E402
from mbserver.config import Settings  # noqa: E402
from mbserver.connection import Connection  # noqa: E402
from mbserver.rwlock import RWLock  # noqa: E402
from mbserver.stats import Stats  # noqa: E402
from mbserver.store import Mode, Store  # noqa: E402

HEADER = struct.Struct(">BBHBBHIIQ")
VALUE = b"v" * 100


class ScriptedSocket:
    """Returns the reads it was given, in a cycle, `count` times; then EOF."""

    def __init__(self, reads: list[bytes], count: int):
        self.reads = reads
        self.count = count
        self.index = 0

    def setsockopt(self, *args) -> None:
        pass

    def recv(self, size: int) -> bytes:
        if self.index == self.count:
            return b""
        data = self.reads[self.index % len(self.reads)]
        self.index += 1
        return data

    def send(self, data) -> int:
        return len(data)


def binary_get(key: bytes) -> bytes:
    return HEADER.pack(0x80, 0x00, len(key), 0, 0, 0, len(key), 0, 0) + key


def binary_set(key: bytes) -> bytes:
    body = len(key) + 8 + len(VALUE)
    return HEADER.pack(0x80, 0x01, len(key), 8, 0, 0, body, 0, 0) + b"\0" * 8 + key + VALUE


def paths(keys: list[bytes]) -> list[tuple[str, list[bytes], int]]:
    """(name, the reads, requests per read)."""
    return [
        ("binary GET (lone, hit)", [binary_get(k) for k in keys], 1),
        ("binary SET (lone)", [binary_set(keys[0])], 1),
        ("binary 10 pipelined GETs, per GET", [b"".join(binary_get(k) for k in (keys * 10)[:10])], 10),
        ("text get (lone, hit)", [b"get %b\r\n" % k for k in keys], 1),
        ("text set (lone)", [b"set %b 0 0 %d\r\n%b\r\n" % (keys[0], len(VALUE), VALUE)], 1),
        ("text get of 10 keys, per key", [b"get " + b" ".join((keys * 10)[:10]) + b"\r\n"], 10),
        ("text get of 100 keys, per key", [b"get " + b" ".join((keys * 100)[:100]) + b"\r\n"], 100),
    ]


def measure(commands: Commands, stats: Stats, reads: list[bytes], count: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        connection = Connection(ScriptedSocket(reads, count), "bench", commands, stats, Settings())
        started = time.process_time()
        connection.serve()
        best = min(best, (time.process_time() - started) / count)
    return best


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python bench/paths.py", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40_000, help="reads per repeat (default 40,000)")
    parser.add_argument("--repeats", type=int, default=15, help="repeats; the minimum is reported (default 15)")
    parser.add_argument("--keys", type=int, default=1, help="distinct stored keys the GETs cycle through (default 1)")
    parser.add_argument("--hot-keys", type=int, default=0, help="track this many hot keys (default 0: off)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.repeats < 1 or args.keys < 1:
        parser.error("--requests, --repeats and --keys must be at least 1")
    store = Store(1 << 30)
    keys = [b"key-%012d" % i for i in range(args.keys)]
    for key in keys:
        store.store(Mode.SET, key, VALUE)
    stats = Stats()
    commands = Commands(store, RWLock(), stats, Settings(hot_keys=args.hot_keys))
    print(
        f"python {sys.version.split()[0]}, {args.keys:,} key(s), hot keys {args.hot_keys or 'off'},"
        f" min of {args.repeats} x {args.requests:,} reads"
    )
    for name, reads, per_read in paths(keys):
        count = max(1, args.requests // per_read)
        seconds = measure(commands, stats, reads, count, args.repeats) / per_read
        print(f"  {name:36s} {seconds * 1e6:6.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

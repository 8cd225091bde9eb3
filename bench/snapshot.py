"""Warm-restart snapshots: throughput and the latency clients see during a write.

`python bench/snapshot.py [--items N] [--value-size B] [--dir DIR]`

What lives here: filling a Store with N items (default 1,000,000 of 100 B),
then timing, in this one process and with no server or sockets to a client:

- `Store.records()` — the one moment a save stops every client;
- a blocking `write_snapshot` and `load_snapshot` + `Store.restore`
  (seconds, MiB/s, file size);
- the latency impact of a cooperative save (`Snapshots.save()`, as the
  server runs it every --snapshot-interval): two probe greenlets run
  alongside it and record the worst gap they see, against a baseline run
  of the same probe with no save:
  * "get loop": a greenlet doing a multi-get of 10 keys under the read
    lock, then gevent.sleep(0), in a loop — the gap between iterations;
  * "socket client": another process pinging one byte over a socketpair,
    echoed by a greenlet here — the round trip, which needs the hub to
    poll I/O, as every real request does.
  The probes run one at a time: a sleep(0) loop delays I/O polling itself.

What does not: the server, options, real clients (see bench/run.py).
The snapshot file goes to --dir (default: a temporary directory on the
disk holding /tmp) and is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gevent
from gevent import socket as gsocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mbserver.rwlock import RWLock
from mbserver.snapshot import Snapshots, gc_paused, load_snapshot, write_snapshot
from mbserver.store import Mode, Store

MIB = 1 << 20


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/snapshot.py", description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000, help="items in the store (default 1,000,000)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    p.add_argument("--dir", type=Path, help="where the snapshot file goes (default: a new temporary directory)")
    return p.parse_args(argv)


def fill(items: int, value_size: int) -> Store:
    store = Store(limit_bytes=64 << 30)
    value = os.urandom(value_size)
    now = int(time.time())
    for i in range(items):
        # A mix of expiries, as a real cache holds: none, an hour, a day.
        ttl = (0, 3600, 86400)[i % 3]
        store.store(Mode.SET, b"key:%010d" % i, value, i & 0xFFFF, ttl and now + ttl)
    return store


# The socket probe's client: another process, as a real client is, so the
# round trip measures how soon the server's hub polls and answers its socket.
# It pings until the server closes the socket, then prints each round trip.
CLIENT = """
import socket, sys, time
sock = socket.socket(fileno=int(sys.argv[1]))
sock.setblocking(True)  # gevent made the pair non-blocking
rtts = []
while True:
    sent = time.perf_counter()
    try:
        sock.sendall(b"x")
        if not sock.recv(1):
            break
    except OSError:
        break
    rtts.append(time.perf_counter() - sent)
print(" ".join(f"{r:.6f}" for r in rtts))
"""


def get_loop_gaps(store: Store, lock: RWLock, keys: list[bytes], task) -> tuple[list[float], float]:
    """A greenlet doing multi-gets of 10 keys, then sleep(0), in a loop while task runs.

    Returns the gaps between its iterations and the task's seconds.
    """
    gaps: list[float] = []
    running = True

    def loop() -> None:
        rng = random.Random(1)
        last = time.perf_counter()
        while running:
            batch = [keys[rng.randrange(len(keys))] for _ in range(10)]
            with lock.read():
                store.get_many(batch)
            gevent.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    probe = gevent.spawn(loop)
    gevent.sleep(0.05)  # the probe is in its steady state before the task starts
    started = time.perf_counter()
    gevent.spawn(task).get()
    seconds = time.perf_counter() - started
    running = False
    probe.get()
    return gaps, seconds


def socket_rtts(task) -> tuple[list[float], float]:
    """Round trips of a one-byte ping from another process, echoed by a greenlet here, while task runs."""
    ours, theirs = gsocket.socketpair()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stdout=subprocess.PIPE,
        text=True,
    )
    theirs.close()

    def echo() -> None:
        try:
            while data := ours.recv(1):
                ours.sendall(data)
        except OSError:
            pass

    echoer = gevent.spawn(echo)
    try:
        gevent.sleep(0.2)  # the client has started and is pinging
        started = time.perf_counter()
        gevent.spawn(task).get()
        seconds = time.perf_counter() - started
    finally:
        ours.shutdown(gsocket.SHUT_RDWR)
        echoer.join()
        ours.close()
    out, _ = client.communicate(timeout=30)
    # Keep only the round trips made while the task ran: the last ones,
    # about as many as fit in its duration (the rest are the warm-up).
    rtts = [float(x) for x in out.split()]
    total, during = 0.0, []
    for rtt in reversed(rtts):
        if total >= seconds:
            break
        during.append(rtt)
        total += rtt
    return during, seconds


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def summary(label: str, samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[max(0, int(len(samples) * 0.99) - 1)]
    p999 = samples[max(0, int(len(samples) * 0.999) - 1)]
    worst = ", ".join(f"{x * 1000:.1f}" for x in reversed(samples[-3:]))
    return (
        f"| {label} | {len(samples):,} | {ms(statistics.median(samples))} | {ms(p99)} | {ms(p999)} | {worst} |"
    )


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="mbserver-snapshot-bench-", dir=args.dir))
    path = directory / "snapshot"
    try:
        started = time.perf_counter()
        store = fill(args.items, args.value_size)
        print(f"filled {len(store):,} items of {args.value_size} B in {time.perf_counter() - started:.1f} s")
        lock = RWLock()
        keys = list(store.records()[0])

        samples = []
        for _ in range(5):
            started = time.perf_counter()
            with lock.read(), gc_paused():
                store.records()
            samples.append(time.perf_counter() - started)
        records_stall = statistics.median(samples)

        now = time.time()
        with gc_paused():  # as Snapshots.save and Snapshots.load run them
            k, r = store.records()
            written = write_snapshot(path, zip(k, r), now)
            del k, r
            size = written.size
            started = time.perf_counter()
            loaded = load_snapshot(path, now)
            load_seconds = time.perf_counter() - started
            fresh = Store(limit_bytes=store.limit_bytes)
            started = time.perf_counter()
            fresh.restore(loaded.pairs)
            restore_seconds = time.perf_counter() - started
            assert len(fresh) == len(store), (len(fresh), len(store))
            del loaded, fresh

        snapshots = Snapshots(path, store, lock)
        saves = []

        def save() -> None:
            saves.append(snapshots.save())

        def idle() -> None:
            gevent.sleep(1.0)

        get_idle, _ = get_loop_gaps(store, lock, keys, idle)
        get_save, get_save_seconds = get_loop_gaps(store, lock, keys, save)
        rtt_idle, _ = socket_rtts(idle)
        rtt_save, rtt_save_seconds = socket_rtts(save)
        assert all(w is not None and w.count == len(store) for w in saves), saves

        print()
        print(f"{args.items:,} items of {args.value_size} B; snapshot file {size / MIB:.1f} MiB ({size:,} bytes)")
        print()
        print("| step | seconds | MiB/s |")
        print("|---|---:|---:|")
        print(f"| Store.records() (the only stop-the-world part of a save) | {records_stall:.3f} | |")
        print(f"| write_snapshot, blocking (encode + write + fsync + rename) | {written.seconds:.2f} | {size / MIB / written.seconds:.0f} |")
        for label, seconds in (("get loop", get_save_seconds), ("socket client", rtt_save_seconds)):
            print(f"| cooperative save (Snapshots.save) beside the {label} | {seconds:.2f} | {size / MIB / seconds:.0f} |")
        print(f"| load_snapshot (read + verify + parse) | {load_seconds:.2f} | {size / MIB / load_seconds:.0f} |")
        print(f"| Store.restore | {restore_seconds:.2f} | |")
        print()
        print("Latency beside a cooperative save, and for 1 s with no save:")
        print()
        print("| probe | samples | median | p99 | p99.9 | 3 worst (ms) |")
        print("|---|---:|---:|---:|---:|---:|")
        print(summary("get loop: gap between iterations, no save", get_idle))
        print(summary("get loop: gap between iterations, during a save", get_save))
        print(summary("socket client: round trip, no save", rtt_idle))
        print(summary("socket client: round trip, during a save", rtt_save))
        print()
        print(f"A blocking write would stall every client for {written.seconds:.2f} s; a cooperative")
        print("save stalls them once, for Store.records(), then about a batch (~1 ms) at a time.")
        print("Beside the get loop, which never waits on I/O, the save gets one batch per pass of")
        print("the hub's callback queue (its 5 ms switch interval), hence its long duration there.")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Warm-restart snapshots: save and load rates, and the stalls clients see meanwhile.

`python bench/snapshot.py [--items N] [--value-size B] [--dir DIR] [--skip-server]`

What lives here: filling a Store with N items (default 1,000,000 of 100 B;
`--items 10000000` takes about 3 GiB here, and twice that for the few
seconds both a store and its forked writer hold their copies), then:

- a **periodic save** (`Snapshots.save()`, as the server runs it every
  --snapshot-interval: a forked child writes the file), alone and beside
  each probe below, with the seconds, MiB/s and the probe's worst stall;
  and `os.fork()` alone, the one moment a save holds every client;
- the **final save** of a graceful stop (`write_snapshot` in this process,
  no clients left): seconds and MiB/s;
- a **background load** (`Snapshots.load()` into an empty store, as the
  server runs it behind its open port), alone and beside each probe:
  items/s and the probe's worst stall; and the count of the loaded items
  in their size classes that follows it (`Snapshots.count_loaded()`), alone;
- with a real server (`python -m mbserver --snapshot FILE`, unless
  `--skip-server`): the time from starting the process to its first
  answer, how long until the load ends (`stats`' snapshot_loading), the
  items/s, and the worst round trip of a client sending `get`s all along.

The probes run one at a time (a sleep(0) loop delays I/O polling itself).
Each keeps a core busy, and this machine has two: beside one, a save or a
load gets less CPU than alone.
  * "get loop": a greenlet doing a multi-get of 10 keys under the read
    lock, then gevent.sleep(0), in a loop — the gap between iterations;
  * "socket client": another process pinging one byte over a socketpair,
    echoed by a greenlet here — the round trip, which needs the hub to
    poll I/O, as every real request does.
Each is also run for a second with nothing else going on, for a baseline.

What does not: bench/run.py's comparison with memcached. The snapshot file
goes to --dir (default: a temporary directory on the disk holding /tmp)
and is removed afterwards.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gevent
from gevent import socket as gsocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mbserver.rwlock import RWLock  # noqa: E402
from mbserver.snapshot import Snapshots, write_snapshot  # noqa: E402
from mbserver.store import ITEM_OVERHEAD, Mode, Store  # noqa: E402

MIB = 1 << 20
PROBE_KEYS = 100_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/snapshot.py", description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000, help="items in the store (default 1,000,000)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    p.add_argument("--dir", type=Path, help="where the snapshot file goes (default: a new temporary directory)")
    p.add_argument("--skip-server", action="store_true", help="leave out the run of a real server")
    return p.parse_args(argv)


def limit_for(items: int, value_size: int) -> int:
    """A memory limit (-m, bytes) that holds every item, with room to spare."""
    per_item = ITEM_OVERHEAD + len(b"key:%010d" % 0) + value_size
    return (items * per_item * 5 // 4 >> 20) + 64 << 20


def fill(items: int, value_size: int) -> Store:
    store = Store(limit_bytes=limit_for(items, value_size))
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
    out, _ = client.communicate(timeout=60)
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


def fork_seconds(repeats: int = 3) -> list[float]:
    """How long os.fork() itself takes in this process: what a periodic save stalls for."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        samples.append(time.perf_counter() - started)
        os.waitpid(pid, 0)
    return samples


def server_run(path: Path, items: int, limit: int) -> dict[str, float]:
    """A real server loading the snapshot: time to the first answer, time to the end
    of the load, and the worst round trip of a client sending gets meanwhile."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "mbserver", f"127.0.0.1:{port}", "--snapshot", str(path),
            "-m", str(limit >> 20)]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = started + 30
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.002)
        with sock:
            sock.sendall(b"version\r\n")
            read_until(sock, b"\r\n")
            first_answer = time.monotonic() - started
            rtts = []
            rng = random.Random(2)
            loading = True
            polls = 0
            deadline = time.monotonic() + 600
            while loading:
                sent = time.perf_counter()
                sock.sendall(b"get key:%010d\r\n" % rng.randrange(items))
                read_until(sock, b"END\r\n")
                rtts.append(time.perf_counter() - sent)
                polls += 1
                if polls % 200 == 0:
                    sock.sendall(b"stats\r\n")
                    loading = b"snapshot_loading 1\r\n" in read_until(sock, b"END\r\n")
                if time.monotonic() > deadline:
                    raise RuntimeError("the load did not end in 10 minutes")
            loaded = time.monotonic() - started
            sock.sendall(b"stats\r\n")
            stats = read_until(sock, b"END\r\n")
        curr = int(stats.split(b"curr_items ")[1].split(b"\r\n")[0])
        assert curr == items, (curr, items)
    finally:
        proc.terminate()
        proc.wait(120)
    return {"first_answer": first_answer, "loaded": loaded, "rtts": rtts}


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        data += chunk
    return data


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


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="mbserver-snapshot-bench-", dir=args.dir))
    path = directory / "snapshot"
    try:
        started = time.perf_counter()
        store = fill(args.items, args.value_size)
        limit = store.limit_bytes
        print(f"filled {len(store):,} items of {args.value_size} B in {time.perf_counter() - started:.1f} s"
              f" (peak RSS {rss_mib():,.0f} MiB)", flush=True)
        lock = RWLock()
        keys = random.Random(3).sample(store.records()[0], min(PROBE_KEYS, len(store)))
        forks = fork_seconds()

        # The final save: in this process, nothing else to serve.
        with lock.read():
            all_keys, records = store.records()
        written = write_snapshot(path, all_keys, records, time.time())
        del all_keys, records
        size = written.size

        snapshots = Snapshots(path, store, lock)
        saves = []

        def save() -> None:
            saves.append(snapshots.save())

        def idle() -> None:
            gevent.sleep(1.0)

        started = time.perf_counter()
        save()
        save_alone = time.perf_counter() - started
        get_idle, _ = get_loop_gaps(store, lock, keys, idle)
        get_save, get_save_seconds = get_loop_gaps(store, lock, keys, save)
        rtt_idle, _ = socket_rtts(idle)
        rtt_save, rtt_save_seconds = socket_rtts(save)
        assert all(w is not None and w.count == len(store) for w in saves), saves
        print(f"saved; peak RSS {rss_mib():,.0f} MiB", flush=True)

        del store, snapshots
        gc.collect()
        loads = []

        def load() -> Snapshots:
            fresh = Store(limit_bytes=limit)
            snapshots = Snapshots(path, fresh, RWLock())
            loads.append(snapshots.load())
            return snapshots

        started = time.perf_counter()
        loaded = load()
        load_alone = time.perf_counter() - started
        started = time.perf_counter()
        loaded.count_loaded()
        count_alone = time.perf_counter() - started
        del loaded
        gc.collect()
        # The probe reads its own (empty) store: what it measures is the hub.
        probe_store = Store()
        get_load, get_load_seconds = get_loop_gaps(probe_store, lock, keys, load)
        gc.collect()
        rtt_load, rtt_load_seconds = socket_rtts(load)
        gc.collect()
        assert loads == [args.items] * 3, loads

        server = None if args.skip_server else server_run(path, args.items, limit)

        print()
        print(f"{args.items:,} items of {args.value_size} B; snapshot file {size / MIB:.1f} MiB ({size:,} bytes)")
        print()
        print("| step | seconds | rate |")
        print("|---|---:|---:|")
        print(f"| os.fork() (the only pause of a periodic save; 3 runs) | {', '.join(f'{f:.3f}' for f in forks)} | |")
        for label, seconds in (
            ("alone", save_alone),
            ("beside the get loop", get_save_seconds),
            ("beside the socket client", rtt_save_seconds),
        ):
            print(f"| periodic save (forked child), {label} | {seconds:.2f} | {size / MIB / seconds:.0f} MiB/s |")
        print(f"| final save (write_snapshot in this process) | {written.seconds:.2f} | {size / MIB / written.seconds:.0f} MiB/s |")
        for label, seconds in (
            ("alone", load_alone),
            ("beside the get loop", get_load_seconds),
            ("beside the socket client", rtt_load_seconds),
        ):
            print(f"| background load (Snapshots.load), {label} | {seconds:.2f} | {args.items / seconds / 1e6:.2f} M items/s |")
        print(f"| then counting them in their size classes (count_loaded), alone | {count_alone:.2f} "
              f"| {args.items / count_alone / 1e6:.2f} M items/s |")
        if server is not None:
            print(f"| server: from start to its first answer | {server['first_answer']:.2f} | |")
            print(f"| server: from start to the end of the load | {server['loaded']:.2f} | {args.items / server['loaded'] / 1e6:.2f} M items/s |")
        print()
        print("Latency beside a save and a load, and for 1 s with nothing else running:")
        print()
        print("| probe | samples | median | p99 | p99.9 | 3 worst (ms) |")
        print("|---|---:|---:|---:|---:|---:|")
        print(summary("get loop: gap between iterations, idle", get_idle))
        print(summary("get loop: gap between iterations, during a periodic save", get_save))
        print(summary("get loop: gap between iterations, during a load", get_load))
        print(summary("socket client: round trip, idle", rtt_idle))
        print(summary("socket client: round trip, during a periodic save", rtt_save))
        print(summary("socket client: round trip, during a load", rtt_load))
        if server is not None:
            print(summary("server: a client's get, during the load", server["rtts"]))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])

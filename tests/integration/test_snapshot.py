"""A real SIGKILL in the middle of a snapshot write leaves the previous snapshot intact.

Each test runs the snapshot writer in a separate Python process
(``sys.executable -c``) over a good snapshot, kills it with SIGKILL and
checks what is left on disk: the previous snapshot, whole and loadable, or
a complete new one, and never a partial file under the snapshot's name.
No server is started: this is about the file, and the writer is the code
the server runs. Every wait is bounded.
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbserver.snapshot import load_snapshot, write_snapshot
from mbserver.record import pack as record

from .support import REPO_ROOT

T0 = 1_700_000_000
WAIT = 30.0  # seconds any one step may take before the test fails

# The writer: N items of 1 KiB over ARGV path, cooperative or not. With
# PAUSE it prints "HALF" when it asks for the second half of the records
# and waits there to be killed; with LOOP it writes snapshots of
# alternating contents forever, printing "WROTE <count>" after each.
WRITER = """
import sys, time
from mbserver.snapshot import write_snapshot
from mbserver.record import pack as record
path, count, mode, cooperative = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
value = b"v" * 1024

class Records:
    # The records, made as the writer takes them a block at a time.
    def __init__(self, n):
        self.n = n
    def __len__(self):
        return self.n
    def __getitem__(self, part):
        if mode == "pause" and part.start >= self.n // 2:
            print("HALF", flush=True)
            time.sleep(60)
        return [record(value, i, 0, i + 1, 0) for i in range(*part.indices(self.n))]

def write(n):
    keys = [b"new:%d" % i for i in range(n)]
    write_snapshot(path, keys, Records(n), 1_700_000_000, cooperative=cooperative)

if mode == "pause":
    write(count)
    print("DONE", flush=True)
else:
    print("READY", flush=True)
    n = count
    while True:
        write(n)
        print("WROTE", n, flush=True)
        n = count + 1 if n == count else count
"""


def write_previous(path: Path, count: int = 100) -> bytes:
    keys = [b"old:%d" % i for i in range(count)]
    records = [record(b"old value %d" % i, i, 0, i + 1, T0) for i in range(count)]
    write_snapshot(path, keys, records, T0)
    return path.read_bytes()


def start_writer(path: Path, count: int, mode: str, cooperative: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(count), mode, "1" if cooperative else "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen, deadline: float) -> str:
    """The writer's next line of output, or a failure once the deadline passes."""
    remaining = deadline - time.monotonic()
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining))
    if not ready:
        pytest.fail("the snapshot writer said nothing in time")
    return proc.stdout.readline().strip()


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL our own writer, by its PID, and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=WAIT)
    proc.stdout.close()


def temp_files(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + ".tmp."))


@pytest.mark.parametrize("cooperative", [False, True], ids=["blocking", "cooperative"])
def test_sigkill_mid_write_leaves_the_previous_snapshot(tmp_path, cooperative):
    path = tmp_path / "cache.snapshot"
    previous = write_previous(path)
    writer = start_writer(path, 100_000, "pause", cooperative)
    try:
        assert read_line(writer, time.monotonic() + WAIT) == "HALF"
        # Half the records are on disk under the temporary name, none under the real one.
        (partial,) = temp_files(path)
        assert partial.stat().st_size > 20 << 20
        assert path.read_bytes() == previous
    finally:
        kill(writer)
    assert writer.returncode == -signal.SIGKILL

    assert path.read_bytes() == previous
    loaded = load_snapshot(path, T0)
    assert loaded.count == 100
    assert loaded.pairs[7] == (b"old:7", record(b"old value 7", 7, 0, 8, T0))

    # The dead writer's temporary file goes with the next write.
    assert len(temp_files(path)) == 1
    write_snapshot(path, [b"k"], [record(b"v", 0, 0, 1, T0)], T0)
    assert temp_files(path) == []
    assert load_snapshot(path, T0).count == 1


@pytest.mark.parametrize("cooperative", [False, True], ids=["blocking", "cooperative"])
def test_sigkill_at_any_moment_leaves_a_whole_snapshot(tmp_path, cooperative):
    """Kill a writer that rewrites the snapshot in a loop at random moments: the
    file is always one whole snapshot, the previous one or a complete new one."""
    path = tmp_path / "cache.snapshot"
    write_previous(path)
    rng = random.Random(6)
    counts = set()
    for attempt in range(8):
        writer = start_writer(path, 20_000, "loop", cooperative)
        try:
            deadline = time.monotonic() + WAIT
            assert read_line(writer, deadline) == "READY"
            if attempt % 2:
                # Let one write complete first, so the kill lands in a later one.
                assert read_line(writer, deadline).startswith("WROTE")
            time.sleep(rng.uniform(0.0, 0.2))
        finally:
            kill(writer)
        loaded = load_snapshot(path, T0)  # raises SnapshotError on a torn file
        assert loaded.count in (100, 20_000, 20_001)
        assert len(loaded.pairs) == loaded.count
        counts.add(loaded.count)
    assert counts - {100}  # new snapshots replaced the previous one between kills


# -- the server's warm restart, end to end --------------------------------


def _load_100k(conn, ttl_of) -> None:
    from .. import packets as P

    batch = b"".join(
        P.set_(b"warm:%06d" % i, b"value %d" % i, flags=i % 7, expiry=ttl_of(i), opcode=P.SETQ)
        for i in range(100_000)
    )
    assert conn.sync(batch) == []  # quiet sets: no reply means every one was stored


def test_a_restart_keeps_100k_items_with_their_flags_and_ttls(start_server, tmp_path):
    from .. import packets as P
    from .wire import Connection

    path = tmp_path / "cache.snapshot"
    server = start_server("--snapshot", str(path), "-m", "256")
    ttl_of = lambda i: (0, 3600, 1)[i % 3]  # noqa: E731 -- never, an hour, a second
    stored_at = time.time()
    with Connection(server.host, server.port, timeout=30) as conn:
        _load_100k(conn, ttl_of)
    loaded_at = time.time()  # the last set's 1 s TTL ends a second after this
    assert server.stop() == 0
    assert "snapshot: " in server.output(), server.output()  # written on the graceful stop

    # The expiry in the file is absolute: an hour's TTL still ends an hour
    # after the set, whatever the downtime.
    loaded = load_snapshot(path, time.time())
    exptimes = {key: int.from_bytes(rec[:4], "big") for key, rec in loaded.pairs}
    assert abs(exptimes[b"warm:000001"] - (stored_at + 3600)) <= 2
    assert exptimes[b"warm:000000"] == 0

    time.sleep(max(0.0, loaded_at + 2.1 - time.time()))  # every 1 s TTL is over
    server = start_server("--snapshot", str(path), "-m", "256")
    # The port answers while the load runs: the log says when it has ended.
    deadline = time.monotonic() + 30
    while "loaded 66667 items" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    keys = [b"warm:%06d" % i for i in range(100_000)]
    with Connection(server.host, server.port, timeout=30) as conn:
        replies = conn.sync(b"".join(P.get(k, P.GETKQ, opaque=i) for i, k in enumerate(keys)))
    got = {r.key: r for r in replies}
    for i, key in enumerate(keys):
        if ttl_of(i) == 1:
            assert key not in got, key
        else:
            reply = got[key]
            assert (reply.value, reply.flags) == (b"value %d" % i, i % 7), key
    assert len(got) == sum(1 for i in range(100_000) if ttl_of(i) != 1)


def test_a_corrupt_snapshot_is_refused_and_the_server_starts_empty(start_server, tmp_path):
    from .. import packets as P
    from .wire import Connection

    path = tmp_path / "cache.snapshot"
    path.write_bytes(b"\x89MBSNAP\n" + os.urandom(4096))
    server = start_server("--snapshot", str(path))
    deadline = time.monotonic() + 30
    while "snapshot refused" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    with Connection(server.host, server.port) as conn:
        assert conn.request(P.set_(b"fresh", b"start")).status == P.SUCCESS
    assert server.stop() == 0
    assert load_snapshot(path, time.time()).count == 1  # replaced by a good one on stop


def test_snapshot_interval_writes_while_serving(start_server, tmp_path):
    from .. import packets as P
    from .wire import Connection

    path = tmp_path / "cache.snapshot"
    server = start_server("--snapshot", str(path), "--snapshot-interval", "0.5")
    with Connection(server.host, server.port) as conn:
        assert conn.request(P.set_(b"periodic", b"saved", flags=3)).status == P.SUCCESS
        deadline = time.monotonic() + 20
        while True:  # bounded poll: a save every 0.5 s, while still serving
            if path.exists():
                pairs = dict(load_snapshot(path, time.time()).pairs)
                if b"periodic" in pairs:
                    break
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        assert pairs[b"periodic"].endswith(b"saved")
        assert conn.request(P.get(b"periodic")).value == b"saved"


def test_a_million_items_load_behind_an_open_port(launcher, tmp_path):
    """The server answers within a second of starting, whatever the snapshot's
    size; what clients write and delete meanwhile wins over the file."""
    from .textwire import parse_stats, read_reply

    path = tmp_path / "cache.snapshot"
    count = 1_000_000
    keys = [b"warm:%07d" % i for i in range(count)]
    values = [record(b"value %d" % i, i, 0, i + 1, T0) for i in range(100)]
    write_snapshot(path, keys, [values[i % 100] for i in range(count)], time.time())
    del keys

    started = time.monotonic()
    server = launcher.start("--snapshot", str(path), "-m", "1024")
    with socket.create_connection((server.host, server.port), timeout=WAIT) as sock:
        # The last keys in the file load last: these land before their slice.
        sock.sendall(
            b"set warm:0999999 0 0 6\r\nclient\r\n"
            b"delete warm:0999998\r\n"
            b"get warm:0000000\r\n"
        )
        replies = read_reply(sock, b"END\r\n")
        answered = time.monotonic() - started
        sock.sendall(b"stats\r\n")
        stats = parse_stats(read_reply(sock, b"END\r\n"))
    assert answered < 1.0, f"first reply {answered:.2f} s after start"
    assert replies.startswith(b"STORED\r\nNOT_FOUND\r\n"), replies
    # A key not loaded yet is a miss, or a hit once its slice has arrived.
    assert replies.endswith(b"\r\nEND\r\n")
    assert stats["snapshot_loading"] == "1", "the load ended before the first request"
    assert stats["snapshot_file_items"] == str(count)

    deadline = time.monotonic() + WAIT
    while stats["snapshot_loading"] == "1":
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
        with socket.create_connection((server.host, server.port), timeout=WAIT) as sock:
            sock.sendall(b"stats\r\n")
            stats = parse_stats(read_reply(sock, b"END\r\n"))
    assert stats["snapshot_load_progress"] == "1.0000"
    assert stats["snapshot_loaded_items"] == str(count - 2)
    assert stats["curr_items"] == str(count - 1)
    with socket.create_connection((server.host, server.port), timeout=WAIT) as sock:
        sock.sendall(b"get warm:0999999 warm:0999998 warm:0500042\r\n")
        got = read_reply(sock, b"END\r\n")
    assert got == (
        b"VALUE warm:0999999 0 6\r\nclient\r\n"
        b"VALUE warm:0500042 42 8\r\nvalue 42\r\nEND\r\n"
    )

"""bench/floorserver.py's answers and bench/floor.py's command line and report, with no sockets.

The floor server is the least a Python server does for memcaslap's binary
GETs and SETs; its replies must still be ones memcaslap and a client accept,
or the floor it shows would be too low. The process itself, with a real
client: tests/integration/test_bench_floor.py.
"""

from __future__ import annotations

import datetime
import struct
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
try:
    import floor
    from floorserver import HEADER, answer
finally:
    sys.path.remove(str(BENCH))


def request(opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"", opaque: int = 7) -> bytes:
    body = extras + key + value
    return HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, len(body), opaque, 0) + body


def replies(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(opcode, status, opaque, body) of each reply in ``data``."""
    out = []
    while data:
        magic, op, _, _, _, status, bodylen, opaque, _ = HEADER.unpack_from(data)
        assert magic == 0x81
        out.append((op, status, opaque, data[24 : 24 + bodylen]))
        data = data[24 + bodylen :]
    return out


SET = request(0x01, b"k" * 16, struct.pack(">II", 0xDEADBEEF, 0), b"v" * 100)


def test_a_get_finds_what_a_set_stored_with_its_flags():
    store: dict[bytes, bytes] = {}
    reply, rest = answer(store, SET)
    assert rest == b"" and replies(reply) == [(0x01, 0, 7, b"")]
    reply, rest = answer(store, request(0x00, b"k" * 16, opaque=9))
    assert replies(reply) == [(0x00, 0, 9, struct.pack(">I", 0xDEADBEEF) + b"v" * 100)]


def test_a_miss_is_not_found_and_an_unknown_command_says_so():
    reply, _ = answer({}, request(0x00, b"nope") + request(0x05, b"n"))
    assert replies(reply) == [(0x00, 0x0001, 7, b"Not found"), (0x05, 0x0081, 7, b"Unknown command")]


def test_an_unfinished_request_waits_for_the_rest():
    store: dict[bytes, bytes] = {}
    for cut in (10, 24, len(SET) - 1):
        reply, rest = answer(store, SET[:cut])
        assert (reply, rest) == (b"", SET[:cut])
        reply, rest = answer(store, rest + SET[cut:])
        assert rest == b"" and [r[1] for r in replies(reply)] == [0]


def test_pipelined_requests_are_answered_in_order_and_flush_empties():
    store: dict[bytes, bytes] = {}
    reply, rest = answer(store, SET + request(0x08) + request(0x00, b"k" * 16) + request(0x0A) + SET[:5])
    assert [(op, status) for op, status, _, _ in replies(reply)] == [(1, 0), (8, 0), (0, 1), (0x0A, 0)]
    assert rest == SET[:5] and store == {}


def test_setq_stores_without_a_reply_as_run_py_loads_row_e():
    store: dict[bytes, bytes] = {}
    setq = request(0x11, b"q" * 16, struct.pack(">II", 5, 0), b"w" * 100)
    reply, rest = answer(store, setq + setq.replace(b"w" * 100, b"x" * 100) + request(0x0A, opaque=3))
    assert (replies(reply), rest) == ([(0x0A, 0, 3, b"")], b"")
    assert store == {b"q" * 16: struct.pack(">I", 5) + b"x" * 100}


def test_floor_runs_every_row_by_default():
    args = floor.parse_args([])
    assert (args.rows, args.rounds, args.duration) == ("agef", 3, 5)
    assert floor.ROWS["g"].connections == 1000 and floor.ROWS["a"].connections == 16


def test_the_memory_rows_report_each_server_against_memcached():
    args = floor.parse_args(["--rows", "fe"])
    memory = {}
    for n, (label, _, _) in enumerate(floor.SERVERS):
        memory[("e", label)] = {"rss0": 2**20, "rss1": 101 * 2**20, "per_item": 200.0 + 100 * n, "refused": 0}
        memory[("f", label)] = {"rss0": 2**20, "rss1": 11 * 2**20, "per_conn": 2048.0 * (n + 1)}
    info = dict.fromkeys(("nproc", "cpu", "kernel", "memcached", "mbserver", "python", "memcaslap"), "?")
    lines = floor.render(args, {}, info, datetime.datetime(2026, 12, 1), memory).splitlines()
    assert not [line for line in lines if "ops/s" in line or "Every round" in line]  # no throughput rows
    rows = [line for line in lines if line.startswith("| (")]
    assert rows[0].startswith("| (f) resident memory, 5,000 idle connections | memcached | 1.0 → 11.0 MiB | 2.0 KiB")
    assert rows[6] == ("| (e) resident bytes per item, 1,000,000 items of 100 B | floor server | 1.0 → 101.0 MiB "
                       "| 400 B an item | 2.00× |")
    assert len(rows) == 8


@pytest.mark.parametrize(
    "argv", [["--rows", "ab"], ["--rows", "x"], ["--rows", ""], ["--rounds", "0"], ["--duration", "0"]]
)
def test_floor_refuses_what_it_cannot_run(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        floor.parse_args(argv)
    assert exited.value.code == 2 and "usage" in capsys.readouterr().err

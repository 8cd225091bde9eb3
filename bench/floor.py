"""How close to memcached any Python server gets here: `python bench/floor.py [--server-python PYTHON]`.

What lives here: rounds of bench/run.py's rows (a) and (g) (16 and 1,000
connections, 90% get / 10% set, 100 B values) against four servers,
alternating: memcached as it starts by default (four threads), memcached
with one thread (`-t 1`, mbserver's shape), `floorserver.py` (one epoll
set, a dict and one struct, under mbserver's interpreter), and mbserver.
It reports each server's ops/s and CPU time a request, user and system
apart, from /proc, and each one's ratio to default memcached. Then run.py's
memory rows, measured as run.py measures them, on a fresh server of each
kind: (e) resident bytes per item after 1,000,000 items of 100 B, and (f)
resident memory with 5,000 idle connections. What does not: the targets
(run.py), or where mbserver's own time goes (paths.py, instructions.py,
jitprofile.py).

The floor server's figures are the most a Python server can reach on that
interpreter and machine before it keeps anything a cache must keep: at
(e), a dict from each key to its flags and value, and no more; at (f), a
socket in an epoll set for each connection, and no greenlet. memcached's
`-t 1` row shows what one thread serving every connection costs memcached
itself.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import mcclient
import memaslap
import run
import servers

HERE = Path(__file__).resolve().parent
# (label, servers.start kind, memcached's -t)
SERVERS = (
    ("memcached", "memcached", None),
    ("memcached -t 1", "memcached", 1),
    ("floor server", "floor", None),
    ("mbserver", "mbserver", None),
)
ROWS = {"a": run.THROUGHPUT["a"], "g": run.THROUGHPUT["g"]}
MEMORY_ROWS = {
    "e": f"resident bytes per item, {run.ITEMS:,} items of 100 B",
    "f": f"resident memory, {run.IDLE_CONNECTIONS:,} idle connections",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/floor.py", description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="agef", help="which of run.py's rows: a (16 conns), g (1,000 conns), "
                   "e (bytes per item), f (idle connections); default all four")
    p.add_argument("--rounds", type=int, default=3, help="rounds per server and row (default 3)")
    p.add_argument("--duration", type=int, default=5, help="seconds per round (default 5)")
    p.add_argument("--output", type=Path, help="also write the Markdown report here")
    p.add_argument("--server-python", metavar="PYTHON",
                   help="the interpreter for mbserver and the floor server (default $MBSERVER_PYTHON, "
                        "else the one running this)")
    args = p.parse_args(argv)
    if not args.rows or set(args.rows) - set(ROWS) - set(MEMORY_ROWS):
        p.error(f"--rows takes a, g, e and f, not {args.rows!r}")
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    if args.server_python:
        os.environ["MBSERVER_PYTHON"] = args.server_python
    return args


def measure(args: argparse.Namespace, log_dir: Path, running: list[servers.Server]) -> dict:
    """{(row, label): [(ops/s, user µs a request, system µs a request), ...]}"""
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    if not set(args.rows) & set(ROWS):
        return results
    started = {}
    for label, kind, threads in SERVERS:
        started[label] = servers.start(kind, 1024, 2000, log_dir, label.replace(" ", ""),
                                       memcached_threads=threads)
        running.append(started[label])
    for row in (row for row in args.rows if row in ROWS):
        workload = ROWS[row]
        config = log_dir / f"memaslap-{row}.cfg"
        config.write_text(workload.config())
        for r in range(args.rounds):
            for label, _, _ in SERVERS:
                server = started[label]
                mcclient.flush(server.port)
                user0, sys0 = server.cpu_seconds()
                result = memaslap.run(workload, server.port, args.duration, config, 1)
                user1, sys1 = server.cpu_seconds()
                # memcaslap's own counts: the floor server keeps none.
                ops = max(result.cmd_get + result.cmd_set, 1)
                entry = (result.rate, (user1 - user0) / ops * 1e6, (sys1 - sys0) / ops * 1e6)
                results.setdefault((row, label), []).append(entry)
                run.log(f"  ({row}) round {r + 1}/{args.rounds} {label:15} {entry[0]:>10,.0f} ops/s  "
                        f"cpu {entry[1]:.2f}+{entry[2]:.2f} us/op")
    for server in started.values():  # not left running beside the memory rows' fresh servers
        run.stop(server, running)
    return results


def measure_memory(args: argparse.Namespace, log_dir: Path, running: list[servers.Server]) -> dict:
    """{(row, label): run.item_memory's or run.idle_memory's figures}, each on a fresh server."""
    results: dict[tuple[str, str], dict[str, float]] = {}
    for row in (row for row in args.rows if row in MEMORY_ROWS):
        for label, kind, threads in SERVERS:
            server = servers.start(kind, 1024, run.IDLE_CONNECTIONS + 1000, log_dir, f"{row}{label.replace(' ', '')}",
                                   memcached_threads=threads)
            running.append(server)
            if row == "e":
                figures = results[(row, label)] = run.item_memory(server, run.ITEMS)
                run.log(f"  (e) {label:15} RSS {figures['rss0'] / 2**20:.1f} -> {figures['rss1'] / 2**20:.1f} MiB, "
                        f"{figures['per_item']:.1f} B an item ({figures['refused']:,} refused)")
            else:
                figures = results[(row, label)] = run.idle_memory(server, run.IDLE_CONNECTIONS)
                run.log(f"  (f) {label:15} RSS {figures['rss0'] / 2**20:.1f} -> {figures['rss1'] / 2**20:.1f} MiB, "
                        f"{figures['per_conn'] / 1024:.1f} KiB a connection")
            run.stop(server, running)
    return results


def render(args: argparse.Namespace, results: dict, info: dict[str, str], when: datetime.datetime,
           memory: dict | None = None) -> str:
    out = [
        "# How close a Python server gets: memcached, memcached -t 1, the floor server, mbserver",
        "",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- date: {when.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}",
        f"- software: {info['memcached']}; {info['mbserver']} and the floor server on {info['python']}; "
        f"{info['memcaslap']}",
        f"- {args.rounds} rounds × {args.duration} s per server and throughput row, alternating; medians; "
        "ratio to memcached's default; memory rows once each, on a fresh server",
    ]
    if results:
        out += ["", "| row | server | ops/s | ratio | user µs a request | system µs a request |",
                "|---|---|---:|---:|---:|---:|"]
    for row in (row for row in args.rows if row in ROWS):
        reference = statistics.median(rate for rate, _, _ in results[(row, "memcached")])
        for label, _, _ in SERVERS:
            rounds = results[(row, label)]
            rate = statistics.median(r[0] for r in rounds)
            user = statistics.median(r[1] for r in rounds)
            system = statistics.median(r[2] for r in rounds)
            out.append(f"| ({row}) {ROWS[row].label} | {label} | {rate:,.0f} | {rate / reference:.2f}× "
                       f"| {user:.2f} | {system:.2f} |")
    if memory:
        out += ["", "| row | server | resident before → after | growth | ratio |", "|---|---|---:|---:|---:|"]
        for row in (row for row in args.rows if row in MEMORY_ROWS):
            for label, _, _ in SERVERS:
                figures = memory[(row, label)]
                span = f"{figures['rss0'] / 2**20:.1f} → {figures['rss1'] / 2**20:.1f} MiB"
                if row == "e":
                    ratio = figures["per_item"] / memory[(row, "memcached")]["per_item"]
                    out.append(f"| (e) {MEMORY_ROWS[row]} | {label} | {span} | {figures['per_item']:.0f} B an item "
                               f"| {ratio:.2f}× |")
                else:
                    out.append(f"| (f) {MEMORY_ROWS[row]} | {label} | {span} "
                               f"| {figures['per_conn'] / 1024:.1f} KiB a connection | |")
    if results:
        out += ["", "Every round (ops/s, user + system µs a request):", ""]
    for (row, label), rounds in results.items():
        out.append(f"- ({row}) {label}: " + ", ".join(f"{r[0]:,.0f} ({r[1]:.2f}+{r[2]:.2f})" for r in rounds))
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run.raise_fd_limit(run.IDLE_CONNECTIONS + 1000 if "f" in args.rows else 4096)
    signal.signal(signal.SIGTERM, run._interrupt)  # unwinds like Ctrl-C: the servers are stopped
    when = datetime.datetime.now().astimezone()
    info = run.machine()
    log_dir = Path(tempfile.mkdtemp(prefix="mbserver-floor-"))
    running: list[servers.Server] = []
    try:
        results = measure(args, log_dir, running)
        memory = measure_memory(args, log_dir, running)
    except KeyboardInterrupt:
        run.log("floor: interrupted; stopping servers")
        return 130
    except run.FAILURES as exc:
        run.log(f"floor: FAILED: {exc}; server logs in {log_dir}")
        return 1
    finally:
        for server in running:
            server.stop()
    shutil.rmtree(log_dir)
    text = render(args, results, info, when, memory)
    print("\n" + text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

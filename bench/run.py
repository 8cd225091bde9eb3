"""Compare mbserver with memcached on this machine: `python bench/run.py [--quick]`.

What lives here: the command line, the order of the run (throughput rounds
alternating memcached and mbserver, then the memory measurements on fresh
servers), the medians and ratios, and the Markdown report. What does not:
starting servers (servers.py), memcaslap and its quirks (memaslap.py), the
raw-socket loader and idle connections (mcclient.py). bench/README.md says
how to read the report.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import mcclient
import memaslap
import servers
from memaslap import Workload

HERE = Path(__file__).resolve().parent
KINDS = ("memcached", "mbserver")

THROUGHPUT = {
    "a": Workload("a", "90% get / 10% set, 100 B values, 16 conns"),
    # The cost per connection: the same mix over 1,000 connections, each of
    # which must be served (see busy_connections).
    "g": Workload("g", "90% get / 10% set, 100 B values, 1,000 conns", connections=1000, window="1k"),
    # No sets: memcaslap stores each connection's key window first; 1k keys
    # per connection keeps that warm-up short and every get a hit.
    "b": Workload("b", "multi-get, batches of 10 keys, 16 conns", get_fraction=1.0, multiget=10, window="1k"),
    "c": Workload("c", "multi-get, batches of 100 keys, 16 conns", get_fraction=1.0, multiget=100, window="1k"),
    "d": Workload("d", "90% get / 10% set, 10 KiB values, 16 conns", value_size=10 * 1024),
}
# Minimum mbserver/memcached ratios of ops/s (issue 12), by protocol; row (g)
# must be within BUSY_TOLERANCE of row (a) in the same run.
TARGETS = {
    "binary": {"a": 0.85, "b": 0.6, "c": 0.6, "d": 0.8},
    "text": {"a": 0.75, "b": 0.6, "c": 0.6, "d": 0.8},
}
CPU_TARGETS = {"binary": {"a": 1.3}}  # maximum mbserver/memcached server CPU per operation
BUSY_TOLERANCE = 0.1
# What ends a run early with exit status 1 (a server would not start or
# died, memcaslap failed), here and in floor.py.
FAILURES = (servers.ServerError, memaslap.MemaslapError, mcclient.ProtocolError, OSError,
            subprocess.TimeoutExpired)
ITEMS = 1_000_000  # row (e): items of 100 B stored
IDLE_CONNECTIONS = 5000  # row (f): connections held open
BYTES_PER_ITEM_TARGET = 1.25  # maximum mbserver/memcached ratio
IDLE_RSS_TARGET_MIB = 100


@dataclass
class Round:
    rate: float
    hit_ratio: float | None
    server_gets: int
    client_gets: int
    errors: list[str]
    user_us: float  # server CPU per operation (per key for multi-get), from /proc
    system_us: float
    served: int | None = None  # connections served in the round's last seconds (row g)

    @property
    def cpu_us(self) -> float:
        return self.user_us + self.system_us


@dataclass
class Report:
    rounds: dict[tuple[str, str], list[Round]] = field(default_factory=dict)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    idle: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 s: a smoke run in about a minute")
    p.add_argument("--rounds", type=int, help="rounds per server and workload (default 5, quick 2)")
    p.add_argument("--duration", type=int, help="seconds per round (default 5, quick 2)")
    p.add_argument("--workloads", default="abcdefg", help="which rows to run, e.g. 'ac' or 'ef' (default all: abcdefg)")
    p.add_argument("--protocol", choices=("binary", "text"), default="binary",
                   help="wire protocol for the throughput rows (default binary; text drops memcaslap's -B)")
    p.add_argument("--memory-mib", type=int, default=1024, help="-m for both servers (default 1024)")
    p.add_argument("--memcached-threads", type=int, metavar="N",
                   help="memcached's -t (default its own, 4); -t 1 is mbserver's shape, one thread serving "
                        "every connection")
    p.add_argument("--client-threads", type=int, default=1, help="memcaslap -T (default 1: one core for it, one for the server)")
    p.add_argument("--items", type=int, default=ITEMS, help="items stored for row (e) (default 1,000,000)")
    p.add_argument("--idle-connections", type=int, default=IDLE_CONNECTIONS, help="connections held open for row (f) (default 5,000)")
    p.add_argument("--output", type=Path, default=HERE / "results.md", help="where the Markdown report goes")
    p.add_argument("--server-python", metavar="PYTHON",
                   help="the interpreter that runs mbserver, e.g. .venv-pypy/bin/python for PyPy "
                        "(default $MBSERVER_PYTHON, else the one running this)")
    args = p.parse_args(argv)
    if args.server_python:
        # servers.command starts mbserver with it (mbserver.testing.server_command).
        os.environ["MBSERVER_PYTHON"] = args.server_python
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.duration = args.duration or (2 if args.quick else 5)
    if args.memcached_threads is not None and args.memcached_threads < 1:
        p.error("--memcached-threads must be at least 1")
    if unknown := set(args.workloads) - set("abcdefg"):
        p.error(f"unknown workloads {''.join(sorted(unknown))}")
    return args


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        hard = needed  # only root may raise the hard limit; the error below says so otherwise
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError) as exc:
        sys.exit(f"bench: need {needed} open files for the idle-connection row, got {soft}: {exc}")


def log(msg: str) -> None:
    print(msg, flush=True)


def server_gets(stats: dict[str, str]) -> tuple[int, int, int, int]:
    return int(stats["cmd_get"]), int(stats["get_hits"]), int(stats["get_misses"]), int(stats["cmd_set"])


def busy_connections(port: int, delay: float) -> list[int]:
    """After ``delay`` seconds, count the connections that issued a command in
    the last 2 s (`stats conns`), our own excepted; the count lands in the list."""
    found: list[int] = []

    def sample() -> None:
        time.sleep(delay)
        try:
            secs = mcclient.text_stats(port, b"conns")
        except (OSError, mcclient.ProtocolError):
            return
        recent = sum(1 for name, value in secs.items()
                     if name.endswith(":secs_since_last_cmd") and int(value) <= 2)
        found.append(recent - 1)

    threading.Thread(target=sample, daemon=True).start()
    return found


def run_throughput(args: argparse.Namespace, report: Report, log_dir: Path, running: list[servers.Server]) -> None:
    max_conns = args.idle_connections + 1000
    pair = {}
    for kind in KINDS:
        pair[kind] = servers.start(kind, args.memory_mib, max_conns, log_dir, "throughput",
                                   memcached_threads=args.memcached_threads)
        running.append(pair[kind])
    for key, base in THROUGHPUT.items():
        if key not in args.workloads:
            continue
        workload = Workload(**{**base.__dict__, "protocol": args.protocol})
        config = log_dir / f"memaslap-{key}.cfg"
        config.write_text(workload.config())
        for r in range(args.rounds):
            for kind in KINDS:  # A B A B ...: machine noise hits both alike
                server = pair[kind]
                mcclient.flush(server.port)  # every round starts from the same empty cache
                before = server_gets(mcclient.stats(server.port))
                cpu_before = server.cpu_seconds()
                served = busy_connections(server.port, args.duration * 0.8) if workload.connections > 100 else None
                result = memaslap.run(workload, server.port, args.duration, config, args.client_threads)
                server.check_alive()
                cpu_after = server.cpu_seconds()
                after = server_gets(mcclient.stats(server.port))
                gets, hits, misses, sets = (a - b for a, b in zip(after, before))
                ratio = hits / (hits + misses) if hits + misses else None
                # CPU per operation counts what the server did, warm-up sets
                # included (they are in its counters too), so no round is flattered.
                ops = max(gets + sets, 1)
                user_us, system_us = ((a - b) / ops * 1e6 for a, b in zip(cpu_after, cpu_before))
                round_ = Round(result.rate, ratio, gets, result.cmd_get, result.errors, user_us, system_us,
                               served[0] if served else None)
                report.rounds.setdefault((key, kind), []).append(round_)
                hit_text = f"{ratio:.1%}" if ratio is not None else "n/a"
                served_text = f"  served {round_.served:,}" if round_.served is not None else ""
                log(f"  ({key}) round {r + 1}/{args.rounds} {kind:9} {result.rate:>12,.0f} {workload.unit}"
                    f"  cpu {user_us:.2f}+{system_us:.2f} us/op  server hits {hit_text}{served_text}"
                    f"{'  memcaslap errors: %d' % len(result.errors) if result.errors else ''}")
    for kind in KINDS:
        stop(pair[kind], running, report)


def stop(server: servers.Server, running: list[servers.Server], report: Report | None = None) -> None:
    """Stop a server this run started and forget it; a bad exit on SIGTERM goes in the report's notes."""
    was_alive = server.proc.poll() is None
    code = server.stop()
    running.remove(server)
    if report is not None and was_alive and code not in (0, -signal.SIGTERM):
        report.notes.append(f"{server.kind} (pid {server.pid}) exited with {code} on SIGTERM")


def settle_rss(server: servers.Server) -> int:
    time.sleep(0.5)
    return server.rss_bytes()


def item_memory(server: servers.Server, count: int) -> dict[str, float]:
    """Row (e) on one fresh server: its resident memory before and after
    ``count`` items of 100 B, stored with pipelined SETQ; how many it
    refused, and the growth an item stored."""
    rss0 = settle_rss(server)
    started = time.monotonic()
    refused = mcclient.bulk_load(server.port, count, 100)
    load_s = time.monotonic() - started
    rss1 = settle_rss(server)
    stored = max(count - refused, 1)
    return {"rss0": rss0, "rss1": rss1, "refused": refused, "per_item": (rss1 - rss0) / stored, "load_s": load_s}


def idle_memory(server: servers.Server, count: int, while_open=None) -> dict[str, float]:
    """Row (f) on one fresh server: its resident memory before and while
    ``count`` connections it has answered stay open and idle.
    ``while_open()``, if given, runs before they close; its dict is added."""
    rss0 = settle_rss(server)
    socks = mcclient.open_idle(server.port, count)
    try:
        rss1 = settle_rss(server)
        extra = while_open() if while_open else {}
    finally:
        for sock in socks:
            sock.close()
    return {"rss0": rss0, "rss1": rss1, "conns": len(socks), "per_conn": (rss1 - rss0) / max(len(socks), 1), **extra}


def run_memory(args: argparse.Namespace, report: Report, log_dir: Path, running: list[servers.Server]) -> None:
    max_conns = args.idle_connections + 1000
    for kind in KINDS:
        if "e" in args.workloads:
            server = servers.start(kind, args.memory_mib, max_conns, log_dir, "items",
                                   memcached_threads=args.memcached_threads)
            running.append(server)
            memory = item_memory(server, args.items)
            # The server's own count, and the growth per item it holds.
            stats = mcclient.stats(server.port)
            items = int(stats["curr_items"])
            if items != args.items or memory["refused"]:
                report.notes.append(f"{kind}: stored {items:,} of {args.items:,} items ({memory['refused']:,} SETQ "
                                    f"refused, {stats.get('evictions', '?')} evictions)")
            memory.update(items=items, per_item=(memory["rss1"] - memory["rss0"]) / max(items, 1),
                          bytes_stat=int(stats.get("bytes", 0)))
            report.memory[kind] = memory
            log(f"  (e) {kind:9} {items:,} items: RSS {memory['rss0'] / 2**20:.1f} -> {memory['rss1'] / 2**20:.1f} "
                f"MiB, {memory['per_item']:.1f} B/item (load {memory['load_s']:.1f} s)")
            stop(server, running, report)
        if "f" in args.workloads:
            server = servers.start(kind, args.memory_mib, max_conns, log_dir, "idle",
                                   memcached_threads=args.memcached_threads)
            running.append(server)
            idle = idle_memory(server, args.idle_connections, lambda: {
                "server_conns": int(mcclient.stats(server.port)["curr_connections"])})
            report.idle[kind] = idle
            log(f"  (f) {kind:9} {idle['conns']:,} idle connections (server counts {idle['server_conns']:,}): "
                f"RSS {idle['rss0'] / 2**20:.1f} -> {idle['rss1'] / 2**20:.1f} MiB")
            stop(server, running, report)


def machine() -> dict[str, str]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:")), 0)

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=servers.REPO)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "unknown"

    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "ram": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "python": version([servers.server_command()[0], "-c", IMPLEMENTATION]),
        "memcached": version([servers.MEMCACHED, "-V"]),
        "mbserver": version(servers.server_command("--version")),
        "memcaslap": version([memaslap.MEMASLAP, "-V"]),
    }


# What the report says mbserver ran on: "CPython 3.11.7", "PyPy 3.9.16".
IMPLEMENTATION = "import platform; print(platform.python_implementation(), platform.python_version())"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(args: argparse.Namespace, report: Report, info: dict[str, str], started: datetime.datetime,
           load: tuple[str, str], elapsed: float) -> str:
    rows = ["| workload | memcached | mbserver | ratio | target |", "|---|---:|---:|---:|---|"]
    cpu_rows = ["| workload | memcached user + sys | mbserver user + sys | ratio | target |",
                "|---|---:|---:|---:|---|"]
    targets = TARGETS.get(args.protocol, {})
    cpu_targets = CPU_TARGETS.get(args.protocol, {})
    ratios = {}
    for key, workload in THROUGHPUT.items():
        mc, mb = report.rounds.get((key, "memcached")), report.rounds.get((key, "mbserver"))
        if not mc or not mb:
            continue
        mc_med, mb_med = statistics.median(r.rate for r in mc), statistics.median(r.rate for r in mb)
        ratio = ratios[key] = mb_med / mc_med
        if key in targets:
            target = f"≥ {targets[key]}× — {verdict(ratio >= targets[key])}"
        elif key == "g" and "a" in ratios:
            served = min((r.served for r in mb if r.served is not None), default=0)
            ok = abs(ratio - ratios["a"]) <= BUSY_TOLERANCE and served >= workload.connections
            target = (f"within {BUSY_TOLERANCE} of (a), every connection served (fewest {served:,}) "
                      f"— {verdict(ok)}")
        else:
            target = "—"
        rows.append(f"| ({key}) {workload.label}, {workload.unit} | {fmt_rate(mc_med)} | {fmt_rate(mb_med)} "
                    f"| {ratio:.2f}× | {target} |")
        mc_user, mc_sys = statistics.median(r.user_us for r in mc), statistics.median(r.system_us for r in mc)
        mb_user, mb_sys = statistics.median(r.user_us for r in mb), statistics.median(r.system_us for r in mb)
        cpu_ratio = (mb_user + mb_sys) / (mc_user + mc_sys)
        per = "key" if workload.multiget > 1 else "op"
        cpu_target = (f"≤ {cpu_targets[key]}× — {verdict(cpu_ratio <= cpu_targets[key])}"
                      if key in cpu_targets else "—")
        cpu_rows.append(f"| ({key}) µs per {per} | {mc_user:.2f} + {mc_sys:.2f} | {mb_user:.2f} + {mb_sys:.2f} "
                        f"| {cpu_ratio:.2f}× | {cpu_target} |")
    if len(report.memory) == 2:
        mc, mb = report.memory["memcached"]["per_item"], report.memory["mbserver"]["per_item"]
        ratio = mb / mc
        rows.append(f"| (e) resident bytes per item, {args.items:,} items of 100 B | {mc:.0f} B | {mb:.0f} B "
                    f"| {ratio:.2f}× | ≤ {BYTES_PER_ITEM_TARGET}× — {verdict(ratio <= BYTES_PER_ITEM_TARGET)} |")
    if len(report.idle) == 2:
        mc, mb = report.idle["memcached"]["rss1"] / 2**20, report.idle["mbserver"]["rss1"] / 2**20
        rows.append(f"| (f) resident memory with {args.idle_connections:,} idle connections | {mc:.1f} MiB "
                    f"| {mb:.1f} MiB | {mb / mc:.2f}× | mbserver ≤ {IDLE_RSS_TARGET_MIB} MiB — "
                    f"{verdict(mb <= IDLE_RSS_TARGET_MIB)} |")

    command = shlex.join(["python", *sys.argv])
    out = [
        "# mbserver vs memcached",
        "",
        f"- command: `{command}`",
        f"- date: {started.strftime('%Y-%m-%d %H:%M:%S %Z')} ({elapsed:.0f} s)",
        f"- machine: {info['nproc']} CPUs (nproc), {info['cpu']}, {info['ram']} RAM, Linux {info['kernel']}; "
        f"load average {load[0]} at start, {load[1]} at end",
        f"- software: {info['memcached']}; {info['mbserver']} on {info['python']}; {info['memcaslap']}",
        f"- settings: `-m {args.memory_mib} -c {args.idle_connections + 1000}` for both servers"
        + (f", memcached `-t {args.memcached_threads}`" if args.memcached_threads is not None else "")
        + (f"; memcaslap `-T {args.client_threads} -c 16`, {args.protocol} protocol, {args.rounds} rounds × "
           f"{args.duration} s per server and workload, alternating memcached, mbserver, ..." if report.rounds else ""),
        "",
        "Throughput is the median of the rounds; ratio is mbserver / memcached "
        "(higher is better for throughput, lower for memory). See bench/README.md.",
        "",
        *rows,
        "",
    ]
    if len(cpu_rows) > 2:
        out += [
            "Server CPU per operation (per key for multi-get), user + system from /proc, median of the "
            "rounds; ratio is mbserver / memcached of the total (lower is better):",
            "",
            *cpu_rows,
            "",
        ]
    details = []
    for key, workload in THROUGHPUT.items():
        for kind in KINDS:
            rounds = report.rounds.get((key, kind))
            if not rounds:
                continue
            rates = ", ".join(fmt_rate(r.rate) for r in rounds)
            cpu = ", ".join(f"{r.user_us:.1f}+{r.system_us:.1f}" for r in rounds)
            served = [r.served for r in rounds if r.served is not None]
            hits = [r.hit_ratio for r in rounds if r.hit_ratio is not None]
            hit_text = f"server hit ratio {min(hits):.2%}–{max(hits):.2%}" if hits else "no gets"
            errors = sum(len(r.errors) for r in rounds)
            drift = max(abs(r.server_gets - r.client_gets) / max(r.client_gets, 1) for r in rounds)
            served_text = f"; connections served {', '.join(f'{n:,}' for n in served)}" if served else ""
            details.append(f"- ({key}) {kind}: {rates} {workload.unit}; CPU us/op {cpu}; {hit_text}; "
                           f"memcaslap errors {errors}; server vs memcaslap get count within {drift:.2%}"
                           f"{served_text}")
            for r in rounds:
                for line in r.errors[:3]:
                    details.append(f"  - memcaslap: `{line}`")
        mc, mb = report.rounds.get((key, "memcached")), report.rounds.get((key, "mbserver"))
        if mc and mb:
            # Each mbserver round against the memcached round just before it:
            # slow drifts in machine load cancel within a pair.
            paired = [b.rate / a.rate for a, b in zip(mc, mb)]
            details.append(f"- ({key}) paired ratios {', '.join(f'{p:.2f}' for p in paired)}; "
                           f"median {statistics.median(paired):.2f}×")
    for kind, m in report.memory.items():
        details.append(f"- (e) {kind}: RSS {m['rss0'] / 2**20:.1f} → {m['rss1'] / 2**20:.1f} MiB for "
                       f"{m['items']:,.0f} items (STAT bytes {m['bytes_stat']:,.0f}); loaded in {m['load_s']:.1f} s")
    for kind, m in report.idle.items():
        details.append(f"- (f) {kind}: RSS {m['rss0'] / 2**20:.1f} → {m['rss1'] / 2**20:.1f} MiB, "
                       f"{m['per_conn'] / 1024:.1f} KiB per idle connection (server counted {m['server_conns']:,.0f} open)")
    details += [f"- note: {n}" for n in report.notes]
    if details:
        out += ["## Details", "", *details, ""]
    return "\n".join(out)


def scan_logs(log_dir: Path, report: Report) -> None:
    for path in sorted(log_dir.glob("mbserver-*.log")):
        bad = [line for line in path.read_text(errors="replace").splitlines()
               if any(word in line for word in ("WARNING", "ERROR", "CRITICAL", "Traceback"))]
        if bad:
            report.notes.append(f"{path.name}: {len(bad)} warning/error lines, first: `{bad[0]}`")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_fd_limit(args.idle_connections + 1000)
    # SIGTERM unwinds like Ctrl-C, so the finally below stops both servers.
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.datetime.now().astimezone()
    clock = time.monotonic()
    load_start = "%.2f" % os.getloadavg()[0]
    info = machine()
    log_dir = Path(tempfile.mkdtemp(prefix="mbserver-bench-"))
    report = Report()
    running: list[servers.Server] = []
    log(f"bench: logs in {log_dir}; {args.rounds} rounds × {args.duration} s, workloads {args.workloads}")
    try:
        if set(args.workloads) & set(THROUGHPUT):
            run_throughput(args, report, log_dir, running)
        if set(args.workloads) & set("ef"):
            run_memory(args, report, log_dir, running)
    except KeyboardInterrupt:
        log("bench: interrupted; stopping servers")
        return 130
    except FAILURES as exc:
        log(f"bench: FAILED: {exc}")
        for server in running:
            log(f"--- {server.kind} log tail ({server.log_path}):\n{server.log_tail()}")
        return 1
    finally:
        for server in list(running):
            server.stop()
    scan_logs(log_dir, report)
    text = render(args, report, info, started, (load_start, "%.2f" % os.getloadavg()[0]), time.monotonic() - clock)
    print("\n" + text)
    args.output.write_text(text)
    log(f"bench: wrote {args.output}")
    if report.notes:
        log(f"bench: server logs kept in {log_dir}")
    else:
        shutil.rmtree(log_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

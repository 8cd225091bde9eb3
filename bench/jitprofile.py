"""Where mbserver's user time goes on PyPy, by Python function: perf and the JIT's own map.

`python bench/jitprofile.py [--workload a|b|c|d|g] [--protocol text] [--seconds 5]
[--server-python .venv-pypy/bin/python] [--ops FUNCTION]`

What lives here: starting mbserver on PyPy with PYPYLOG writing the
JIT's optimized traces (``jit-log-opt``) and where each was put in memory
(``jit-backend-addr``); driving one of run.py's workloads with memcaslap
while ``perf record`` samples the server's user time; and mapping each
sample that falls in JIT code to the Python function whose bytecode the
trace was running there (the trace's last ``debug_merge_point`` at or
before the sample's offset). Samples elsewhere are counted by shared
object: ``libpypy3.9-c.so`` is the interpreter and its runtime (dict
probes, the collector, system call wrappers) and has no symbols. It prints
microseconds of user time a request for each, the requests counted by
the server's own stats (its rate around the sampled seconds, times those
seconds; a multi-get's keys count one each, as in run.py's rows).
``--ops FUNCTION`` also lists that function's hottest trace operations,
with the ones before each (a sample lands on or just after the load it
waited for).

What does not: memcached (run.py), instruction counts (instructions.py),
CPython (py-spy reads CPython's frames; nothing reads PyPy's). Needs perf
(Debian's linux-perf) and a PyPy venv (scripts/pypy-venv.sh). The JIT's
code is only what PyPy compiled: the first seconds (--warmup) let it.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mcclient
import servers
from memaslap import Workload
from run import THROUGHPUT, raise_fd_limit

SAMPLE_HZ = 4000

# jit-backend-addr: where each loop and bridge went. The +offsets of its
# trace count from the block's start, which is its gc table.
_LOOP_ADDR = re.compile(
    r"^Loop (\d+) \(.*\) has address (0x[0-9a-f]+) to (0x[0-9a-f]+) \(bootstrap 0x[0-9a-f]+\)\n"
    r"\s+gc table: (0x[0-9a-f]+)",
    re.M,
)
_BRIDGE_ADDR = re.compile(
    r"^bridge out of Guard (0x[0-9a-f]+) has address (0x[0-9a-f]+) to (0x[0-9a-f]+)\n"
    r"\s+gc table: (0x[0-9a-f]+)",
    re.M,
)
# jit-log-opt: a trace's first line names it; then its operations.
_TRACE_START = re.compile(r"^\[[0-9a-f]+\] \{jit-log-opt-(?:loop|bridge)\n", re.M)
_TRACE_NAME = re.compile(r"# (?:Loop (\d+) |bridge out of Guard (0x[0-9a-f]+) )")
_MERGE_POINT = re.compile(r"debug_merge_point\(.*?'([^;']+);([^:']+):\d+-(\d+)")
_OPERATION = re.compile(r"^\+(\d+): (.*)$")


@dataclass(frozen=True)
class Operation:
    offset: int  # from the block's start
    where: str  # "function file.py:line" of the bytecode being run
    text: str


class CodeMap:
    """Which Python function each address of the JIT's code was running (from one PYPYLOG)."""

    def __init__(self, log_text: str):
        traces: dict[tuple[str, str], list[Operation]] = {}
        for start in _TRACE_START.finditer(log_text):
            body = log_text[start.end():log_text.find("jit-log-opt-", start.end())]
            name = _TRACE_NAME.match(body)
            if name is None:
                continue
            key = ("loop", name.group(1)) if name.group(1) else ("bridge", name.group(2))
            where, operations = "?", []
            for line in body.splitlines():
                merge = _MERGE_POINT.search(line)
                if merge:
                    function, path, line_no = merge.groups()
                    where = f"{function} {os.path.basename(path)}:{line_no}"
                    continue
                operation = _OPERATION.match(line)
                if operation:
                    operations.append(Operation(int(operation.group(1)), where, operation.group(2)))
            traces[key] = operations
        blocks = []
        for pattern, kind in ((_LOOP_ADDR, "loop"), (_BRIDGE_ADDR, "bridge")):
            for found in pattern.finditer(log_text):
                name, start, end, base = found.groups()
                if (kind, name) in traces:
                    blocks.append((int(start, 16), int(end, 16), int(base, 16), traces[(kind, name)]))
        blocks.sort(key=lambda block: block[0])
        self._starts = [block[0] for block in blocks]
        self._blocks = blocks

    def _locate(self, address: int) -> tuple[list[Operation], int] | None:
        """The trace whose code holds ``address``, and the index of its operation there."""
        index = bisect.bisect_right(self._starts, address) - 1
        if index < 0:
            return None
        start, end, base, operations = self._blocks[index]
        if not start <= address < end:
            return None
        offsets = [operation.offset for operation in operations]
        at = bisect.bisect_right(offsets, address - base) - 1
        return (operations, at) if at >= 0 else None

    def operation(self, address: int) -> Operation | None:
        """The trace operation whose code holds ``address``; None outside the JIT's code."""
        found = self._locate(address)
        return None if found is None else found[0][found[1]]

    def context(self, address: int, before: int = 3) -> list[Operation]:
        """The operation at ``address`` and the ones just before it in its trace."""
        found = self._locate(address)
        if found is None:
            return []
        operations, at = found
        return operations[max(0, at - before):at + 1]


def function_of(where: str) -> str:
    """ "get_record store.py:312" -> "get_record store.py" """
    return where.rsplit(":", 1)[0]


def requests_served(port: int) -> int:
    stats = mcclient.stats(port)
    return int(stats["cmd_get"]) + int(stats["cmd_set"])


def profile(args: argparse.Namespace, log_dir: Path) -> tuple[CodeMap, list[tuple[int, str]], int]:
    """Run the server and the load; the code map, the samples (address, object) and the requests."""
    jit_log = log_dir / "pypylog"
    os.environ["PYPYLOG"] = f"jit-log-opt,jit-backend-addr:{jit_log}"
    try:
        server = servers.start("mbserver", 1024, 6000, log_dir)
    finally:
        del os.environ["PYPYLOG"]
    try:
        workload = Workload(**{**THROUGHPUT[args.workload].__dict__, "protocol": args.protocol})
        config = log_dir / "memaslap.cfg"
        config.write_text(workload.config())
        subprocess.run(workload.argv(server.port, args.warmup, config, 1), capture_output=True,
                       timeout=args.warmup + 60, check=True)
        load = subprocess.Popen(workload.argv(server.port, args.seconds + 2, config, 1),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            before, started = requests_served(server.port), time.monotonic()
            data = log_dir / "perf.data"
            subprocess.run(["perf", "record", "-q", "-e", "cpu-clock:u", "-F", str(SAMPLE_HZ),
                            "-p", str(server.pid), "-o", str(data), "--", "sleep", str(args.seconds)],
                           capture_output=True, timeout=args.seconds + 60, check=True)
            # perf samples for exactly --seconds, but starting and stopping it
            # takes a while longer: count the requests of those seconds at
            # the rate of the whole window.
            rate = (requests_served(server.port) - before) / (time.monotonic() - started)
            served = round(rate * args.seconds)
        finally:
            load.wait(timeout=args.seconds + 60)
    finally:
        server.stop()
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,dso"],
                            capture_output=True, text=True, timeout=300, check=True).stdout
    samples = []
    for line in script.splitlines():
        fields = line.split(None, 1)
        if fields:
            samples.append((int(fields[0], 16), fields[1].strip("() ") if len(fields) > 1 else "?"))
    return CodeMap(jit_log.read_text()), samples, served


def report(code: CodeMap, samples: list[tuple[int, str]], served: int, ops_of: str | None,
           top: int) -> str:
    per_function: collections.Counter[str] = collections.Counter()
    per_operation: collections.Counter[Operation] = collections.Counter()
    address_of: dict[Operation, int] = {}  # an address each counted operation was sampled at
    for address, obj in samples:
        operation = code.operation(address)
        if operation is None:
            name = os.path.basename(obj)
            # perf names the JIT's code "[JIT] tid N", or after a perf-PID.map
            jit = "JIT" in name or (name.startswith("perf-") and name.endswith(".map"))
            per_function["JIT code not in the log" if jit else name] += 1
            continue
        function = function_of(operation.where)
        per_function[f"JIT: {function}"] += 1
        if ops_of and function.startswith(ops_of):
            per_operation[operation] += 1
            address_of.setdefault(operation, address)
    total = max(len(samples), 1)
    us = 1e6 / SAMPLE_HZ / max(served, 1)  # one sample's share of a request, in µs
    lines = [f"{len(samples):,} samples of user time at {SAMPLE_HZ} Hz, {served:,} requests served meanwhile",
             "µs a request  share  where"]
    for name, count in per_function.most_common(top):
        lines.append(f"{count * us:12.3f}  {100 * count / total:4.1f}%  {name}")
    for operation, count in per_operation.most_common(top):
        lines.append(f"\n{100 * count / total:4.1f}%  {operation.where}")
        lines += [f"        +{op.offset}: {op.text[:120]}" for op in code.context(address_of[operation])]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=sorted(THROUGHPUT), default="a", help="run.py's row (default a)")
    p.add_argument("--protocol", choices=("binary", "text"), default="binary")
    p.add_argument("--seconds", type=int, default=5, help="seconds sampled (default 5)")
    p.add_argument("--warmup", type=int, default=4, help="seconds of load first, for the JIT (default 4)")
    p.add_argument("--server-python", metavar="PYTHON", default=os.environ.get("MBSERVER_PYTHON"),
                   help="PyPy to run mbserver (default $MBSERVER_PYTHON)")
    p.add_argument("--top", type=int, default=15, help="lines of each list (default 15)")
    p.add_argument("--ops", metavar="FUNCTION", help="also list FUNCTION's hottest trace operations")
    args = p.parse_args(argv)
    if not args.server_python:
        p.error("give --server-python (a PyPy, e.g. .venv-pypy/bin/python) or set MBSERVER_PYTHON")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if shutil.which("perf") is None:
        print("jitprofile: needs perf (apt-get install linux-perf)", file=sys.stderr)
        return 2
    os.environ["MBSERVER_PYTHON"] = args.server_python  # servers.start runs mbserver with it
    raise_fd_limit(THROUGHPUT[args.workload].connections + 100)
    log_dir = Path(tempfile.mkdtemp(prefix="mbserver-jitprofile-"))
    try:
        code, samples, served = profile(args, log_dir)
    except (servers.ServerError, subprocess.SubprocessError, OSError) as error:
        print(f"jitprofile: FAILED: {error} (logs in {log_dir})", file=sys.stderr)
        return 1
    print(f"workload ({args.workload}) {args.protocol}, {args.seconds} s sampled after {args.warmup} s")
    print(report(code, samples, served, args.ops, args.top))
    shutil.rmtree(log_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

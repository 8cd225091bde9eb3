"""Drive one server with memcaslap for one round and parse what it printed.

What lives here: the workload definitions (memcaslap's config file and
flags), running memcaslap bounded in time, and turning its summary into
ops/s or keys/s. What does not: which server goes when (run.py).

What memcaslap (libmemcached-tools 1.x) really does, checked with a logging
proxy and against the servers' own STAT counters:

- Ops and TPS are (cmd_get + cmd_set) / run time, and cmd_get counts every
  *key*, so a multi-get of N keys adds N to cmd_get. Its `-d N` in binary
  mode is a pipeline of N plain GET (0x00) packets, opaque 0, no GETQ/GETKQ
  and no NOOP: each key costs the server a full request and a full reply.
  keys/s is therefore cmd_get / run time.
- With any sets in the mix there is no warm-up: gets only pick keys this
  connection has already stored (every set is a new key), so they hit.
  With no sets (our multi-get workloads) each connection first stores its
  whole key window (`-w`) before the clock starts -- and those sets still
  land in cmd_set and so in Ops and TPS. We never use TPS for multi-get.
- Its get_misses counter is blind in binary mode: a miss reply carries the
  body "Not found", which it reads as a value. Hit ratios therefore come
  from the server's own get_hits / get_misses, before and after each round.
- Run time is printed to 0.1 s; Ops / TPS gives it to full precision.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MEMASLAP = shutil.which("memcaslap") or shutil.which("memaslap") or "memcaslap"


@dataclass(frozen=True)
class Workload:
    """One memcaslap workload; `unit` says what its rate counts."""

    name: str
    label: str
    value_size: int = 100
    get_fraction: float = 0.9
    multiget: int = 1
    connections: int = 16
    window: str = "10k"  # keys per connection memcaslap cycles through
    protocol: str = "binary"  # or "text": memcaslap then runs without -B

    @property
    def unit(self) -> str:
        return "keys/s" if self.multiget > 1 else "ops/s"

    def config(self) -> str:
        # memcaslap's config format: "min max proportion" lines; keys must be >= 16 bytes.
        return (
            "key\n16 16 1\n"
            f"value\n{self.value_size} {self.value_size} 1\n"
            f"cmd\n0 {1 - self.get_fraction:.2f}\n1 {self.get_fraction:.2f}\n"
        )

    def argv(self, port: int, seconds: int, config: Path, threads: int) -> list[str]:
        if self.protocol not in ("binary", "text"):
            raise ValueError(self.protocol)
        argv = [
            MEMASLAP, "-s", f"127.0.0.1:{port}", "-T", str(threads), "-c", str(self.connections),
            "-t", f"{seconds}s", "-w", self.window, "-F", str(config),
        ]
        if self.protocol == "binary":
            argv.append("-B")
        if self.multiget > 1:
            argv += ["-d", str(self.multiget)]
        return argv


@dataclass(frozen=True)
class Result:
    rate: float  # ops/s, or keys/s for a multi-get workload
    seconds: float
    cmd_get: int
    cmd_set: int
    errors: list[str]  # what memcaslap printed on stderr or as a failure


SUMMARY = re.compile(r"Run time: ([\d.]+)s Ops: (\d+) TPS: (\d+)")
COUNTER = re.compile(r"^(cmd_get|cmd_set): (\d+)$", re.M)


class MemaslapError(Exception):
    pass


def run(workload: Workload, port: int, seconds: int, config: Path, threads: int) -> Result:
    argv = workload.argv(port, seconds, config, threads)
    # Warm-up (multi-get) and memcaslap's own 1 s wind-down come on top of -t.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL)
    summary = SUMMARY.search(done.stdout)
    counters = dict((k, int(v)) for k, v in COUNTER.findall(done.stdout))
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    errors += [line for line in done.stdout.splitlines() if "didn't set success" in line]
    if done.returncode != 0 or not summary or set(counters) != {"cmd_get", "cmd_set"}:
        raise MemaslapError(
            f"{' '.join(argv)} exited {done.returncode}\nstdout tail: {done.stdout[-500:]}\nstderr tail: {done.stderr[-500:]}"
        )
    ops, tps = int(summary.group(2)), int(summary.group(3))
    exact_seconds = ops / tps if tps else float(summary.group(1))
    if workload.multiget > 1:
        rate = counters["cmd_get"] / exact_seconds
    else:
        rate = float(tps)
    return Result(rate, exact_seconds, counters["cmd_get"], counters["cmd_set"], errors)

"""Instructions per request on each request path, counted by callgrind.

`python bench/instructions.py [--requests N] [--paths SUBSTRING]`

What lives here: for each path of `bench/paths.py` (a lone binary GET, a
lone SET, ...), two runs under `valgrind --tool=callgrind` of a child that
serves N and then 2N requests through the same scripted-socket harness;
the difference of the two instruction totals, divided by N, is what one
request costs, with interpreter start-up and set-up cancelled out. Unlike
CPU time it hardly moves when the machine is busy, so a change of a few
percent on a path shows. User-space instructions only (system calls are not
counted, and paths.py makes none).

What does not: timing (see `bench/paths.py`), or anything about the server
against memcached (`bench/run.py`). Needs valgrind; runs the real
interpreter (`sys.executable`, resolved past pyenv's shim) with
PYTHONHASHSEED=0 so the two runs hash alike.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The child: serve `count` reads of path number `index` (see paths.paths) once.
_CHILD = """
import sys
sys.path.insert(0, {bench!r})
import paths
from mbserver.commands import Commands
from mbserver.config import Settings
from mbserver.connection import Connection
from mbserver.rwlock import RWLock
from mbserver.stats import Stats
from mbserver.store import Mode, Store
store = Store(1 << 30)
keys = [b"key-%012d" % i for i in range(1)]
for key in keys:
    store.store(Mode.SET, key, paths.VALUE)
stats = Stats()
commands = Commands(store, RWLock(), stats, Settings())
name, reads, per_read = paths.paths(keys)[{index}]
Connection(paths.ScriptedSocket(reads, {count}), "bench", commands, stats, Settings()).serve()
"""


def real_python() -> str:
    """The interpreter binary itself: callgrind must not trace a shell shim."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def instructions(index: int, count: int) -> int:
    """Total user-space instructions of a child serving `count` reads of path `index`."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        code = _CHILD.format(bench=str(HERE), index=index, count=count)
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(HERE.parent))
        result = subprocess.run(
            [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                real_python(), "-c", code,
            ],
            env=env, capture_output=True, text=True, timeout=900,
        )
        if result.returncode != 0:
            raise RuntimeError(f"callgrind failed:\n{result.stderr[-2000:]}")
        match = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError("no summary line in callgrind's output")
        return int(match.group(1))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/instructions.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--requests", type=int, default=4000, help="N, requests of the shorter run (default 4,000)"
    )
    parser.add_argument(
        "--paths", default="", help="only the paths whose name contains this text"
    )
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed")
    sys.path.insert(0, str(HERE))
    import paths

    names = [(i, name, per_read) for i, (name, _, per_read) in enumerate(paths.paths([b"k"]))]
    print(f"python {sys.version.split()[0]}, callgrind, ({args.requests:,} x 2 - {args.requests:,}) reads")
    for index, name, per_read in names:
        if args.paths not in name:
            continue
        reads = max(1, args.requests // per_read)
        extra = instructions(index, 2 * reads) - instructions(index, reads)
        print(f"  {name:36s} {extra / (reads * per_read):9,.0f} instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

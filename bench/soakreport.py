"""The soak benchmark's verdict on memory, and its report as text.

What lives here, with no I/O but ``print``: ``memory_verdict``, which turns
the per-second RSS samples into the figures the report gives and says
whether memory stayed flat; ``print_report``, which renders the report
dict that soak.py builds (and writes as JSON with ``--json``).

What does not: sampling, the workload, judging replies (soak.py,
soakmodel.py).
"""

from __future__ import annotations

import statistics

WARMUP_SHARE = 0.2  # warm-up lasts at least this share of the run...
WINDOW_SHARE = 0.05  # ...and each RSS figure is the median over this share of the run
MIN_WINDOW = 3.0  # seconds
FLAT = 0.05


def memory_verdict(samples: list[tuple[float, int]], elapsed: float, evicted_at: float | None) -> tuple[dict, str]:
    """RSS figures from ``(seconds into the run, RSS)`` samples, and why memory failed ("" when it did not).

    Warm-up ends at the later of WARMUP_SHARE of the run and the first
    eviction (``evicted_at``; None: there was none). Each figure is the
    median of the samples in a window of WINDOW_SHARE of the run: just after
    warm-up (the reference), around the middle and at the end; memory is
    flat when the middle and the end are within FLAT of the reference.
    Medians, because per-second samples swing by a few percent as large
    values come and go, without a trend; a leak still moves the medians.
    """
    if not samples:
        return {}, ""
    warmup = max(WARMUP_SHARE * elapsed, evicted_at if evicted_at is not None else 0.0)
    width = max(WINDOW_SHARE * elapsed, MIN_WINDOW)

    def median(start: float, end: float) -> int:
        inside = [rss for at, rss in samples if start <= at <= end]
        return int(statistics.median(inside)) if inside else min(samples, key=lambda s: abs(s[0] - start))[1]

    after = [rss for at, rss in samples if at >= warmup] or [samples[-1][1]]
    reference = median(warmup, warmup + width)
    memory = {
        "start": samples[0][1], "memory_limit_reached_at": evicted_at, "warmup_end_at": round(warmup, 1),
        "after_warmup": reference, "middle": median(elapsed / 2 - width / 2, elapsed / 2 + width / 2),
        "end": median(elapsed - width, elapsed), "window": round(width, 1),
        "min_after_warmup": min(after), "max_after_warmup": max(after),
    }
    middle, end = memory["middle"] / reference - 1, memory["end"] / reference - 1
    memory.update(middle_change=round(middle, 4), end_change=round(end, 4))
    if evicted_at is None:
        return memory, "memory: the memory limit was never reached (no evictions), so flatness means nothing"
    if evicted_at > elapsed / 2:
        return memory, f"memory: the memory limit was reached only at {evicted_at:.0f} s of {elapsed:.0f} s"
    if abs(middle) > FLAT or abs(end) > FLAT:
        return memory, (f"memory: RSS not flat after warm-up: middle {middle:+.1%}, end {end:+.1%} against "
                        f"{mib(reference)} just after warm-up (medians over {width:.0f} s)")
    return memory, ""


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def print_report(r: dict) -> None:
    out = print
    out(f"soak of {r['target']}: {r['duration']} s, {r['connections']} clients, -m {r['memory_mib']}, "
        f"seed {r['seed']}, {r['keys_per_client']} keys per client + {r['shared_keys']} shared")
    out(f"operations: {r['operations']:,} ({r['ops_per_second']:,}/s), {r['pipelines']:,} of the steps pipelines")
    width = max((len(c) for c in r["commands"]), default=10)
    names = list(r["commands"])
    for i in range(0, len(names), 3):
        out("  " + "   ".join(f"{n:<{width}} {r['commands'][n]:>9,}" for n in names[i:i + 3]))
    if r["commands_not_run"]:
        out(f"  never ran: {', '.join(r['commands_not_run'])}")
    out("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in r["outcomes"].items()))
    out(f"wrong replies: {r['wrong_replies']}")
    for sample in r["wrong_samples"]:
        out(f"  {sample}")
    out("errors: " + (", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "none"))
    for sample in r["error_samples"][:10]:
        out(f"  {sample}")
    out(f"connections opened: {r['connections_opened']:,} (server counted {r['server_connections']}), "
        f"peak {r['peak_open']} open, {r['slow_connections']:,} slow readers; closed: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(r["closes"].items())))
    out(f"evictions: {r['evictions']}, items at the end: {r['items_end']}, flushes at "
        f"{', '.join(f'{at} s ({name})' for at, name in r['flushes']) or 'none'}")
    m = r["rss"]
    if "end" in m:
        reached = m["memory_limit_reached_at"]
        out(f"RSS: baseline {mib(m['baseline'])}, first second {mib(m['start'])}; warm-up ended at "
            f"{m['warmup_end_at']} s (memory limit reached {'never' if reached is None else f'at {reached:.0f} s'})")
        out(f"  medians over {m['window']} s: after warm-up {mib(m['after_warmup'])}, middle {mib(m['middle'])} "
            f"({m['middle_change']:+.1%}), end {mib(m['end'])} ({m['end_change']:+.1%}); "
            f"each second after warm-up {mib(m['min_after_warmup'])} to {mib(m['max_after_warmup'])}")
    f = r["fds"]
    out(f"descriptors: baseline {f['baseline']}, peak {f['peak']}, after every soak connection closed {f['end']}")
    for leak in f["leaked"]:
        out(f"  {leak}")
    out("result: " + ("PASS" if not r["failures"] else "FAIL\n  " + "\n  ".join(r["failures"])))

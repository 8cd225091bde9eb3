"""bench/soakreport.py: the soak's verdict on memory, from per-second RSS samples (no process needed)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
try:
    from soakreport import memory_verdict
finally:
    sys.path.remove(str(BENCH))

MIB = 1 << 20


def run(rss_at, seconds: int = 600, evicted_at: float | None = 3.0):
    """A run of ``seconds`` sampled each second with ``rss_at(t)`` MiB."""
    return memory_verdict([(t, int(rss_at(t) * MIB)) for t in range(1, seconds + 1)], seconds, evicted_at)


def swinging(t: float) -> float:
    """Warming up for 30 s, then 180 MiB swinging by +-5% with no trend, as mbserver's did."""
    return 60 + 4 * t if t < 30 else 180 * (1 + 0.05 * ((t * 7) % 11 - 5) / 5)


def test_a_swing_without_a_trend_is_flat():
    memory, failure = run(swinging)
    assert failure == ""
    assert memory["min_after_warmup"] < 0.96 * memory["after_warmup"] < memory["max_after_warmup"] / 1.04
    assert abs(memory["end_change"]) <= 0.05


def test_growth_is_not_flat():
    memory, failure = run(lambda t: swinging(t) * (1 + 0.15 * t / 600))
    assert "not flat" in failure
    assert memory["end_change"] > 0.05


def test_growth_that_stops_by_the_middle_still_shows():
    memory, failure = run(lambda t: swinging(t) * (1 + 0.2 * min(t, 300) / 300))
    assert "middle +" in failure


def test_a_fall_at_the_end_is_not_flat_either():
    _, failure = run(lambda t: swinging(t) * (0.8 if t > 550 else 1))
    assert "end -" in failure


def test_warm_up_lasts_until_the_first_eviction_if_that_is_later():
    memory, failure = run(swinging, evicted_at=200)
    assert memory["warmup_end_at"] == 200 and failure == ""
    memory, _ = run(swinging, evicted_at=2)
    assert memory["warmup_end_at"] == 120


def test_without_evictions_or_with_late_ones_flatness_is_not_judged():
    assert "never reached" in run(swinging, evicted_at=None)[1]
    assert "only at 400 s" in run(swinging, evicted_at=400)[1]


def test_a_short_run_uses_windows_of_a_few_seconds():
    memory, _ = run(lambda t: 100, seconds=30)
    assert memory["window"] == 3.0 and memory["end"] == 100 * MIB


def test_no_samples_no_figures():
    assert memory_verdict([], 600, 3.0) == ({}, "")

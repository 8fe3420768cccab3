"""The benchmarks' interleaved timing: order, rounds, and a drifting machine's ratios."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common


class DriftingClock:
    """A fake perf_counter; each row's work costs its base seconds × the machine's slowdown."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slowdown = 1.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds * self.slowdown


def test_rows_run_interleaved_with_before_each(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = DriftingClock()
    monkeypatch.setattr(_common.time, "perf_counter", clock)
    calls: list[str] = []
    times = _common.interleaved(
        {
            "a": lambda: (calls.append("a"), clock.work(1.0)),
            "b": lambda: (calls.append("b"), clock.work(2.0)),
        },
        3,
        before=lambda name: calls.append(f"before {name}"),
    )
    assert calls == ["before a", "a", "before b", "b"] * 3
    assert times == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}


def test_a_machine_slowing_between_rounds_keeps_the_ratio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The machine slows 1×, 3×, 1.5× from round to round: B/A stays 2 in every round.

    Timed in blocks (all A, then all B) the same drift would read any ratio at all.
    """
    clock = DriftingClock()
    monkeypatch.setattr(_common.time, "perf_counter", clock)
    slowdowns = iter([1.0, 3.0, 1.5])

    def a() -> None:
        clock.slowdown = next(slowdowns)  # a new round starts with A
        clock.work(1.0)

    times = _common.interleaved({"a": a, "b": lambda: clock.work(2.0)}, 3)
    assert times["a"] == [1.0, 3.0, 1.5]
    assert _common.ratio_summary(times, "b", "a") == (2.0, 2.0, 2.0)
    assert _common.median(times["a"]) == 1.5


def test_ratio_summary_median_and_range_by_hand() -> None:
    times = {"x": [2.0, 3.0, 8.0, 5.0], "base": [1.0, 2.0, 4.0, 4.0]}
    # per-round ratios 2.0, 1.5, 2.0, 1.25 → sorted 1.25, 1.5, 2.0, 2.0: median 1.75
    assert _common.ratio_summary(times, "x", "base") == (1.75, 1.25, 2.0)
    assert _common.format_ratio((1.75, 1.25, 2.0)) == "1.75 [1.25–2.00]"


def test_rounds_below_one_is_refused() -> None:
    with pytest.raises(SystemExit, match="--rounds must be ≥ 1; got 0"):
        _common.interleaved({"a": lambda: None}, 0)

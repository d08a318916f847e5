"""The adaptive threshold acts: a plateau stops an adaptive session only once the bar stands at its floor."""

from __future__ import annotations

from emage_agent.core.planning import HistoryEntry
from emage_agent.strategy import BudgetState, SelectorConfig, should_stop


def flat(scores: list[float]) -> list[HistoryEntry]:
    """A score trace as the loop's history: the first image, then repairs that did not help."""
    entries = [HistoryEntry(step=1, tool="generate", score_after=scores[0])]
    entries += [
        HistoryEntry(step=i + 1, tool="canny_edit", score_before=scores[i - 1], score_after=s)
        for i, s in enumerate(scores[1:], start=1)
    ]
    return entries


def walk(config: SelectorConfig, score: float, limit: int = 20) -> list[tuple[int, str, float | None]]:
    """Stop decisions along a plateau at ``score``, until the first one that stops."""
    seen = []
    for n in range(1, limit):
        stop = should_stop(score, flat([score] * n), config, BudgetState(iteration=n - 1, max_iterations=100))
        seen.append((n, stop.reason, stop.threshold))
        if stop.stop:
            break
    return seen


def test_a_plateau_waits_for_the_floor_and_the_lowered_bar_then_accepts() -> None:
    on = SelectorConfig(threshold=0.8, adaptive_threshold=True, threshold_relax_per_iteration=0.0)
    trail = walk(on, 0.63)
    reasons = [r for _, r, _ in trail]
    assert "plateau" not in reasons  # the plain plateau stop (after 4 flat scores) did not fire early
    assert reasons[-1] == "adaptive_threshold"
    assert trail[-1][2] == 0.6  # the bar came down to its floor, and 0.63 passes it
    bars = [t for _, _, t in trail]
    assert bars == sorted(bars, reverse=True) and len(set(bars)) >= 4  # lowered step by step: 0.8, 0.75, ...


def test_without_the_adaptive_threshold_a_plateau_stops_as_before() -> None:
    off = SelectorConfig(threshold=0.8, threshold_relax_per_iteration=0.0)
    trail = walk(off, 0.63)
    assert trail[-1][1] == "plateau" and trail[-1][0] == 4


def test_at_the_floor_a_plateau_below_it_stops() -> None:
    on = SelectorConfig(threshold=0.8, adaptive_threshold=True, threshold_relax_per_iteration=0.0)
    trail = walk(on, 0.4)
    assert trail[-1][1] == "plateau" and trail[-1][2] == 0.6

"""The adaptive stop threshold: lowered, step by step down to a floor, while the scores stand still.

Opt-in (``--adaptive-threshold``). Without it the user's threshold is exact. With it, a session whose
score has stopped rising may stop at a lower bar, and says so (``adaptive_threshold``), never as a
plain ``threshold`` success. The threshold is derived from the score trace alone, so a resumed
session finds the same value and every adjustment can be shown next to the step it followed.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from emage_agent.strategy.config import TOL, SelectorConfig


class ThresholdAdjustment(BaseModel):
    """After the score at ``after_score`` (index into the trace) the bar moved from ``old`` to ``new``."""

    after_score: int
    old: float
    new: float


class ThresholdTrace(BaseModel):
    threshold: float
    adjustments: list[ThresholdAdjustment] = Field(default_factory=list)


def adaptive_threshold(scores: Sequence[float], config: SelectorConfig) -> ThresholdTrace:
    """Walk the trace; each score that ends ``adaptive_window`` scores without a gain > ``plateau_epsilon``
    over the best before them lowers the bar by ``adaptive_step``, never below ``adaptive_floor``.
    """
    threshold = config.threshold
    floor = min(config.adaptive_floor, config.threshold)
    win = config.adaptive_window
    adjustments: list[ThresholdAdjustment] = []
    for i in range(win, len(scores)):
        window, before = scores[i - win + 1 : i + 1], scores[: i - win + 1]
        if max(window) - max(before) > config.plateau_epsilon + TOL or threshold <= floor + TOL:
            continue
        new = round(max(floor, threshold - config.adaptive_step), 6)
        adjustments.append(ThresholdAdjustment(after_score=i, old=threshold, new=new))
        threshold = new
    return ThresholdTrace(threshold=threshold, adjustments=adjustments)


def plateau_may_stop(threshold: float, config: SelectorConfig) -> bool:
    """A plateau ends the session only once the adaptive bar stands at its floor.

    Why: the user allowed the bar to come down to the floor; stopping on a plateau before it got there
    would end the session as ``plateau`` at a score the lowered bar might still have accepted.
    Without the adaptive threshold a plateau stops at once, as before.
    """
    if not config.adaptive_threshold:
        return True
    return threshold <= min(config.adaptive_floor, config.threshold) + TOL

"""The strategy: the weighted selector, its knobs and budget, and the veto.

Pure: data in, decision out. Nothing here does I/O apart from reading the cached tool contracts,
so the loop records every decision as is and the tests drive it by tables.
"""

from emage_agent.strategy.config import BudgetState, SelectorConfig
from emage_agent.strategy.selector import StopDecision, fallback_call, recommend, should_stop
from emage_agent.strategy.veto import review

__all__ = [
    "BudgetState",
    "SelectorConfig",
    "StopDecision",
    "fallback_call",
    "recommend",
    "review",
    "should_stop",
]

"""The Gemini layer: the only package in EMage that imports ``google.genai``.

The rest of the project passes PNG bytes and plain data and gets back the models of
``emage_agent.core.evaluation`` and ``emage_agent.core.planning``; no SDK type crosses this boundary.
"""

from emage_agent.vlm.gemini.client import CallRecord, GeminiClient
from emage_agent.vlm.gemini.evaluator import Evaluator
from emage_agent.vlm.gemini.planner import Planner
from emage_agent.vlm.gemini.rewriter import Rewrite, Rewriter, offline_rewrite

__all__ = [
    "CallRecord",
    "Evaluator",
    "GeminiClient",
    "Planner",
    "Rewrite",
    "Rewriter",
    "offline_rewrite",
]

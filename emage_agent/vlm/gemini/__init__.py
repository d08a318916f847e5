"""The Gemini transport: the only package in EMage that imports ``google.genai``.

``GeminiClient`` implements the request interface of ``vlm.transport``; the roles above it (evaluator,
planner, rewriter) are the shared ones. No SDK type crosses this boundary.
"""

from emage_agent.vlm.evaluator import Evaluator
from emage_agent.vlm.gemini.client import CallRecord, GeminiClient
from emage_agent.vlm.planner import Planner
from emage_agent.vlm.rewriter import Rewriter
from emage_agent.vlm.rewriting import Rewrite, offline_rewrite

__all__ = [
    "CallRecord",
    "Evaluator",
    "GeminiClient",
    "Planner",
    "Rewrite",
    "Rewriter",
    "offline_rewrite",
]
